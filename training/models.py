"""LightGBM heads, their calibration, baselines and held-out metrics: what task fitters build on (no I/O).

A task's model is a ``ModelBundle`` of LightGBM heads (``training.tasks.<task>`` says which).

Binary heads: class imbalance is offset with ``scale_pos_weight = negatives / positives``, early
stopping watches AUC on the validation cutoff, and the validation cutoff then calibrates the
probabilities (isotonic with >= 1,000 rows and >= 50 of each class, else Platt), which undoes the
reweighting. Categorical features are pandas ``category`` columns handled natively by LightGBM.
Every binary head is compared on the held-out cutoff with the recency/frequency heuristic, the
logistic baseline and, on generated worlds, the oracle.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import lightgbm as lgb
import numpy as np
import optuna
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

from training import metrics as m
from training.baselines import fit_logistic, fit_rf_heuristic, rf_features
from training.config import LightGBMParams, TrainConfig
from training.datasets import Split, TaskDataset
from training.model_bundle import ModelBundle

ISOTONIC_MIN_ROWS = 1_000
ISOTONIC_MIN_CLASS = 50
METRIC_COLUMNS = ["target", "model", "metric", "value"]


@dataclass
class BinaryEvaluation:
    """Held-out predictions of one binary target, kept for plots."""

    target: str
    y: np.ndarray
    predictions: dict[str, np.ndarray]  # model name -> probability (model, baselines, oracle)


@dataclass
class FittedTask:
    """Everything a run reports about one task: the bundle, the held-out metrics and plot inputs."""

    task: str
    bundle: ModelBundle
    metrics: pd.DataFrame  # long: target, model, metric, value
    evaluations: list[BinaryEvaluation]
    primary: str
    params: dict[str, object]
    notes: list[str] = field(default_factory=list)

    def metric(self, target: str, model: str, metric: str) -> float:
        rows = self.metrics
        hit = rows.loc[(rows["target"] == target) & (rows["model"] == model) & (rows["metric"] == metric)]
        return float(hit["value"].iloc[0]) if len(hit) else float("nan")

    def headline(self) -> dict[str, float]:
        """AUC of the model and baselines on the held-out cutoff (means over the targets of a task with
        several binary heads)."""
        targets = [evaluation.target for evaluation in self.evaluations]
        rows = self.metrics.loc[self.metrics["target"].isin(targets) & (self.metrics["metric"] == "auc")]
        return rows.groupby("model")["value"].mean().to_dict()

    def beats_baselines(self) -> bool:
        """Model AUC strictly above every available baseline AUC on the held-out cutoff."""
        scores = self.headline()
        model = scores.get("model", float("nan"))
        baselines = [
            scores[name] for name in ("rf_heuristic", "logistic") if np.isfinite(scores.get(name, np.nan))
        ]
        return bool(np.isfinite(model) and baselines and all(model > score for score in baselines))


def metric_rows(target: str, model: str, values: Mapping[str, float]) -> list[tuple[str, str, str, float]]:
    return [(target, model, metric, float(value)) for metric, value in values.items()]


def fit_booster(
    params: LightGBMParams,
    objective: Mapping[str, object],
    train: tuple[pd.DataFrame, np.ndarray],
    valid: tuple[pd.DataFrame, np.ndarray],
    seed: int,
) -> lgb.Booster:
    """Train with early stopping on ``valid``; the returned booster holds only the best iteration."""
    settings = {**params.booster_params(), **objective, "seed": seed, "deterministic": True}
    train_set = lgb.Dataset(train[0], label=train[1], free_raw_data=True)
    valid_set = lgb.Dataset(valid[0], label=valid[1], reference=train_set)
    booster = lgb.train(
        settings,
        train_set,
        num_boost_round=params.num_boost_round,
        valid_sets=[valid_set],
        callbacks=[lgb.early_stopping(params.early_stopping_rounds, first_metric_only=True, verbose=False)],
    )
    best = booster.best_iteration or booster.current_iteration()
    return lgb.Booster(model_str=booster.model_to_string(num_iteration=best))


def binary_objective(y: np.ndarray) -> dict[str, object]:
    positives = float(np.sum(y))
    negatives = float(len(y) - positives)
    return {"objective": "binary", "metric": "auc", "scale_pos_weight": negatives / max(positives, 1.0)}


def fit_calibrator(raw: np.ndarray, y: np.ndarray) -> dict[str, object]:
    """Isotonic (as JSON-able breakpoints) with enough data of both classes, else Platt scaling."""
    positives = int(np.sum(y))
    if len(y) >= ISOTONIC_MIN_ROWS and min(positives, len(y) - positives) >= ISOTONIC_MIN_CLASS:
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(raw, y)
        return {"kind": "isotonic", "x": iso.X_thresholds_.tolist(), "y": iso.y_thresholds_.tolist()}
    clipped = np.clip(raw, 1e-7, 1 - 1e-7)
    logit = np.log(clipped / (1 - clipped)).reshape(-1, 1)
    platt = LogisticRegression(C=1e6, max_iter=1_000).fit(logit, y)
    return {"kind": "platt", "a": float(platt.coef_[0, 0]), "b": float(platt.intercept_[0])}


def tune_params(
    base: LightGBMParams,
    train: tuple[pd.DataFrame, np.ndarray],
    valid: tuple[pd.DataFrame, np.ndarray],
    n_trials: int,
    seed: int,
) -> tuple[LightGBMParams, float]:
    """Optuna search (TPE, seeded) of the tree shape, maximising validation AUC of a binary target."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    objective = binary_objective(train[1])

    def trial_auc(trial: optuna.Trial) -> float:
        params = base.model_copy(
            update={
                "num_leaves": trial.suggest_int("num_leaves", 8, 128, log=True),
                "learning_rate": trial.suggest_float("learning_rate", 0.02, 0.2, log=True),
                "min_data_in_leaf": trial.suggest_int("min_data_in_leaf", 10, 500, log=True),
                "feature_fraction": trial.suggest_float("feature_fraction", 0.5, 1.0),
                "lambda_l2": trial.suggest_float("lambda_l2", 1e-3, 10.0, log=True),
            }
        )
        booster = fit_booster(params, objective, train, valid, seed)
        return m.auc(valid[1], booster.predict(valid[0], num_threads=base.num_threads))

    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed))
    study.optimize(trial_auc, n_trials=n_trials)
    return base.model_copy(update=study.best_params), float(study.best_value)


