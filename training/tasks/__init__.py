"""Task implementations: one module per task, named by its spec in ``cxpredict.tasks``.

An implementation module provides, at module level:

- ``labels(tables, cutoffs, horizon_days, as_of, model_spec=None) -> TaskLabels``: the label frame
  at the cutoffs (``model_spec``, a trained bundle's spec, reproduces that model's label columns);
- ``fit(dataset, labels, config) -> FittedTask``: the candidates (model, baselines, oracle) and
  their held-out metrics;
- ``oracle(exact, transactions_only) -> DataFrame``: ``customer_id`` and the generated world's exact
  probability of each binary label column (from ``features.synthetic.oracle_probabilities``);
- ``Block``: the pydantic model of the task's block in an API answer;
- ``blocks(outputs, drivers, bundle_spec) -> list``: API blocks from model outputs (arrays by
  output column) and, when ``EXPLAINED``, the top drivers per row;
- ``prior(bundle_spec)``: the block a customer without features gets (the training priors);
- ``EXPLAINED``: whether blocks carry drivers (of the bundle's first head).

Nothing here names a task: :func:`implementation` resolves the module from the registry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import ModuleType

import pandas as pd

from cxpredict import tasks


@dataclass(frozen=True)
class TaskLabels:
    """Labels of one task at some cutoffs.

    ``frame``: keys (customer_id, event_timestamp) and ``columns``; ``outputs``: binary label column
    -> the model output column that predicts it (what evaluation compares); ``extra``: what the
    fitter needs besides the frame (e.g. the needs found), recorded in the bundle spec.
    """

    frame: pd.DataFrame
    columns: tuple[str, ...]
    outputs: Mapping[str, str]
    extra: Mapping[str, object] = field(default_factory=dict)


def implementation(task: str | tasks.TaskSpec) -> ModuleType:
    spec = task if isinstance(task, tasks.TaskSpec) else tasks.get(task)
    return spec.module()
