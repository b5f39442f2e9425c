"""The ``--json`` documents of the command line: one JSON document per command, for scripts.

Contract: scripts rely on these keys, in this order; each command's ``--json`` help states its
document (``DOCUMENTS``), README "Command line" too. Values are JSON types only: times as ISO-8601
text, NaN and infinities as null. Standard library only, so ``cxpredict --help`` stays instant.
"""

from __future__ import annotations

import json
import math
import numbers
from collections.abc import Mapping
from datetime import date, datetime

TRAIN_KEYS = ("task", "status", "reason", "model_name", "model_version", "run_id", "model_uri", "champion",
              "decision", "metrics", "notes")  # fmt: skip
EVALUATE_KEYS = ("task", "status", "alias", "version", "cutoff", "run_id", "reason", "metrics")
SCORE_KEYS = ("path", "customers", "not_scored", "versions", "columns", "seconds")
PROMOTE_KEYS = ("task", "model", "candidate", "champion_before", "champion_after", "moved", "forced",
                "gate_passed", "decision", "evaluation_cutoff", "evaluation_run_id", "metrics", "checks",
                "audit", "exit_code")  # fmt: skip
INGEST_KEYS = ("version", "now", "seconds", "sources", "identity", "profile_rows", "id_mismatches",
               "reconciled", "warnings")  # fmt: skip
FORGET_KEYS = ("subject", "requested_at", "completed_at", "actor", "identifiers", "not_found", "customers",
               "tombstones", "resumed", "removed")  # fmt: skip
IMPACT_KEYS = ("decisions", "holdout_decisions", "outcomes", "outcomes_by_kind", "as_of", "horizon_days",
               "measured_customers", "pending_decisions", "overall", "per_action", "report", "run_id")  # fmt: skip
DOCUMENTS = {
    "train": "{tasks: [{" + ", ".join(TRAIN_KEYS) + "}]}",
    "evaluate": "{tasks: [{" + ", ".join(EVALUATE_KEYS) + "}]}",
    "score": "{" + ", ".join(SCORE_KEYS) + "}",
    "promote": "{" + ", ".join(PROMOTE_KEYS) + "}",
    "ingest": (
        "{" + ", ".join(INGEST_KEYS) + "}; each of sources with read, accepted, quarantined, duplicates, "
        "erased, rules, reconciled"
    ),
    "forget": "{requests: [{" + ", ".join(FORGET_KEYS) + "}]} (--audit: every finished request)",
    "impact": "{" + ", ".join(IMPACT_KEYS) + "}; each lift with treated, control, lift, low, high, "
    "n_treated, n_control",
    "models": "{generated_at, tasks: [{task, model, registered, aliases, versions, history (with --history), "
    "history_problems}]}",
}
"""The shape of each command's document, as its --json help states it."""


def _plain(value: object) -> object:
    """``value`` as JSON types: non-finite numbers become null, times ISO-8601 text, anything else
    that is not JSON (a path) text."""
    if type(value).__module__ == "numpy" and hasattr(value, "item"):
        value = value.item()
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, datetime | date):
        return value.isoformat()
    return str(value)


def json_text(document: Mapping[str, object]) -> str:
    """One JSON document (strict: no NaN) and a final newline, for stdout."""
    return json.dumps(_plain(document), indent=2, allow_nan=False, default=str) + "\n"


def _summary(metrics) -> dict[str, dict[str, float | int | None]]:
    """Models vs baselines (``training.metrics.summary_table``) as {model: {metric: value}}."""
    from training.metrics import summary_table

    if metrics is None:
        return {}
    table = summary_table(metrics)
    return {
        str(model): {
            name: int(v) if name == "rows" and v == v else _plain(float(v)) for name, v in row.items()
        }
        for model, row in table.iterrows()
    }


