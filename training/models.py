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
class RegressionEvaluation:
    """Held-out predictions of one continuous target (e.g. spend), kept for plots."""

    target: str
    y: np.ndarray
    predictions: dict[str, np.ndarray]  # model name -> prediction (model, baselines)


@dataclass
class UpliftEvaluation:
    """Held-out rows of one action and the control group, kept for plots."""

    target: str  # the action
    y: np.ndarray
    treated: np.ndarray
    scores: dict[str, np.ndarray]  # ranking name -> score (model, risk targeting, oracle)


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
    gate_metric: str = "auc"
    """The ranking metric candidates are chosen and gated on: ``auc`` (binary heads) or ``gini``
    (normalised Gini of a continuous target); its bootstrap intervals are ``<metric>_vs_<name>_*``."""
    regressions: list[RegressionEvaluation] = field(default_factory=list)
    uplift: list[UpliftEvaluation] = field(default_factory=list)
    """Per action of an uplift task (its metrics' targets: Qini per action)."""

    @property
    def targets(self) -> list[str]:
        """The targets the gate metric is computed on (binary heads, continuous targets, or actions)."""
        if self.uplift:
            return [evaluation.target for evaluation in self.uplift]
        return [evaluation.target for evaluation in (self.evaluations or self.regressions)]

    def metric(self, target: str, model: str, metric: str) -> float:
        rows = self.metrics
        hit = rows.loc[(rows["target"] == target) & (rows["model"] == model) & (rows["metric"] == metric)]
        return float(hit["value"].iloc[0]) if len(hit) else float("nan")

    def headline(self) -> dict[str, float]:
        """The gate metric (AUC, or Gini) of the model and baselines on the held-out cutoff (means over
        the targets of a task with several heads)."""
        rows = self.metrics
        rows = rows.loc[rows["target"].isin(self.targets) & (rows["metric"] == self.gate_metric)]
        return rows.groupby("model")["value"].mean().to_dict()

    def beats_baselines(self) -> bool:
        """No baseline is better than the model beyond the noise: on the held-out cutoff, the upper
        end of the bootstrap interval of AUC(model) - AUC(baseline) is >= 0 for every baseline
        (averaged over the targets of a task with several heads)."""
        rows = self.metrics
        pattern = rf"^{self.gate_metric}_vs_.+_high$"
        highs = rows.loc[(rows["model"] == "model") & rows["metric"].str.match(pattern)]
        if highs.empty or not np.isfinite(self.headline().get("model", np.nan)):
            return False
        return bool((highs.groupby("metric")["value"].mean() >= 0).all())

    def usable(self) -> bool:
        """What a first champion needs, on the validation cutoff where the model was chosen: better
        than chance beyond the noise (the lower end of the bootstrap interval of AUC - 0.5 above 0,
        averaged over the targets).

        A task whose model implies a decision policy (it estimates that policy's value off-policy) is
        judged by the policy instead: the lower end of its value's interval must not be below the
        logging policy's value — a one-sided test that the policy is no worse than what produced the
        log — and its ranking, pooled over actions, must not be backwards (point estimate above 0).
        Requiring the ranking beyond the noise as well would test the same evidence twice, and on
        one cutoff of a few thousand decisions refuses most policies that help."""
        rows = self.metrics
        model = rows["model"] == "model"
        policy = rows.loc[model & (rows["metric"] == "valid_policy_vs_logging_low"), "value"]
        if len(policy):
            diff = rows.loc[model & (rows["metric"] == f"{self.gate_metric}_vs_chance_diff"), "value"]
            return bool(
                float(policy.min()) >= 0 and len(diff) and np.isfinite(diff.mean()) and diff.mean() > 0
            )
        low = rows.loc[model & (rows["metric"] == f"{self.gate_metric}_vs_chance_low"), "value"]
        return bool(len(low) and np.isfinite(low.mean()) and low.mean() > 0)

    def families(self) -> dict[str, str]:
        """Chosen head -> the family of the candidate that won it on the validation cutoff."""
        return {
            head["name"]: str(head.get("family", "lightgbm"))
            for head in self.bundle.spec["heads"]
            if head["kind"] == "binary" or "family" in head
        }


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
    """A trained binary head (a booster, or the baseline that won) and its held-out evaluation."""

    spec: dict[str, object]
    booster: lgb.Booster | None
    evaluation: BinaryEvaluation
    metrics: list[tuple[str, str, str, float]]
    baseline: object | None = None


