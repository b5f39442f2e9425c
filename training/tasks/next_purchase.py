"""Next purchase: whether the customer buys in (t, t+H], when, and in which category.

Heads of the bundle:
- binary -> ``purchase_probability`` (calibrated, against both baselines);
- three quantile heads (alpha 0.1/0.5/0.9) -> ``expected_days_low`` / ``expected_days_to_purchase``
  (the median) / ``expected_days_high``;
- multiclass -> ``next_category_1..k`` with probabilities (conditional on a purchase).

Censoring: a row's next purchase is only observed up to the data end, and older cutoffs have a
longer follow-up than newer ones. So that training and evaluation select rows the same way, the
quantile heads learn from rows whose next purchase came within F = as_of - (evaluation cutoff) days
(F >= H), at every cutoff; rows without a purchase within F are left out, not imputed. The days are
therefore "days to the next purchase, given one within F days": optimistic for customers unlikely
to buy, so read them with ``purchase_probability``.
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

NAME = "next_purchase"
EXPLAINED = True
OUTPUT = "purchase_probability"
DAYS_OUTPUTS = ("expected_days_low", "expected_days_to_purchase", "expected_days_high")


class CategoryScore(BaseModel):
    category: str
    probability: float


class Block(BaseModel):
    probability: float = Field(description="Probability of a purchase within horizon_days.")
    horizon_days: int
    expected_days: float = Field(description="Median days to the next purchase.")
    interval_days: list[float] = Field(
        description="10th and 90th percentile of the days to the next purchase."
    )
    categories: list[CategoryScore]
    drivers: list[Driver]


def labels(
    tables: Mapping[str, pd.DataFrame | None],
    cutoffs: Sequence[pd.Timestamp],
    horizon_days: int,
    as_of: pd.Timestamp,
    model_spec: Mapping[str, object] | None = None,
) -> TaskLabels:
    """``purchase`` in (t, t+H]; ``days_to_next`` and ``censored``; ``next_category``.

    ``days_to_next`` looks past the horizon up to ``as_of`` (the data end): with no purchase by then
    it equals the follow-up ``as_of - t`` and ``censored`` is True. ``next_category`` is the category
    of the first purchase after t when that purchase falls within the horizon, else null.
    """
    seen, entity, end = L.prepare(tables, cutoffs, horizon_days, as_of, NAME)
    as_of = L.utc_timestamp(as_of)
    bought_facts = L.purchases(seen)
    first = L.first_after(entity, bought_facts, carry=["category"])
    bought = (first["at"] <= end).to_numpy()
    censored = first["at"].isna().to_numpy()
    observed_until = first["at"].where(~censored, as_of)
    days = ((observed_until - entity["event_timestamp"]) / L.DAY).to_numpy(dtype=float)
    category = first["category"].where(bought, None).astype(object)
    frame = entity.assign(
        purchase=bought.astype(np.int64),
        days_to_next=days,
        censored=censored,
        next_category=category.to_numpy(),
    )
    return TaskLabels(
        frame,
        ("purchase", "days_to_next", "censored", "next_category"),
        {"purchase": OUTPUT},
        {"transactions_only": "events" not in seen, "activity": [bought_facts["timestamp"]]},
    )


def _days_heads(dataset, params, config, boosters: dict, heads: list, results: list, notes: list) -> None:
    """Quantile heads of the days to the next purchase, from rows whose purchase came within F days."""
    from training.models import ModelBundle, base_spec, fit_booster, metric_rows

    follow_up = (dataset.plan.as_of - dataset.plan.test) / pd.Timedelta(days=1)

    def uncensored(split) -> tuple[pd.DataFrame, np.ndarray]:
        days = split.labels["days_to_next"].to_numpy(dtype=float)
        keep = ~split.labels["censored"].to_numpy(dtype=bool) & (days <= follow_up)
        return split.X.loc[keep], days[keep]

    train, valid, test = uncensored(dataset.train), uncensored(dataset.valid), uncensored(dataset.test)
    if min(len(train[1]), len(valid[1])) < config.min_positives:
        notes.append("days to next purchase: too few uncensored rows, no quantile models")
        return
    days_heads = []
    for alpha, output in zip(config.days_quantiles, DAYS_OUTPUTS, strict=True):
        name = f"days_q{round(alpha * 100):02d}"
        objective = {"objective": "quantile", "alpha": alpha, "metric": "quantile"}
        boosters[name] = fit_booster(params, objective, train, valid, config.seed)
        prior = float(np.quantile(train[1], alpha))
        days_heads.append(
            {"name": name, "kind": "quantile", "alpha": alpha, "output": output, "prior": prior}
        )
    heads += days_heads
    days = ModelBundle({**base_spec(dataset, params), "heads": days_heads}, boosters).predict(test[0])
    results += metric_rows(
        "days_to_next",
        "model",
        {
            "mae": m.mae(test[1], days["expected_days_to_purchase"]),
            "interval_coverage": m.interval_coverage(
                test[1], days["expected_days_low"], days["expected_days_high"]
            ),
            "rows": len(test[1]),
            "follow_up_days": follow_up,
        },
    )
    naive = np.full(len(test[1]), float(np.median(train[1])))
    results += metric_rows("days_to_next", "train_median", {"mae": m.mae(test[1], naive)})


def _category_head(dataset, params, config, boosters: dict, heads: list, results: list, notes: list) -> None:
    """Multiclass head of the next purchase's category, from rows with a purchase in the horizon."""
    from training.models import ModelBundle, base_spec, fit_booster, metric_rows

    def bought(split) -> tuple[pd.DataFrame, np.ndarray]:
        keep = split.labels["next_category"].notna().to_numpy()
        return split.X.loc[keep], split.labels["next_category"].to_numpy(dtype=object)[keep]

    train, valid, test = bought(dataset.train), bought(dataset.valid), bought(dataset.test)
    counts = pd.Series(train[1]).value_counts()
    classes = sorted(counts.loc[counts >= 5].index.astype(str))
    if len(classes) < 2:
        notes.append("next category: fewer than two categories with purchases, no category model")
        return
    index = {name: position for position, name in enumerate(classes)}

    def encoded(part: tuple[pd.DataFrame, np.ndarray]) -> tuple[pd.DataFrame, np.ndarray]:
        codes = pd.Series(part[1]).map(index)
        keep = codes.notna().to_numpy()
        return part[0].loc[keep], codes.to_numpy()[keep].astype(np.int64)

    objective = {"objective": "multiclass", "num_class": len(classes), "metric": "multi_logloss"}
    boosters["category"] = fit_booster(params, objective, encoded(train), encoded(valid), config.seed)
    top = min(config.top_categories, len(classes))
    shares = pd.Series(train[1]).value_counts(normalize=True).reindex(classes, fill_value=0.0)
    head = {
        "name": "category",
        "kind": "multiclass",
        "output": "next_category",
        "classes": classes,
        "top": top,
        "prior": [float(share) for share in shares],
    }
    heads.append(head)
    only = ModelBundle({**base_spec(dataset, params), "heads": [head]}, {"category": boosters["category"]})
    ranked = only.predict(test[0])[[f"next_category_{rank + 1}" for rank in range(top)]].to_numpy()
    popular = counts.index.astype(str)[:top].to_numpy(dtype=object)
    results += metric_rows(
        "next_category",
        "model",
        {
            f"top{top}_accuracy": m.top_k_accuracy(test[1], ranked),
            "top1_accuracy": m.top_k_accuracy(test[1], ranked[:, :1]),
            "rows": len(test[1]),
        },
    )
    results += metric_rows(
        "next_category",
        "popularity",
        {
            f"top{top}_accuracy": m.top_k_accuracy(test[1], np.tile(popular, (len(test[1]), 1))),
        },
    )