@dataclass
class BinaryHead:
    """A trained binary head and its held-out evaluation."""

    spec: dict[str, object]
    booster: lgb.Booster
    evaluation: BinaryEvaluation
    metrics: list[tuple[str, str, str, float]]


def fit_binary_head(
    dataset: TaskDataset,
    target: str,
    output: str,
    params: LightGBMParams,
    config: TrainConfig,
) -> BinaryHead:
    """LightGBM + calibration + both baselines (+ oracle when given) for one binary label column."""

    def part(split: Split) -> tuple[pd.DataFrame, np.ndarray]:
        return split.X, split.labels[target].to_numpy().astype(np.int64)

    train, valid, test = part(dataset.train), part(dataset.valid), part(dataset.test)
    booster = fit_booster(params, binary_objective(train[1]), train, valid, config.seed)
    calibrator = fit_calibrator(booster.predict(valid[0], num_threads=params.num_threads), valid[1])
    spec = {
        "name": target,
        "kind": "binary",
        "output": output,
        "calibrator": calibrator,
        "prior": float(train[1].mean()),
    }
    bundle = ModelBundle({**base_spec(dataset, params), "heads": [spec]}, {target: booster})
    predictions = {"model": bundle.probability(target, bundle.prepare(test[0]))}
    recency, frequency = rf_features(dataset.feature_names, config.recency_feature, config.frequency_feature)
    for baseline in (
        fit_rf_heuristic(train[0], train[1], recency, frequency, config.baseline_max_rows, config.seed),
        fit_logistic(train[0], train[1], config.baseline_max_rows, config.seed),
    ):
        if baseline is not None:
            predictions[baseline.name] = baseline.predict_proba(test[0])
    oracle = dataset.test.oracle
    if oracle is not None and target in oracle and oracle[target].notna().all():
        predictions["oracle"] = oracle[target].to_numpy(dtype=float)
    scores = {name: m.binary_metrics(test[1], probability) for name, probability in predictions.items()}
    results = [row for name, values in scores.items() for row in metric_rows(target, name, values)]
    extra: dict[str, float] = {"best_iteration": booster.current_iteration()}
    if "oracle" in scores:
        extra["auc_ratio_to_oracle"] = m.with_oracle(scores["model"], scores["oracle"])["auc_ratio_to_oracle"]
    results += metric_rows(target, "model", extra)
    return BinaryHead(spec, booster, BinaryEvaluation(target, test[1], predictions), results)