def fit_binary_head(
    dataset: TaskDataset,
    target: str,
    output: str,
    params: LightGBMParams,
    config: TrainConfig,
    comparisons: Mapping[str, np.ndarray] | None = None,
    season: tuple[Mapping[str, object], str] | None = None,
) -> BinaryHead:
    """The candidates of one binary label column — LightGBM and both baselines — fitted on the
    training cutoffs; the best on the validation cutoff (AUC) becomes the head, whatever its family,
    calibrated on that cutoff. All are compared on the held-out cutoff (with the oracle when given,
    and ``comparisons``: held-out probabilities of models fitted elsewhere, e.g. BG/NBD), and the
    head against each of them with a bootstrap interval over customers. ``season``: the activity
    profile and the head's form (``training.season``); the head then predicts the held-out window at
    its own season, as it will predict every later one."""

    def part(split: Split) -> tuple[pd.DataFrame, np.ndarray]:
        return split.X, split.labels[target].to_numpy().astype(np.int64)

    train, valid, test = part(dataset.train), part(dataset.valid), part(dataset.test)
    booster = fit_booster(params, binary_objective(train[1]), train, valid, config.seed)
    recency, frequency = rf_features(dataset.feature_names, config.recency_feature, config.frequency_feature)
    baselines = [
        baseline
        for baseline in (
            fit_rf_heuristic(train[0], train[1], recency, frequency, config.baseline_max_rows, config.seed),
            fit_logistic(train[0], train[1], config.baseline_max_rows, config.seed),
        )
        if baseline is not None
    ]
    scorers = {"lightgbm": lambda X: booster.predict(X, num_threads=params.num_threads)}
    scorers |= {baseline.name: baseline.predict_proba for baseline in baselines}
    valid_auc = {family: m.auc(valid[1], score(valid[0])) for family, score in scorers.items()}
    family = max(valid_auc, key=lambda name: (np.nan_to_num(valid_auc[name], nan=-1.0), name == "lightgbm"))
    chosen = next((b for b in baselines if b.name == family), None)
    spec = {
        "name": target,
        "kind": "binary",
        "output": output,
        "family": family,
        **(chosen.head_fields() if chosen else {}),
        "calibrator": fit_calibrator(scorers[family](valid[0]), valid[1]),
        "prior": float(train[1].mean()),
        "valid_auc": {name: float(value) for name, value in valid_auc.items()},
        **({"season": season[1]} if season else {}),
    }
    estimators = {target: chosen.pipeline} if chosen else {}
    profile = {"season": season[0]} if season else {}
    bundle = ModelBundle(
        {**base_spec(dataset, params), "heads": [spec], **profile}, {target: booster}, estimators
    )
    moment = dataset.plan.test
    predictions = {"model": bundle.probability(target, bundle.prepare(test[0]), moment)}
    predictions |= {baseline.name: baseline.predict_proba(test[0]) for baseline in baselines}
    predictions |= dict(comparisons or {})
    oracle = dataset.test.oracle
    if oracle is not None and target in oracle and oracle[target].notna().all():
        predictions["oracle"] = oracle[target].to_numpy(dtype=float)
    scores = {name: m.binary_metrics(test[1], probability) for name, probability in predictions.items()}
    results = [row for name, values in scores.items() for row in metric_rows(target, name, values)]
    extra: dict[str, float] = {"best_iteration": booster.current_iteration()}
    if season:
        extra["seasonal_ratio"] = bundle.seasonal_ratio(moment)
    extra |= {f"valid_auc_{name}": value for name, value in valid_auc.items()}
    if "oracle" in scores:
        extra["auc_ratio_to_oracle"] = m.with_oracle(scores["model"], scores["oracle"])["auc_ratio_to_oracle"]
    chance = m.bootstrap_auc_difference(
        valid[1], scorers[family](valid[0]), np.zeros(len(valid[1])), seed=config.seed
    )
    extra |= {f"auc_vs_chance_{key}": value for key, value in chance.items()}
    for name in [baseline.name for baseline in baselines] + list(comparisons or {}):
        interval = m.bootstrap_auc_difference(
            test[1], predictions["model"], predictions[name], seed=config.seed
        )
        extra |= {f"auc_vs_{name}_{key}": value for key, value in interval.items()}
    results += metric_rows(target, "model", extra)
    head_booster = booster if chosen is None else None
    return BinaryHead(spec, head_booster, BinaryEvaluation(target, test[1], predictions), results, chosen)


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
    comparisons: Mapping[str, Mapping[str, np.ndarray]] | None = None,
    season: tuple[Mapping[str, object] | None, Mapping[str, str]] | None = None,
) -> FittedTask:
    """One calibrated binary head per ``label column -> output column`` of ``targets`` (tuned, when
    asked, on the target with the most training positives); the primary target is the one with the
    most held-out positives. ``tuning``: parameters already chosen (and their record) instead;
    ``comparisons``: per target, held-out probabilities of outside models to compare with;
    ``season``: the activity profile (``training.season``, may be None) and the form of each target
    that follows it."""
    if tuning is None:
        richest = max(targets, key=lambda column: int(dataset.train.labels[column].sum()))
        tuning = tuned(dataset, richest, config)
    params, tuning_record = tuning
    heads, boosters, estimators, results, evaluations = [], {}, {}, [], []
    profile, forms = season or (None, {})
    for column, output in targets.items():
        own = (profile, forms[column]) if profile and column in forms else None
        head = fit_binary_head(dataset, column, output, params, config, (comparisons or {}).get(column), own)
        heads.append({**head.spec, **(head_extra or {}).get(column, {})})
        if head.booster is not None:
            boosters[column] = head.booster
        else:
            estimators[column] = head.baseline.pipeline
        results += head.metrics
        evaluations.append(head.evaluation)
    spec = {**base_spec(dataset, params), "heads": heads, **(spec_extra or {})}
    if profile and any("season" in head for head in heads):
        spec["season"] = profile
    return FittedTask(
        task=dataset.task,
        bundle=ModelBundle(spec, boosters, estimators),
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