def fit(dataset, task_labels: TaskLabels, config):
    from training.models import METRIC_COLUMNS, ModelBundle, base_spec, fit_binary_heads, tuned

    from training.btyd import no_purchase_probability
    from training.season import season_profile

    params, tuning = tuned(dataset, "purchase", config)
    plan = dataset.plan
    profile = season_profile(task_labels.extra["activity"], plan.as_of, plan.horizon_days, plan.valid)
    transactions_only = task_labels.extra.get("transactions_only")
    btyd = no_purchase_probability(dataset.test.X, dataset.plan.horizon_days) if transactions_only else None
    comparisons = {"purchase": {"btyd": 1.0 - btyd}} if btyd is not None else {}
    fitted = fit_binary_heads(
        dataset,
        {"purchase": OUTPUT},
        config,
        tuning=(params, tuning),
        comparisons=comparisons,
        season=(profile, {"purchase": "occurs"}),
    )
    heads, boosters = list(fitted.bundle.spec["heads"]), dict(fitted.bundle.boosters)
    results = [tuple(row) for row in fitted.metrics.itertuples(index=False)]
    _days_heads(dataset, params, config, boosters, heads, results, fitted.notes)
    _category_head(dataset, params, config, boosters, heads, results, fitted.notes)
    season = {"season": profile} if profile else {}
    fitted.bundle = ModelBundle(
        {**base_spec(dataset, params), "heads": heads, **season}, boosters, fitted.bundle.estimators
    )
    fitted.metrics = pd.DataFrame(results, columns=METRIC_COLUMNS)
    return fitted


def oracle(exact: pd.DataFrame, transactions_only: bool) -> pd.DataFrame:
    return exact[["customer_id", "purchase"]]


def _categories(classes: Sequence[str], probabilities: Sequence[float]) -> list[dict]:
    return [{"category": c, "probability": rounded(p)} for c, p in zip(classes, probabilities, strict=True)]


def blocks(outputs: Mapping[str, np.ndarray], drivers: list[list[dict]], spec: Mapping) -> list[dict]:
    top = next(int(head["top"]) for head in spec["heads"] if head["kind"] == "multiclass")
    horizon = int(spec["horizon_days"])
    ranks = range(1, top + 1)
    return [
        {
            "probability": rounded(outputs[OUTPUT][i]),
            "horizon_days": horizon,
            "expected_days": rounded(outputs["expected_days_to_purchase"][i], 1),
            "interval_days": [
                rounded(outputs["expected_days_low"][i], 1),
                rounded(outputs["expected_days_high"][i], 1),
            ],
            "categories": _categories(
                [outputs[f"next_category_{rank}"][i] for rank in ranks],
                [outputs[f"next_category_{rank}_probability"][i] for rank in ranks],
            ),
            "drivers": drivers[i],
        }
        for i in range(len(outputs[OUTPUT]))
    ]


def prior(spec: Mapping) -> dict:
    heads = {head["output"]: head for head in spec["heads"]}
    category = heads["next_category"]
    shares = np.asarray(category["prior"], dtype=float)
    order = np.argsort(-shares, kind="stable")[: int(category["top"])]
    return {
        "probability": rounded(heads[OUTPUT]["prior"]),
        "horizon_days": int(spec["horizon_days"]),
        "expected_days": rounded(heads["expected_days_to_purchase"]["prior"], 1),
        "interval_days": [
            rounded(heads["expected_days_low"]["prior"], 1),
            rounded(heads["expected_days_high"]["prior"], 1),
        ],
        "categories": _categories([category["classes"][j] for j in order], shares[order].tolist()),
        "drivers": [],
    }
