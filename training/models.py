"""LightGBM models per task, their calibration, baselines and held-out metrics (no I/O).

Per task (heads are LightGBM boosters inside one ``ModelBundle``):
- churn: one binary head -> ``churn_probability`` (+ ``churn_risk_band``).
- next_purchase: binary head -> ``purchase_probability``; three quantile heads (alpha 0.1/0.5/0.9)
  -> ``expected_days_low`` / ``expected_days_to_purchase`` (the median) / ``expected_days_high``;
  multiclass head -> ``next_category_1..k`` with probabilities (conditional on a purchase).
  Censoring: a row's next purchase is only observed up to the data end, and older cutoffs have a
  longer follow-up than newer ones. So that training and evaluation select rows the same way, the
  quantile heads learn from rows whose next purchase came within F = as_of - (evaluation cutoff)
  days (F >= H), at every cutoff; rows without a purchase within F are left out, not imputed. The
  days are therefore "days to the next purchase, given one within F days": optimistic for
  customers unlikely to buy, so read them with ``purchase_probability``; a survival model would be
  the next step.
- unmet_needs: one binary head per need (category) -> ``need_<k>_probability``. One model per need
  rather than a single model with the need as a feature: each need's own signals (searches, views,
  purchases in k) then enter its model directly, no feature re-keying per need is required from the
  feature store, and per-need AUC and calibration come for free; the cost is K small models.

Binary heads: class imbalance is offset with ``scale_pos_weight = negatives / positives``, early
stopping watches AUC on the validation cutoff, and the validation cutoff then calibrates the
probabilities (isotonic with >= 1,000 rows and >= 50 of each class, else Platt), which undoes the
reweighting. Categorical features are pandas ``category`` columns handled natively by LightGBM.
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
from training.labels import LabelsUnavailable
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
        """AUC of the model and baselines on the held-out cutoff (means over needs for unmet_needs)."""
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


def _rows(target: str, model: str, values: Mapping[str, float]) -> list[tuple[str, str, str, float]]:
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
    bundle = ModelBundle({**_base_spec(dataset, params), "heads": [spec]}, {target: booster})
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
    results = [row for name, values in scores.items() for row in _rows(target, name, values)]
    extra: dict[str, float] = {"best_iteration": booster.current_iteration()}
    if "oracle" in scores:
        extra["auc_ratio_to_oracle"] = m.with_oracle(scores["model"], scores["oracle"])["auc_ratio_to_oracle"]
    results += _rows(target, "model", extra)
    return BinaryHead(spec, booster, BinaryEvaluation(target, test[1], predictions), results)


def _enough(dataset: TaskDataset, target: str, minimum: int) -> bool:
    for split in (dataset.train, dataset.valid):
        y = split.labels[target].to_numpy()
        if min(int(y.sum()), int(len(y) - y.sum())) < minimum:
            return False
    return True


def _tuned(
    dataset: TaskDataset, target: str, config: TrainConfig
) -> tuple[LightGBMParams, dict[str, object]]:
    if config.tune_trials == 0:
        return config.lightgbm, {}
    train = (dataset.train.X, dataset.train.labels[target].to_numpy())
    valid = (dataset.valid.X, dataset.valid.labels[target].to_numpy())
    params, best = tune_params(config.lightgbm, train, valid, config.tune_trials, config.seed)
    return params, {"tune_trials": config.tune_trials, "tune_target": target, "tune_valid_auc": best}


def _base_spec(dataset: TaskDataset, params: LightGBMParams) -> dict[str, object]:
    return {
        "task": dataset.task,
        "features": list(dataset.feature_names),
        "categorical_levels": {name: list(levels) for name, levels in dataset.categorical_levels.items()},
        "horizon_days": dataset.plan.horizon_days,
        "as_of": dataset.plan.as_of.isoformat(),
        "num_threads": params.num_threads,
    }


def _params_record(params: LightGBMParams, extra: Mapping[str, object]) -> dict[str, object]:
    return {**{f"lgbm_{key}": value for key, value in params.model_dump().items()}, **extra}


def fit_churn(dataset: TaskDataset, config: TrainConfig) -> FittedTask:
    params, tuning = _tuned(dataset, "churn", config)
    head = fit_binary_head(dataset, "churn", "churn_probability", params, config)
    spec = {**_base_spec(dataset, params), "heads": [head.spec], "risk_bands": list(config.risk_bands)}
    return FittedTask(
        task="churn",
        bundle=ModelBundle(spec, {"churn": head.booster}),
        metrics=pd.DataFrame(head.metrics, columns=METRIC_COLUMNS),
        evaluations=[head.evaluation],
        primary="churn",
        params=_params_record(params, tuning),
    )


def fit_next_purchase(dataset: TaskDataset, config: TrainConfig) -> FittedTask:
    params, tuning = _tuned(dataset, "purchase", config)
    head = fit_binary_head(dataset, "purchase", "purchase_probability", params, config)
    heads, boosters, results = [head.spec], {"purchase": head.booster}, list(head.metrics)
    notes = []

    follow_up = (dataset.plan.as_of - dataset.plan.test) / pd.Timedelta(days=1)

    def uncensored(split: Split) -> tuple[pd.DataFrame, np.ndarray]:
        days = split.labels["days_to_next"].to_numpy(dtype=float)
        keep = ~split.labels["censored"].to_numpy(dtype=bool) & (days <= follow_up)
        return split.X.loc[keep], days[keep]

    train, valid, test = uncensored(dataset.train), uncensored(dataset.valid), uncensored(dataset.test)
    outputs = ("expected_days_low", "expected_days_to_purchase", "expected_days_high")
    if min(len(train[1]), len(valid[1])) >= config.min_positives:
        for alpha, output in zip(config.days_quantiles, outputs):
            name = f"days_q{round(alpha * 100):02d}"
            objective = {"objective": "quantile", "alpha": alpha, "metric": "quantile"}
            boosters[name] = fit_booster(params, objective, train, valid, config.seed)
            prior = float(np.quantile(train[1], alpha))
            heads.append({"name": name, "kind": "quantile", "alpha": alpha, "output": output, "prior": prior})
        days = ModelBundle({**_base_spec(dataset, params), "heads": heads[1:]}, boosters).predict(test[0])
        median = float(np.median(train[1]))
        low, high = days["expected_days_low"], days["expected_days_high"]
        results += _rows(
            "days_to_next",
            "model",
            {
                "mae": m.mae(test[1], days["expected_days_to_purchase"]),
                "interval_coverage": m.interval_coverage(test[1], low, high),
                "rows": len(test[1]),
                "follow_up_days": follow_up,
            },
        )
        naive = np.full(len(test[1]), median)
        results += _rows("days_to_next", "train_median", {"mae": m.mae(test[1], naive)})
    else:
        notes.append("days to next purchase: too few uncensored rows, no quantile models")

    def bought(split: Split) -> tuple[pd.DataFrame, np.ndarray]:
        category = split.labels["next_category"]
        keep = category.notna().to_numpy()
        return split.X.loc[keep], category.to_numpy(dtype=object)[keep]

    train_c, valid_c, test_c = bought(dataset.train), bought(dataset.valid), bought(dataset.test)
    classes = sorted(pd.Series(train_c[1]).value_counts().loc[lambda counts: counts >= 5].index.astype(str))
    if len(classes) >= 2:
        index = {name: position for position, name in enumerate(classes)}

        def encoded(part: tuple[pd.DataFrame, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
            codes = pd.Series(part[1]).map(index)
            keep = codes.notna().to_numpy()
            return part[0].loc[keep], codes.to_numpy()[keep].astype(np.int64)

        objective = {"objective": "multiclass", "num_class": len(classes), "metric": "multi_logloss"}
        boosters["category"] = fit_booster(params, objective, encoded(train_c), encoded(valid_c), config.seed)
        top = min(config.top_categories, len(classes))
        shares = pd.Series(train_c[1]).value_counts(normalize=True).reindex(classes, fill_value=0.0)
        heads.append(
            {
                "name": "category",
                "kind": "multiclass",
                "output": "next_category",
                "classes": classes,
                "top": top,
                "prior": [float(share) for share in shares],
            }
        )
        category_only = ModelBundle(
            {**_base_spec(dataset, params), "heads": [heads[-1]]}, {"category": boosters["category"]}
        )
        ranked = category_only.predict(test_c[0])
        ranked_columns = [f"next_category_{rank + 1}" for rank in range(top)]
        prior = pd.Series(train_c[1]).value_counts().index.astype(str)[:top].to_numpy(dtype=object)
        results += _rows("next_category", "model", {
            f"top{top}_accuracy": m.top_k_accuracy(test_c[1], ranked[ranked_columns].to_numpy()),
            "top1_accuracy": m.top_k_accuracy(test_c[1], ranked[ranked_columns[:1]].to_numpy()),
            "rows": len(test_c[1]),
        })
        results += _rows("next_category", "popularity", {
            f"top{top}_accuracy": m.top_k_accuracy(test_c[1], np.tile(prior, (len(test_c[1]), 1))),
        })
    else:
        notes.append("next category: fewer than two categories with purchases, no category model")
    spec = {**_base_spec(dataset, params), "heads": heads}
    return FittedTask(
        task="next_purchase",
        bundle=ModelBundle(spec, boosters),
        metrics=pd.DataFrame(results, columns=METRIC_COLUMNS),
        evaluations=[head.evaluation],
        primary="purchase",
        params=_params_record(params, tuning),
        notes=notes,
    )


def fit_unmet_needs(dataset: TaskDataset, needs: Mapping[str, str], config: TrainConfig) -> FittedTask:
    """One binary head per need with enough positives in training and validation."""
    trainable = {
        need: column for need, column in needs.items() if _enough(dataset, column, config.min_positives)
    }
    skipped = sorted(set(needs) - set(trainable))
    if not trainable:
        raise LabelsUnavailable(
            "unmet_needs",
            f"no need has {config.min_positives} positive and negative rows in training and validation",
        )
    richest = max(trainable.values(), key=lambda column: int(dataset.train.labels[column].sum()))
    params, tuning = _tuned(dataset, richest, config)
    heads, boosters, results, evaluations = [], {}, [], []
    for need, column in trainable.items():
        head = fit_binary_head(dataset, column, f"{column}_probability", params, config)
        heads.append({**head.spec, "need": need})
        boosters[column] = head.booster
        results += head.metrics
        evaluations.append(head.evaluation)
    spec = {**_base_spec(dataset, params), "heads": heads, "needs": trainable}
    notes = [f"need {need!r} skipped: fewer than {config.min_positives} positives" for need in skipped]
    return FittedTask(
        task="unmet_needs",
        bundle=ModelBundle(spec, boosters),
        metrics=pd.DataFrame(results, columns=METRIC_COLUMNS),
        evaluations=evaluations,
        primary=max(trainable.values(), key=lambda column: int(dataset.test.labels[column].sum())),
        params=_params_record(params, {**tuning, "needs_skipped": ",".join(skipped)}),
        notes=notes,
    )


def label_columns(task: str, needs: Sequence[str] = ()) -> tuple[str, ...]:
    """Label columns a task's dataset carries."""
    if task == "churn":
        return ("churn",)
    if task == "next_purchase":
        return ("purchase", "days_to_next", "censored", "next_category")
    return tuple(needs)