def tuned(dataset: TaskDataset, target: str, config: TrainConfig) -> tuple[LightGBMParams, dict[str, object]]:
    if config.tune_trials == 0:
        return config.lightgbm, {}
    train = (dataset.train.X, dataset.train.labels[target].to_numpy())
    valid = (dataset.valid.X, dataset.valid.labels[target].to_numpy())
    params, best = tune_params(config.lightgbm, train, valid, config.tune_trials, config.seed)
    return params, {"tune_trials": config.tune_trials, "tune_target": target, "tune_valid_auc": best}


def base_spec(dataset: TaskDataset, params: LightGBMParams) -> dict[str, object]:
    return {
        "task": dataset.task,
        "features": list(dataset.feature_names),
        "categorical_levels": {name: list(levels) for name, levels in dataset.categorical_levels.items()},
        "horizon_days": dataset.plan.horizon_days,
        "as_of": dataset.plan.as_of.isoformat(),
        "num_threads": params.num_threads,
    }


def params_record(params: LightGBMParams, extra: Mapping[str, object]) -> dict[str, object]:
    return {**{f"lgbm_{key}": value for key, value in params.model_dump().items()}, **extra}


def fit_binary_heads(
    dataset: TaskDataset,
    targets: Mapping[str, str],
    config: TrainConfig,
    head_extra: Mapping[str, Mapping[str, object]] | None = None,
    spec_extra: Mapping[str, object] | None = None,
    notes: Sequence[str] = (),
    tuning: tuple[LightGBMParams, Mapping[str, object]] | None = None,
) -> FittedTask:
    """One calibrated binary head per ``label column -> output column`` of ``targets`` (tuned, when
    asked, on the target with the most training positives); the primary target is the one with the
    most held-out positives. ``tuning``: parameters already chosen (and their record) instead."""
    if tuning is None:
        richest = max(targets, key=lambda column: int(dataset.train.labels[column].sum()))
        tuning = tuned(dataset, richest, config)
    params, tuning_record = tuning
    heads, boosters, results, evaluations = [], {}, [], []
    for column, output in targets.items():
        head = fit_binary_head(dataset, column, output, params, config)
        heads.append({**head.spec, **(head_extra or {}).get(column, {})})
        boosters[column] = head.booster
        results += head.metrics
        evaluations.append(head.evaluation)
    spec = {**base_spec(dataset, params), "heads": heads, **(spec_extra or {})}
    return FittedTask(
        task=dataset.task,
        bundle=ModelBundle(spec, boosters),
        metrics=pd.DataFrame(results, columns=METRIC_COLUMNS),
        evaluations=evaluations,
        primary=max(targets, key=lambda column: int(dataset.test.labels[column].sum())),
        params=params_record(params, tuning_record),
        notes=list(notes),
    )


def enough_rows(dataset: TaskDataset, target: str, minimum: int) -> bool:
    """Whether ``target`` has ``minimum`` positive and negative rows in training and validation."""
    for split in (dataset.train, dataset.valid):
        y = split.labels[target].to_numpy()
        if min(int(y.sum()), int(len(y) - y.sum())) < minimum:
            return False
    return True
