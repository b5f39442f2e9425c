"""Customer value: net spend (purchases minus returns) in (t, t+H], with an interval and the value at risk.

Heads, all on the same point-in-time features:

- ``expected_spend``: the mean, from a LightGBM Tweedie regression (spend is zero for most customers
  in a horizon and long-tailed for the rest, which a compound Poisson-Gamma loss is made for), or the
  customer's own run rate when that ranks better on the validation cutoff. Its level is scaled on
  the validation cutoff so the predicted total matches the actual one;
- ``expected_spend_low`` / ``expected_spend_high``: the 10 % and 90 % quantiles (LightGBM quantile
  regressions);
- ``expected_spend_if_buying``: the mean spend of a horizon in which the customer buys (LightGBM
  Gamma regression on the rows with a purchase);
- ``value_at_risk`` = max(``expected_spend_if_buying`` - ``expected_spend``, 0): the spend the
  customer would bring in a buying horizon, times the probability of not buying at all — what is
  expected to be lost to the chance that the customer does not come back.

Candidates are compared on the held-out cutoff with the run rate (spend over the last year scaled to
H) and, where the purchase features allow, BG/NBD expected purchases × Gamma-Gamma expected spend per
purchase fitted in the same run (``training.btyd``, pymc-marketing). The gate compares normalised
Gini (how well the ranking puts the big spenders first) with bootstrap intervals, and the total
spend error.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from pydantic import BaseModel, Field

from training import labels as L
from training import metrics as m
from training.tasks import TaskLabels
from training.tasks.common import Driver, rounded

NAME = "value"
EXPLAINED = True
OUTPUT = "expected_spend"
LOW, HIGH = "expected_spend_low", "expected_spend_high"
IF_BUYING = "expected_spend_if_buying"
AT_RISK = "value_at_risk"
LABEL = "net_spend"
QUANTILES = ((0.1, LOW), (0.9, HIGH))
TWEEDIE_POWER = 1.5
RUN_RATE_DAYS = 365
AMOUNT_PREFIX = "purchase_amount_"


class ValueDriver(Driver):
    impact: float = Field(description="Contribution to the log of expected spend (positive raises it).")


class Block(BaseModel):
    expected_spend: float = Field(description="Expected net spend (purchases minus returns) in the horizon.")
    interval: list[float] = Field(description="10 % and 90 % quantiles of the net spend in the horizon.")
    value_at_risk: float | None = Field(
        description="Spend expected to be lost to the chance of no purchase in the horizon: the spend of "
        "a buying horizon minus the expected spend (null when the model could not estimate it)."
    )
    horizon_days: int
    drivers: list[ValueDriver]


def labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    model_spec: Mapping[str, object] | None = None,
) -> TaskLabels:
    """``net_spend``: purchases minus returns in (t, t+H] for each customer known at t."""
    seen, entity, end = L.prepare(tables, cutoffs, horizon_days, as_of, NAME)
    spend = L.window_sums(entity, L.signed_amounts(seen["transactions"]), end)
    frame = entity.assign(**{LABEL: spend})
    return TaskLabels(frame, (LABEL,), {}, {"transactions_only": "events" not in seen})


def run_rate_column(feature_names: Sequence[str]) -> str | None:
    """The purchase-amount feature with the longest window (the run-rate baseline's input)."""
    windows = [
        (int(name[len(AMOUNT_PREFIX) : -1]), name)
        for name in feature_names
        if name.startswith(AMOUNT_PREFIX) and name.endswith("d") and name[len(AMOUNT_PREFIX) : -1].isdigit()
    ]
    return max(windows)[1] if windows else None


def run_rate(X: pd.DataFrame, column: str, window_days: int, horizon_days: int) -> np.ndarray:
    return (
        np.clip(np.nan_to_num(X[column].to_numpy(dtype=float), nan=0.0), 0, None) * horizon_days / window_days
    )


def btyd_spend(X: pd.DataFrame, horizon_days: int) -> np.ndarray | None:
    """BG/NBD expected purchases in H × Gamma-Gamma expected spend per purchase, fitted on the rows'
    own history read from the purchase features (no label is read). None without the features."""
    from training.btyd import MIN_HISTORY, BtydModel, summary_from_features

    summary = summary_from_features(X)
    if (
        summary is None
        or "purchase_basket_value_365d" not in X
        or int(summary["has_history"].sum()) < MIN_HISTORY
    ):
        return None
    basket = np.nan_to_num(X["purchase_basket_value_365d"].to_numpy(dtype=float), nan=0.0)
    summary["monetary_value"] = np.where(summary["frequency"] > 0, np.clip(basket, 0, None), 0.0)
    model = BtydModel().fit(summary)
    try:
        model.fit_spend(summary.loc[summary["monetary_value"] > 0])
    except (ValueError, RuntimeError):
        return None
    return model.expected_purchases(summary, horizon_days) * model.expected_spend(summary)


def _spend(split) -> np.ndarray:
    return split.labels[LABEL].to_numpy(dtype=float)


def fit(dataset, task_labels: TaskLabels, config):
    """Tweedie LightGBM against the run rate (the better on validation Gini serves the mean), the
    quantile and buying-horizon heads, and BG/NBD × Gamma-Gamma compared on the held-out cutoff."""
    from training.models import (
        METRIC_COLUMNS,
        FittedTask,
        ModelBundle,
        RegressionEvaluation,
        base_spec,
        fit_booster,
        metric_rows,
    )

    params = config.lightgbm
    horizon = dataset.plan.horizon_days
    train, valid, test = dataset.train, dataset.valid, dataset.test
    target = (train.X, np.clip(_spend(train), 0, None)), (valid.X, np.clip(_spend(valid), 0, None))
    tweedie = {"objective": "tweedie", "tweedie_variance_power": TWEEDIE_POWER, "metric": "tweedie"}
    booster = fit_booster(params, tweedie, *target, config.seed)
    boosters = {"spend": booster}
    scorers = {"lightgbm": lambda X: booster.predict(X, num_threads=params.num_threads)}
    column = run_rate_column(dataset.feature_names)
    window = int(column[len(AMOUNT_PREFIX) : -1]) if column else RUN_RATE_DAYS
    if column:
        scorers["run_rate"] = lambda X: run_rate(X, column, window, horizon)
    valid_gini = {
        family: m.normalized_gini(_spend(valid), score(valid.X)) for family, score in scorers.items()
    }
    family = max(valid_gini, key=lambda f: (np.nan_to_num(valid_gini[f], nan=-1.0), f == "lightgbm"))
    predicted_valid = scorers[family](valid.X)
    scale = float(np.sum(_spend(valid)) / np.sum(predicted_valid)) if np.sum(predicted_valid) > 0 else 1.0
    head = {
        "name": "spend",
        "kind": "regression",
        "output": OUTPUT,
        "family": family,
        "scale": scale,
        "prior": float(np.mean(_spend(train))),
        "valid_gini": {name: float(value) for name, value in valid_gini.items()},
    }
    if family == "run_rate":
        head |= {"column": column, "factor": horizon / window}
        boosters = {}
    heads = [head]
    for alpha, output in QUANTILES:
        name = f"spend_q{round(alpha * 100):02d}"
        objective = {"objective": "quantile", "alpha": alpha, "metric": "quantile"}
        boosters[name] = fit_booster(
            params, objective, (train.X, _spend(train)), (valid.X, _spend(valid)), config.seed
        )
        prior = float(np.quantile(_spend(train), alpha))
        heads.append({"name": name, "kind": "quantile", "alpha": alpha, "output": output, "prior": prior})
    buying = [(split.X.loc[_spend(split) > 0], _spend(split)[_spend(split) > 0]) for split in (train, valid)]
    notes: list[str] = []
    if min(len(buying[0][1]), len(buying[1][1])) >= config.min_positives:
        gamma = {"objective": "gamma", "metric": "gamma"}
        boosters["spend_if_buying"] = fit_booster(params, gamma, buying[0], buying[1], config.seed)
        heads.append(
            {
                "name": "spend_if_buying",
                "kind": "regression",
                "output": IF_BUYING,
                "scale": 1.0,
                "prior": float(np.mean(buying[0][1])),
            }
        )
        shortfall = {"output": AT_RISK, "of": IF_BUYING, "minus": OUTPUT}
    else:
        notes.append("too few buying horizons for the spend-if-buying head: value at risk is not estimated")
        shortfall = None
    spec = {
        **base_spec(dataset, params),
        "heads": heads,
        "shortfalls": [shortfall] if shortfall else [],
        "continuous_targets": {LABEL: OUTPUT},
    }
    bundle = ModelBundle(spec, boosters)

    y = _spend(test)
    outputs = bundle.predict(test.X)
    predictions = {"model": outputs[OUTPUT].to_numpy()}
    if column:
        predictions["run_rate"] = run_rate(test.X, column, window, horizon)
    btyd = btyd_spend(test.X, horizon)
    if btyd is not None:
        predictions["btyd"] = btyd
    results = [
        row for name, p in predictions.items() for row in metric_rows(LABEL, name, m.spend_metrics(y, p))
    ]
    extra: dict[str, float] = {
        "interval_coverage": m.interval_coverage(y, outputs[LOW], outputs[HIGH]),
        "best_iteration": float(booster.current_iteration()),
        **{f"valid_gini_{name}": value for name, value in valid_gini.items()},
    }
    chance = m.bootstrap_gini_difference(
        _spend(valid), scale * predicted_valid, np.zeros(len(valid.X)), seed=config.seed
    )
    extra |= {f"gini_vs_chance_{key}": value for key, value in chance.items()}
    for name in [n for n in predictions if n != "model"]:
        interval = m.bootstrap_gini_difference(y, predictions["model"], predictions[name], seed=config.seed)
        extra |= {f"gini_vs_{name}_{key}": value for key, value in interval.items()}
    results += metric_rows(LABEL, "model", extra)
    for row in m.decile_table(y, predictions["model"]).itertuples(index=False):
        results += metric_rows(
            f"decile_{int(row.decile):02d}",
            "model",
            {"rows": row.rows, "mean_predicted": row.mean_predicted, "mean_actual": row.mean_actual},
        )
    return FittedTask(
        task=dataset.task,
        bundle=bundle,
        metrics=pd.DataFrame(results, columns=METRIC_COLUMNS),
        evaluations=[],
        primary=LABEL,
        params={f"lgbm_{key}": value for key, value in params.model_dump().items()}
        | {"tweedie_variance_power": TWEEDIE_POWER},
        notes=notes,
        gate_metric="gini",
        regressions=[RegressionEvaluation(LABEL, y, predictions)],
    )


def oracle(exact: pd.DataFrame, transactions_only: bool) -> pd.DataFrame:
    """No exact expected spend is derived from the generated world: judged against realised spend."""
    return exact[["customer_id"]]


def blocks(outputs: Mapping[str, np.ndarray], drivers: list[list[dict]], spec: Mapping) -> list[dict]:
    horizon = int(spec["horizon_days"])
    at_risk = outputs.get(AT_RISK)
    return [
        {
            "expected_spend": rounded(outputs[OUTPUT][i], 2),
            "interval": [rounded(outputs[LOW][i], 2), rounded(outputs[HIGH][i], 2)],
            "value_at_risk": rounded(at_risk[i], 2) if at_risk is not None else None,
            "horizon_days": horizon,
            "drivers": drivers[i],
        }
        for i in range(len(outputs[OUTPUT]))
    ]


def prior(spec: Mapping) -> dict:
    heads = {head["output"]: head for head in spec["heads"]}
    expected = float(heads[OUTPUT]["prior"])
    buying = heads.get(IF_BUYING)
    return {
        "expected_spend": rounded(expected, 2),
        "interval": [rounded(heads[LOW]["prior"], 2), rounded(heads[HIGH]["prior"], 2)],
        "value_at_risk": rounded(max(float(buying["prior"]) - expected, 0.0), 2) if buying else None,
        "horizon_days": int(spec["horizon_days"]),
        "drivers": [],
    }
