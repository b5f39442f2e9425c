"""From feature columns to the response blocks of the API (pure: no I/O); each task's module shapes
its own block.

The task models run on one float matrix each (``ModelBundle.prepare_matrix``): for one to a
few hundred customers pandas would cost more than the trees. Cold starts are answered from the
population priors each head stored at training time.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial

import numpy as np

from serving.attributions import PathAttributions
from training.model_bundle import ModelBundle, strongest
from training.tasks import implementation
from training.scoring import NO_CONSENT
from training.tasks.common import rounded


@dataclass(frozen=True)
class ServedModel:
    """One registered model version, loaded."""

    task: str
    name: str
    version: str
    alias: str
    feature_service: str
    bundle: ModelBundle
    explain: PathAttributions | Callable[[np.ndarray], np.ndarray]
    """Drivers of the task's first head: path attributions of its trees, or a linear head's terms."""

    @classmethod
    def of(cls, task: str, name: str, version: str, alias: str, feature_service: str, bundle: ModelBundle):
        first = bundle.spec["heads"][0]["name"]
        if first in bundle.boosters:
            explain = PathAttributions(bundle.boosters[first])
        else:  # a linear baseline won: its terms of the log-odds are exact drivers
            explain = partial(bundle.contributions, head=first)
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
            drivers.append({"feature": names[j], "value": value, "impact": rounded(contributions[i, j])})
        result.append(drivers)
    return result


def task_blocks(model: ServedModel, columns: Mapping[str, Sequence[object]], n: int, k: int) -> list:
    """The task's API blocks for ``n`` customers whose features are ``columns``."""
    task = implementation(model.task)
    X = model.bundle.prepare_matrix(columns, n)
    drivers = _drivers(model, X, columns, k) if task.EXPLAINED else [[] for _ in range(n)]
    return task.blocks(model.bundle.outputs(X), drivers, model.bundle.spec)


def prior_block(model: ServedModel) -> dict | list:
    """The block a customer the store does not know gets: the training population's values."""
    return implementation(model.task).prior(model.bundle.spec)


def iso_seconds(epoch_s: float | None) -> str | None:
    return None if epoch_s is None else datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def answer_predictions(models: ModelSet, features, tasks: Sequence[str], drivers: int) -> list[dict]:
    """The ``predictions`` of a ``/predict`` answer, in the order of ``features.customer_ids``
    (``features``: a request's ``online_features.RequestFeatures``): a known, consenting customer
    gets each task's block, a cold start the task's prior block, a customer without profiling
    consent null blocks, a task without a model null blocks."""
    ids, stamps, consent = features.customer_ids, features.snapshot_s, features.consent
    n = len(ids)
    known = [i for i in range(n) if stamps[i] is not None and consent[i]]
    predictions = [
        {
            "customer_id": ids[i],
            "scored": consent[i],
            "reason": None if consent[i] else NO_CONSENT,
            "cold_start": stamps[i] is None,
            "features_as_of": iso_seconds(stamps[i]),
        }
        for i in range(n)
    ]
    columns = features.columns
    if len(known) < n:
        columns = {name: [values[i] for i in known] for name, values in columns.items()}
    for task in tasks:
        model = models.models.get(task)
        if model is None:
            for prediction in predictions:
                prediction[task] = None
            continue
        scored = dict(
            zip(known, task_blocks(model, columns, len(known), drivers) if known else [], strict=True)
        )
        prior = None
        for i, prediction in enumerate(predictions):
            if i in scored:
                prediction[task] = scored[i]
            elif not consent[i]:
                prediction[task] = None
            else:
                prior = prior if prior is not None else prior_block(model)
                prediction[task] = prior
    return predictions