def train_document(results: Mapping[str, object]) -> dict[str, object]:
    tasks = [
        dict(zip(TRAIN_KEYS, (r.task, r.status, r.reason, r.model_name, r.model_version, r.run_id, r.model_uri,
                              r.champion, r.decision, _summary(r.metrics), r.fitted.notes if r.fitted else [])))
        for r in results.values()
    ]  # fmt: skip
    return {"tasks": tasks}


def evaluate_document(results: Mapping[str, object]) -> dict[str, object]:
    tasks = [
        dict(zip(EVALUATE_KEYS, (r.task, r.status, r.alias, r.version, r.cutoff, r.run_id, r.reason,
                                 _summary(r.metrics))))
        for r in results.values()
    ]  # fmt: skip
    return {"tasks": tasks}


def score_document(summary) -> dict[str, object]:
    return {key: getattr(summary, key) for key in SCORE_KEYS}


def promote_document(result) -> dict[str, object]:
    document = {**result.to_dict(), "exit_code": result.exit_code}
    return {key: document[key] for key in PROMOTE_KEYS}


def ingest_document(report) -> dict[str, object]:
    document = {
        **report.model_dump(mode="json"),
        "reconciled": report.reconciled,
        "warnings": report.warnings,
    }
    for name, source in report.sources.items():
        document["sources"][name]["reconciled"] = source.reconciled
    return {key: document[key] for key in INGEST_KEYS}


def forget_document(entries: list) -> dict[str, object]:
    """Erasure requests (``features.erasure.AuditEntry``): hashed subject and counts, never an identifier."""
    return {
        "requests": [{key: entry.model_dump(mode="json")[key] for key in FORGET_KEYS} for entry in entries]
    }


# ---- monitor and retrain ----------------------------------------------------------------------

MONITOR_KEYS = ("as_of", "generated_at", "status", "exit_code", "drifted_features", "performance", "tasks",
                "thresholds", "current_rows", "report", "summary", "seconds", "run_id")  # fmt: skip
RETRAIN_KEYS = ("reason", "as_of", "ingested", "snapshots_built", "tasks", "moved", "seconds", "exit_code")
DOCUMENTS["monitor"] = (
    "{" + ", ".join(MONITOR_KEYS) + "}; drifted_features and performance by task, each of tasks with task, "
    "model, version, status, reasons, notes, feature_drift, prediction_drift"
)
DOCUMENTS["retrain"] = (
    "{" + ", ".join(RETRAIN_KEYS) + "}; each of tasks with task, status, champion_before, new_version, "
    "champion_after, moved, why"
)


def monitor_document(result) -> dict[str, object]:
    """``training.monitor.MonitorResult``: the JSON report plus where it was written."""
    document = {**result.to_dict(), "summary": str(result.json_path)}
    return {key: document[key] for key in MONITOR_KEYS}


def retrain_document(result) -> dict[str, object]:
    document = result.to_dict()
    return {key: document[key] for key in RETRAIN_KEYS}


def impact_document(report) -> dict[str, object]:
    """``serving.impact.ImpactReport``: counts, lifts overall and per action, where it was written."""
    document = report.as_dict()
    return {key: document[key] for key in IMPACT_KEYS}


# ---- simulate ---------------------------------------------------------------------------------

SIMULATE_KEYS = ("days", "customers", "seed", "start", "end", "triggers", "decisions", "holdout_decisions",
                 "actions", "uplift_source", "persuaded", "put_off", "outcomes", "refreshes", "retrains",
                 "purchase_without_action", "policies", "gap_closed", "bar", "impact", "report",
                 "seconds")  # fmt: skip
DOCUMENTS["simulate"] = (
    "{" + ", ".join(SIMULATE_KEYS) + "}; each of policies (ours, random, risk_targeting, oracle) with name, "
    "value (purchases caused per decision), ci_low, ci_high, actions; impact as in impact --json"
)


def simulate_document(report) -> dict[str, object]:
    """``serving.simulate.SimulationReport``."""
    document = report.model_dump(mode="json")
    return {key: document[key] for key in SIMULATE_KEYS}
