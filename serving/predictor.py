"""From feature columns to the response blocks of DESIGN §5 (pure: no I/O).

The three task models run on one float matrix each (``ModelBundle.prepare_matrix``): for one to a
few hundred customers pandas would cost more than the trees. Cold starts are answered from the
population priors each head stored at training time.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from serving.attributions import PathAttributions
from training.model_bundle import ModelBundle, risk_bands, strongest

@dataclass(frozen=True)
class ServedModel:
    """One registered model version, loaded."""

    task: str
    name: str
    version: str
    alias: str
    feature_service: str
    bundle: ModelBundle
    explain: PathAttributions
    """Drivers of the task's first head (churn; purchase within the horizon)."""

    @classmethod
    def of(cls, task: str, name: str, version: str, alias: str, feature_service: str, bundle: ModelBundle):
        explain = PathAttributions(bundle.boosters[bundle.spec["heads"][0]["name"]])
        return cls(task, name, version, alias, feature_service, bundle, explain)

    def ref(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "alias": self.alias}


@dataclass(frozen=True)
class ModelSet:
    """What is served right now: swapped as a whole, so a request sees one consistent set."""

    models: Mapping[str, ServedModel] = field(default_factory=dict)
    missing: Mapping[str, str] = field(default_factory=dict)
    """Task -> why it has no model (e.g. no champion)."""

    def versions(self) -> dict[str, str]:
        return {task: model.version for task, model in self.models.items()}

    def refs(self) -> dict[str, dict[str, str]]:
        refs: dict[str, dict[str, str]] = {task: model.ref() for task, model in self.models.items()}
        refs.update({task: {"error": reason} for task, reason in self.missing.items()})
        return refs


def _round(value: float, digits: int = 6) -> float:
    return round(float(value), digits)


def _drivers(
    model: ServedModel, X: np.ndarray, columns: Mapping[str, Sequence[object]], k: int
) -> list[list[dict[str, object]]]:
    """Top-k drivers per row: feature, its value as served (None when missing), impact in log-odds."""
    if k <= 0:
        return [[] for _ in range(len(X))]
    names = model.bundle.feature_names
    contributions = model.explain(X)[:, : len(names)]
    order = strongest(contributions, k)
    result = []
    for i, row in enumerate(order.tolist()):
        drivers = []
        for j in row:
            value = columns.get(names[j])
            value = None if value is None else value[i]
            if isinstance(value, float) and np.isnan(value):
                value = None
            drivers.append({"feature": names[j], "value": value, "impact": _round(contributions[i, j])})
        result.append(drivers)
    return result


def churn_blocks(model: ServedModel, columns: Mapping[str, Sequence[object]], n: int, k: int) -> list[dict]:
    bundle = model.bundle
    X = bundle.prepare_matrix(columns, n)
    out = bundle.outputs(X)
    drivers = _drivers(model, X, columns, k)
    probability, band = out["churn_probability"], out["churn_risk_band"]
    return [
        {"probability": _round(probability[i]), "risk_band": band[i], "drivers": drivers[i]} for i in range(n)
    ]


def next_purchase_blocks(
    model: ServedModel, columns: Mapping[str, Sequence[object]], n: int, k: int
) -> list[dict]:
    bundle = model.bundle
    X = bundle.prepare_matrix(columns, n)
    out = bundle.outputs(X)
    drivers = _drivers(model, X, columns, k)
    top = next(int(head["top"]) for head in bundle.spec["heads"] if head["kind"] == "multiclass")
    horizon = int(bundle.spec["horizon_days"])
    return [
        {
            "probability": _round(out["purchase_probability"][i]),
            "horizon_days": horizon,
            "expected_days": _round(out["expected_days_to_purchase"][i], 1),
            "interval_days": [_round(out["expected_days_low"][i], 1), _round(out["expected_days_high"][i], 1)],
            "categories": [
                {
                    "category": out[f"next_category_{rank}"][i],
                    "probability": _round(out[f"next_category_{rank}_probability"][i]),
                }
                for rank in range(1, top + 1)
            ],
            "drivers": drivers[i],
        }
        for i in range(n)
    ]


def unmet_need_lists(model: ServedModel, columns: Mapping[str, Sequence[object]], n: int) -> list[list[dict]]:
    bundle = model.bundle
    out = bundle.outputs(bundle.prepare_matrix(columns, n))
    heads = [head for head in bundle.spec["heads"] if head["kind"] == "binary"]
    matrix = np.column_stack([out[head["output"]] for head in heads])
    order = np.argsort(-matrix, axis=1, kind="stable")
    return [
        [{"need": heads[j]["need"], "probability": _round(matrix[i, j])} for j in order[i].tolist()]
        for i in range(n)
    ]


def prior_block(model: ServedModel) -> dict | list:
    """The block a customer the store does not know gets: the training population's values."""
    bundle = model.bundle
    heads = {head["output"]: head for head in bundle.spec["heads"]}
    if model.task == "churn":
        probability = float(heads["churn_probability"]["prior"])
        band = risk_bands(np.array([probability]), bundle.spec["risk_bands"])[0]
        return {"probability": _round(probability), "risk_band": band, "drivers": []}
    if model.task == "next_purchase":
        category = heads["next_category"]
        shares = np.asarray(category["prior"], dtype=float)
        order = np.argsort(-shares, kind="stable")[: int(category["top"])]
        return {
            "probability": _round(heads["purchase_probability"]["prior"]),
            "horizon_days": int(bundle.spec["horizon_days"]),
            "expected_days": _round(heads["expected_days_to_purchase"]["prior"], 1),
            "interval_days": [
                _round(heads["expected_days_low"]["prior"], 1),
                _round(heads["expected_days_high"]["prior"], 1),
            ],
            "categories": [
                {"category": category["classes"][j], "probability": _round(shares[j])} for j in order.tolist()
            ],
            "drivers": [],
        }
    needs = [head for head in bundle.spec["heads"] if head["kind"] == "binary"]
    needs.sort(key=lambda head: -float(head["prior"]))
    return [{"need": head["need"], "probability": _round(head["prior"])} for head in needs]


def task_blocks(model: ServedModel, columns: Mapping[str, Sequence[object]], n: int, k: int) -> list:
    if model.task == "churn":
        return churn_blocks(model, columns, n, k)
    if model.task == "next_purchase":
        return next_purchase_blocks(model, columns, n, k)
    if model.task == "unmet_needs":
        return unmet_need_lists(model, columns, n)
    raise ValueError(f"unknown task {model.task!r}")
