"""What ``cxpredict monitor`` does: feature drift, prediction drift and realised performance of every
champion, as an HTML and a JSON report in ``reports/`` and a run of the MLflow experiment
``cx-monitoring``.

- **Feature drift.** The reference is the champion's own training set, rebuilt from what its
  version records (``cutoffs_train`` and ``feature_service``): customers known at each training
  cutoff with their point-in-time features, sampled to ``reference_rows``. The current set is
  every customer known at as-of with the features of the latest snapshot at or before it, sampled
  to ``current_rows``. Evidently compares them column by column with a *distance* (normed
  Wasserstein for numbers, Jensen-Shannon for categories) against an effect-size threshold, not a
  p-value: a p-value test flags every column once samples reach a few hundred thousand rows,
  while a distance does not grow with the sample, so the same threshold holds at 2,000 and at
  1,000,000 rows. A task's features have drifted when at least ``drift_share`` of them do
  (Evidently's dataset drift); the drifted columns are listed either way.
- **Prediction drift.** The score columns of the latest kept ``score`` output at or before as-of
  against the champion's predictions at its held-out cutoff (``cutoff_test``: the newest rows it
  was evaluated on at training time, same sample size), with the same distance.
- **Realised performance.** ``score`` keeps a copy of each output per as-of in
  ``reports/scores/``; each whose horizon has passed by as-of is joined to the labels that have
  since matured (the task's own label builder on the canonical data known at as-of), and AUC, ECE
  and top-decile lift are compared with what the scoring version recorded at training, overall and
  by churn risk band. Degraded: AUC below the recorded AUC by more than ``auc_drop``, or ECE above
  the recorded ECE by more than ``ece_rise``. Only the champion's own outputs raise the alarm: the
  decay of a version that has since been replaced (say, by ``retrain``) is reported as a note.
  Outputs of more than ``realised_rows`` customers are measured on a seeded sample of them
  (labels are per customer, so a sample's are exact).
- **Realised uplift.** An uplift champion (a task judged by Qini) is judged on decisions, not kept
  scores: an estimate of uplift is only ever tested by a decision and what followed it. The log's
  decisions since the version's as-of whose label window has ended by as-of (the task's own label
  builder: each customer's first decision per month, its arm and whether a purchase followed
  within the horizon) are scored with the champion on their point-in-time features, and each
  action's Qini (treated against control) is measured with a bootstrap interval beside the Qini
  the version recorded on its held-out cutoff. Degraded: an action whose interval lies wholly
  below zero, i.e. the champion now ranks that action's customers worse than random targeting
  would.

Status: ``healthy`` (exit code 0) or ``alert`` (exit code 3) when any task drifted or degraded;
``NothingToMonitor`` (exit code 2) when no task has a champion. Reports and the MLflow run hold
distributions and aggregates only, never a customer id.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cache
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from cxpredict import tasks as registry
from cxpredict.workspace import Workspace
from training import metrics as m
from training.cutoffs import utc_timestamp

EXPERIMENT = "cx-monitoring"
EXIT_HEALTHY = 0
EXIT_ALERT = 3

SEGMENT_COLUMN = "churn_risk_band"
KEYS = ("customer_id", "event_timestamp")
TELEMETRY_OFF = {"DO_NOT_TRACK": "1", "EVIDENTLY_DISABLE_TELEMETRY": "1"}


class NothingToMonitor(LookupError):
    """No champion to monitor (or nothing to compare it with)."""


class MonitorConfig(BaseModel):
    """Thresholds and sample sizes of a monitor run (the command line reads its defaults here)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    reference_rows: int = Field(20_000, ge=100, description="rows sampled from each training reference")
    current_rows: int = Field(50_000, ge=100, description="customers sampled from the current snapshot")
    num_method: str = "wasserstein"
    cat_method: str = "jensenshannon"
    drift_threshold: float = Field(0.1, gt=0, description="distance at which a column has drifted")
    drift_share: float = Field(
        0.5, gt=0, le=1, description="share of a task's features drifting that makes the task drifted"
    )
    prediction_threshold: float = Field(0.1, gt=0, description="distance at which a score column drifted")
    realised_rows: int = Field(
        25_000, ge=100, description="customers of a past score output whose realised performance is measured"
    )
    auc_drop: float = Field(0.05, ge=0, description="largest realised AUC drop below the recorded AUC")
    ece_rise: float = Field(0.03, ge=0, description="largest realised ECE rise above the recorded ECE")
    seed: int = 0


# ---- drift (pure: frames in, results out) ---------------------------------------------------------


@dataclass(frozen=True)
class ColumnDrift:
    column: str
    method_name: str
    score: float
    threshold: float
    drifted: bool


@dataclass
class DriftResult:
    """Per-column distances of one comparison; ``widgets`` are Evidently's, for the HTML report."""

    columns: list[ColumnDrift]
    untested: list[str]
    reference_rows: int
    current_rows: int
    widgets: list = field(default_factory=list, repr=False)

    @property
    def drifted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted]

    @property
    def share(self) -> float:
        return len(self.drifted) / len(self.columns) if self.columns else 0.0

    def scores(self) -> dict[str, float]:
        return {c.column: c.score for c in self.columns}


def disable_telemetry() -> None:
    """Evidently reports usage unless told not to; monitoring must not call out."""
    for name, value in TELEMETRY_OFF.items():
        os.environ.setdefault(name, value)


def _comparable(frame: pd.DataFrame, columns: Sequence[str]) -> tuple[pd.DataFrame, list[str], list[str]]:
    """Columns as Evidently should read them: numbers (booleans included) as floats, anything else
    as text categories; also which are categorical."""
    out, categorical = {}, []
    for name in columns:
        values = frame[name]
        if pd.api.types.is_bool_dtype(values) or pd.api.types.is_numeric_dtype(values):
            out[name] = pd.to_numeric(values, errors="coerce").astype("float64")
        else:
            out[name] = (
                values.astype(object).where(values.notna(), None).map(lambda v: None if v is None else str(v))
            )
            categorical.append(name)
    return pd.DataFrame(out, index=frame.index), categorical, [c for c in columns if c not in categorical]


def compare(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    columns: Sequence[str],
    threshold: float,
    num_method: str = "wasserstein",
    cat_method: str = "jensenshannon",
    shown: int = 12,
) -> DriftResult:
    """Per-column drift of ``columns`` between two frames (rows need not align), with Evidently's
    registered stat tests (the ones its ``DataDriftPreset`` runs; missing values left out on both
    sides). A column without a value on either side cannot be compared and is listed in
    ``untested``. Evidently's ``ValueDrift`` widgets are rendered for the ``shown`` columns that
    matter most (drifted first, then the largest distances): a report of every column of every task
    is tens of megabytes and minutes of plotting."""
    from evidently.legacy.calculations.stattests import get_stattest
    from evidently.legacy.core import ColumnType

    disable_telemetry()
    ref, categorical, _ = _comparable(reference, columns)
    cur, _, _ = _comparable(current, columns)
    untested = [c for c in columns if ref[c].notna().sum() == 0 or cur[c].notna().sum() == 0]
    results = []
    for name in (c for c in columns if c not in untested):
        kind = ColumnType.Categorical if name in categorical else ColumnType.Numerical
        method = cat_method if name in categorical else num_method
        left, right = ref[name].dropna(), cur[name].dropna()
        test = get_stattest(left, right, kind, method)
        outcome = test(left, right, kind, threshold)
        score = float(outcome.drift_score)
        results.append(
            ColumnDrift(name, test.name, score, float(outcome.actual_threshold), bool(outcome.drifted))
        )
    result = DriftResult(results, untested, len(ref), len(cur))
    if shown and results:
        first = sorted(results, key=lambda c: (not c.drifted, -c.score))[:shown]
        result.widgets = _widgets(ref, cur, first, categorical)
    return result


def _widgets(
    ref: pd.DataFrame, cur: pd.DataFrame, columns: Sequence[ColumnDrift], categorical: Sequence[str]
) -> list:
    """Evidently's ``ValueDrift`` widgets (distribution plots and distance) of ``columns``."""
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import ValueDrift

    names = [c.column for c in columns]
    definition = DataDefinition(
        numerical_columns=[n for n in names if n not in categorical],
        categorical_columns=[n for n in names if n in categorical],
    )
    report = Report(
        [ValueDrift(column=c.column, method=c.method_name, threshold=c.threshold) for c in columns]
    )
    snapshot = report.run(
        Dataset.from_pandas(cur[names].reset_index(drop=True), data_definition=definition),
        Dataset.from_pandas(ref[names].reset_index(drop=True), data_definition=definition),
    )
    return list(getattr(snapshot, "_widgets", []))


# ---- realised performance (pure) -----------------------------------------------------------------


def _rounded(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: (round(float(v), 6) if v is not None and np.isfinite(v) else None) for k, v in values.items()}


def realised_metrics(
    joined: pd.DataFrame, outputs: Mapping[str, str], segment: str | None = SEGMENT_COLUMN
) -> dict[str, object]:
    """AUC, ECE and top-decile lift of each score column against its matured label (``outputs``:
    label column -> score column), their mean over targets, and the same by ``segment``."""

    def measure(rows: pd.DataFrame) -> dict[str, object]:
        per_target = {}
        for label, output in outputs.items():
            if output not in rows or label not in rows:
                continue
            usable = rows[[label, output]].dropna()
            y, p = usable[label].to_numpy(dtype=float), usable[output].to_numpy(dtype=float)
            per_target[label] = {
                "rows": int(len(y)),
                "auc": m.auc(y, p) if len(y) else float("nan"),
                "ece": m.expected_calibration_error(y, p) if len(y) else float("nan"),
                "lift_top_decile": m.lift_at(y, p, 0.1) if len(y) else float("nan"),
                "positive_rate": float(y.mean()) if len(y) else float("nan"),
            }
        means = {
            name: float(np.nanmean([t[name] for t in per_target.values()]))
            if per_target and any(np.isfinite(t[name]) for t in per_target.values())
            else float("nan")
            for name in ("auc", "ece", "lift_top_decile")
        }
        rows_scored = max((t["rows"] for t in per_target.values()), default=0)
        return {
            "rows": rows_scored,
            **_rounded(means),
            "targets": {k: _rounded(v) for k, v in per_target.items()},
        }

    result = measure(joined)
    if segment and segment in joined:
        result["segments"] = {
            str(name): {k: v for k, v in measure(rows).items() if k != "targets"}
            for name, rows in joined.groupby(segment, sort=True, dropna=True)
        }
    return result


def degraded(
    realised: Mapping[str, object], recorded: Mapping[str, float | None], config: MonitorConfig
) -> list[str]:
    """Why realised performance is worse than recorded beyond the configured slack ([]: it is not)."""
    reasons = []
    auc, auc_then = realised.get("auc"), recorded.get("auc")
    if auc is not None and auc_then is not None and auc < auc_then - config.auc_drop:
        reasons.append(
            f"realised AUC {auc:.3f} is below the recorded {auc_then:.3f} by more than {config.auc_drop}"
        )
    ece, ece_then = realised.get("ece"), recorded.get("ece")
    if ece is not None and ece_then is not None and ece > ece_then + config.ece_rise:
        reasons.append(
            f"realised ECE {ece:.3f} exceeds the recorded {ece_then:.3f} by more than {config.ece_rise}"
        )
    return reasons


def realised_uplift(
    task: str, frame: pd.DataFrame, predicted: pd.DataFrame, actions: Sequence[str], seed: int
) -> dict[str, object]:
    """Each action's Qini, with a bootstrap interval, of a Qini-judged champion on matured logged
    decisions (``frame``: the task's labels, with its label and arm columns; ``predicted``: its
    per-action outputs for the same rows). Actions with fewer treated or control rows than the task
    learns from are listed under ``too_few_rows`` instead."""
    from training.tasks import implementation

    impl = implementation(task)
    min_rows = impl.MIN_ARM_ROWS
    y = frame[impl.LABEL].to_numpy(dtype=int)
    arms = frame[impl.ARM].astype(str).to_numpy()
    measured, too_few = {}, []
    for action in actions:
        column = impl.output(action)
        subset = np.isin(arms, [impl.CONTROL, action])
        treated = arms[subset] == action
        if column not in predicted or treated.sum() < min_rows or (~treated).sum() < min_rows:
            too_few.append(action)
            continue
        score = predicted[column].to_numpy(dtype=float)[subset]
        found = impl.bootstrap_qini(y[subset], treated, {"model": score}, seed)["model"]
        bought = y[subset]
        measured[action] = {
            "treated_rows": int(treated.sum()),
            "control_rows": int((~treated).sum()),
            "observed_uplift": float(bought[treated].mean() - bought[~treated].mean()),
            **_rounded({"qini": found["value"], "qini_low": found["low"], "qini_high": found["high"]}),
        }
    qinis = [row["qini"] for row in measured.values() if row["qini"] is not None]
    return {
        "rows": int(len(frame)),
        "qini": round(float(np.mean(qinis)), 6) if qinis else None,
        "actions": measured,
        "too_few_rows": too_few,
    }


def degraded_uplift(realised: Mapping[str, object], recorded: Mapping[str, float | None]) -> list[str]:
    """Why realised uplift is worse than random targeting ([]: for no action)."""
    reasons = []
    for action, row in realised.get("actions", {}).items():
        high = row.get("qini_high")
        if high is not None and high < 0:
            then = recorded.get(action)
            at_promotion = f"; {then:.4f} at promotion" if then is not None else ""
            reasons.append(
                f"realised Qini of {action} {row['qini']:.4f} (95 % interval {row['qini_low']:.4f} to "
                f"{high:.4f}) is below random targeting{at_promotion}"
            )
    return reasons


# ---- the workspace (I/O) -------------------------------------------------------------------------


def scores_dir(ws: Workspace) -> Path:
    from training.scoring import KEPT_SCORES

    return ws.reports_dir / KEPT_SCORES


@dataclass(frozen=True)
class KeptScores:
    """A ``score`` output kept in ``reports/scores/``: its as-of and the versions that scored it."""

    path: Path
    as_of: pd.Timestamp
    versions: dict[str, str]


def kept_scores(ws: Workspace, until: pd.Timestamp | None = None) -> list[KeptScores]:
    """Kept score outputs (oldest first), at or before ``until`` when given."""
    found = []
    for meta in sorted(scores_dir(ws).glob("scores-*.json")):
        data = json.loads(meta.read_text())
        path = meta.with_suffix(".parquet")
        moment = utc_timestamp(data["as_of"])
        if path.exists() and (until is None or moment <= until):
            found.append(KeptScores(path, moment, {k: str(v) for k, v in data.get("versions", {}).items()}))
    return sorted(found, key=lambda kept: kept.as_of)


@dataclass
class Champion:
    task: str
    model_name: str
    version: str
    tags: dict[str, str]
    model: object
    recorded: dict[str, float | None]


def _recorded_metrics(client, tags: Mapping[str, str]) -> dict[str, float | None]:
    """AUC, ECE and lift the version recorded at training (held-out cutoff), and each target's Qini
    (``qini.<target>``) for a version judged by Qini."""
    metrics = {}
    try:
        metrics = client.get_run(tags["run_id"]).data.metrics if tags.get("run_id") else {}
    except Exception:  # noqa: BLE001 - a missing run leaves the figures unknown, not the monitor broken
        metrics = {}
    lifts = [v for k, v in metrics.items() if k.endswith(".model.lift_top_decile") and np.isfinite(v)]

    def number(value) -> float | None:
        try:
            number_ = float(value)
        except (TypeError, ValueError):
            return None
        return number_ if np.isfinite(number_) else None

    return {
        "auc": number(tags.get("auc_model", metrics.get("auc"))),
        "ece": number(tags.get("ece_model")),
        "lift_top_decile": float(np.mean(lifts)) if lifts else None,
        **{
            f"qini.{key.removesuffix('.model.qini')}": number(value)
            for key, value in metrics.items()
            if key.endswith(".model.qini")
        },
    }


def champions(target, tasks: Iterable[str]) -> dict[str, Champion]:
    """The champion of each task that has one, with its version tags and recorded metrics."""
    from mlflow.exceptions import MlflowException

    from training.tracking import CHAMPION, load_model, tracking_session

    found = {}
    with tracking_session(target) as client:
        for task in tasks:
            name = registry.get(task).model_name
            try:
                version = client.get_model_version_by_alias(name, CHAMPION)
            except MlflowException:
                continue
            tags = dict(version.tags)
            found[task] = Champion(
                task, name, str(version.version), tags, None, _recorded_metrics(client, tags)
            )
    for task, champion in found.items():
        champion.model = load_model(target, task, CHAMPION)
    return found


def _sample(ids: pd.Series, rows: int, seed: int) -> pd.Series:
    if len(ids) <= rows:
        return ids.reset_index(drop=True)
    chosen = np.sort(np.random.default_rng(seed).choice(len(ids), size=rows, replace=False))
    return ids.iloc[chosen].reset_index(drop=True)


def reference_entity(known, cutoffs: Sequence[pd.Timestamp], rows: int, seed: int) -> pd.DataFrame:
    """The training rows' keys: customers known at each cutoff (``known(t)``), sampled to ``rows``."""
    parts = [pd.DataFrame({"customer_id": known(t), "event_timestamp": t}) for t in cutoffs]
    entity = pd.concat(parts, ignore_index=True)
    if len(entity) > rows:
        keep = np.sort(np.random.default_rng(seed).choice(len(entity), size=rows, replace=False))
        entity = entity.iloc[keep].reset_index(drop=True)
    entity["event_timestamp"] = pd.to_datetime(entity["event_timestamp"], utc=True).astype(
        "datetime64[us, UTC]"
    )
    return entity


def recorded_cutoffs(tags: Mapping[str, str]) -> list[pd.Timestamp]:
    """Training cutoffs recorded on a version (``cutoffs_train``: comma-separated dates)."""
    text = tags.get("cutoffs_train") or ""
    cutoffs = [utc_timestamp(day) for day in text.split(",") if day.strip()]
    if not cutoffs:
        raise NothingToMonitor(
            f"the version records no training cutoffs (tag cutoffs_train) for {tags.get('task')}"
        )
    return cutoffs


def held_out_cutoff(tags: Mapping[str, str]) -> pd.Timestamp:
    """The version's held-out evaluation cutoff (``cutoff_test``): its predictions there are what
    the champion scored at training time, the reference of prediction drift."""
    if not tags.get("cutoff_test"):
        raise NothingToMonitor(
            f"the version records no held-out cutoff (tag cutoff_test) for {tags.get('task')}"
        )
    return utc_timestamp(tags["cutoff_test"])


def _model_inputs(model) -> list[str]:
    return list(model.metadata.get_input_schema().input_names())


def score_columns(model) -> list[str]:
    """The model's point outputs (binary heads' probabilities, regression heads' expectations): the
    columns prediction drift compares."""
    spec = model.unwrap_python_model().bundle.spec
    return [head["output"] for head in spec.get("heads", []) if head.get("kind") in ("binary", "regression")]


@dataclass
class TaskReport:
    task: str
    model_name: str
    version: str
    features: DriftResult | None = None
    predictions: DriftResult | None = None
    prediction_source: str | None = None
    performance: list[dict] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        return "alert" if self.reasons else "healthy"


@dataclass
class MonitorResult:
    as_of: pd.Timestamp
    tasks: dict[str, TaskReport]
    config: MonitorConfig
    current_rows: int
    html_path: Path
    json_path: Path
    seconds: float = 0.0
    run_id: str | None = None

    @property
    def status(self) -> str:
        return "alert" if any(t.status == "alert" for t in self.tasks.values()) else "healthy"

    @property
    def exit_code(self) -> int:
        return EXIT_ALERT if self.status == "alert" else EXIT_HEALTHY

    def to_dict(self) -> dict[str, object]:
        """The JSON summary: no customer id, only names, distances and aggregates."""

        def drift(result: DriftResult | None) -> dict[str, object] | None:
            if result is None:
                return None
            return {
                "reference_rows": result.reference_rows,
                "current_rows": result.current_rows,
                "tested": len(result.columns),
                "drifted": result.drifted,
                "share": round(result.share, 6),
                "untested": result.untested,
                "scores": {k: round(v, 6) for k, v in result.scores().items()},
            }

        return {
            "as_of": self.as_of.isoformat(),
            "generated_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "status": self.status,
            "exit_code": self.exit_code,
            "drifted_features": {
                t: (r.features.drifted if r.features else []) for t, r in self.tasks.items()
            },
            "performance": {t: r.performance for t, r in self.tasks.items()},
            "tasks": [
                {
                    "task": r.task,
                    "model": r.model_name,
                    "version": r.version,
                    "status": r.status,
                    "reasons": r.reasons,
                    "notes": r.notes,
                    "feature_drift": drift(r.features),
                    "prediction_drift": {**(drift(r.predictions) or {}), "scores_file": r.prediction_source}
                    if r.predictions
                    else None,
                }
                for r in self.tasks.values()
            ],
            "thresholds": self.config.model_dump(),
            "current_rows": self.current_rows,
            "report": str(self.html_path),
            "seconds": self.seconds,
            "run_id": self.run_id,
        }


def _realised(
    ws: Workspace,
    target,
    moment: pd.Timestamp,
    found: Mapping[str, Champion],
    config: MonitorConfig,
    canonical: Callable[[], dict[str, pd.DataFrame]],
) -> dict[str, list[dict]]:
    """Realised performance of every kept score output whose horizon has passed, per task (the
    version that scored it gives the horizon, the label columns and the recorded metrics;
    ``canonical`` gives the canonical tables known at ``moment``, read once per monitor run)."""
    from mlflow.exceptions import MlflowException

    from training.tasks import implementation
    from training.tracking import tracking_session

    out: dict[str, list[dict]] = {task: [] for task in found}
    kept = kept_scores(ws, moment)
    if not kept:
        return out
    subsets: dict[Path, tuple[pd.DataFrame, dict[str, pd.DataFrame]]] = {}
    models: dict[tuple[str, str], tuple[object, dict, dict]] = {
        (task, c.version): (c.model.unwrap_python_model().bundle.spec, c.tags, c.recorded)
        for task, c in found.items()
    }
    with tracking_session(target) as client:
        for scores in kept:
            for task, version in scores.versions.items():
                if task not in out:
                    continue
                key = (task, version)
                if key not in models:
                    name = registry.get(task).model_name
                    try:
                        tags = dict(client.get_model_version(name, version).tags)
                    except MlflowException:
                        continue
                    models[key] = (None, tags, _recorded_metrics(client, tags))
                _, tags, recorded = models[key]
                horizon = int(tags.get("horizon_days") or registry.get(task).horizon_days)
                if scores.as_of + pd.Timedelta(days=horizon) > moment:
                    continue
                if models[key][0] is None:
                    import mlflow

                    model = mlflow.pyfunc.load_model(f"models:/{registry.get(task).model_name}/{version}")
                    models[key] = (model.unwrap_python_model().bundle.spec, tags, recorded)
                spec = models[key][0]
                if scores.path not in subsets:
                    tables = canonical()
                    frame = pd.read_parquet(scores.path)
                    if len(frame) > config.realised_rows:
                        frame = frame.sample(n=config.realised_rows, random_state=config.seed)
                    chosen = set(frame["customer_id"])
                    subsets[scores.path] = (
                        frame,
                        {name: t.loc[t["customer_id"].isin(chosen)] for name, t in tables.items()},
                    )
                frame, of_sample = subsets[scores.path]
                labels = implementation(task).labels(
                    of_sample, [scores.as_of], horizon, moment, model_spec=spec
                )
                if not labels.outputs:
                    continue  # no binary target (a regression task): AUC, ECE and lift do not apply
                joined = labels.frame.drop(columns=["event_timestamp"]).merge(
                    frame, on="customer_id", how="inner", validate="one_to_one"
                )
                realised = realised_metrics(joined, labels.outputs)
                why = degraded(realised, recorded, config)
                out[task].append(
                    {
                        "scored_as_of": scores.as_of.isoformat(),
                        "version": version,
                        "horizon_days": horizon,
                        "label_window_end": (scores.as_of + pd.Timedelta(days=horizon)).isoformat(),
                        **realised,
                        "at_promotion": _rounded({k: v for k, v in recorded.items() if v is not None}),
                        "degraded": why,
                    }
                )
    return out


def judged_by_qini(task: str) -> bool:
    """Whether a task's realised performance is its uplift on logged decisions, not kept scores."""
    return registry.get(task).gate_metric == "qini"


def _realised_uplift(
    ws: Workspace,
    moment: pd.Timestamp,
    champion: Champion,
    config: MonitorConfig,
    canonical: Callable[[], dict[str, pd.DataFrame]],
) -> tuple[list[dict], list[str]]:
    """Realised uplift of a Qini-judged champion on the decisions logged since its as-of whose label
    window has ended by ``moment``: one performance row, or none and a note saying why."""
    from training import labels as L
    from training.data import task_features
    from training.tasks import implementation

    task = champion.task
    if not champion.tags.get("as_of"):
        return [], ["the version records no as_of, so which decisions it has not seen is unknown"]
    trained = utc_timestamp(champion.tags["as_of"])
    horizon = int(champion.tags.get("horizon_days") or registry.get(task).horizon_days)
    starts = pd.date_range(trained, moment, freq="MS")
    cutoffs = sorted({trained, *(utc_timestamp(t) for t in starts)})
    bundle = champion.model.unwrap_python_model().bundle
    actions = list(bundle.spec.get("uplift_actions") or [])
    try:
        found = implementation(task).labels(canonical(), cutoffs, horizon, moment, model_spec=bundle.spec)
    except L.LabelsUnavailable as why:
        return [], [f"no realised uplift on decisions since {trained.date()}: {why.reason}"]
    frame = found.frame
    if len(frame) > config.realised_rows:
        frame = frame.sample(n=config.realised_rows, random_state=config.seed)
    frame = frame.reset_index(drop=True)
    features = task_features(ws, frame[list(KEYS)], [task])[task]
    predicted = champion.model.predict(features[_model_inputs(champion.model)].reset_index(drop=True))
    realised = realised_uplift(task, frame, predicted, actions, config.seed)
    recorded = {action: champion.recorded.get(f"qini.{action}") for action in actions}
    then = [v for v in recorded.values() if v is not None]
    row = {
        "decided_since": trained.isoformat(),
        "version": champion.version,
        "horizon_days": horizon,
        "label_window_end": moment.isoformat(),
        "rows": realised["rows"],
        "auc": None,
        "ece": None,
        "qini": realised["qini"],
        "actions": realised["actions"],
        "too_few_rows": realised["too_few_rows"],
        "at_promotion": {
            **_rounded({"qini": float(np.mean(then)) if then else None}),
            "actions": _rounded(recorded),
        },
        "degraded": degraded_uplift(realised, recorded),
    }
    notes = []
    if realised["too_few_rows"]:
        notes.append(
            f"too few decisions since {trained.date()} to measure the uplift of "
            f"{', '.join(realised['too_few_rows'])} (fewer than {implementation(task).MIN_ARM_ROWS} "
            "treated or control)"
        )
    return [row], notes


def monitor_workspace(
    ws: Workspace,
    as_of: datetime | pd.Timestamp | None = None,
    tasks: Sequence[str] | None = None,
    config: MonitorConfig | None = None,
    tracking_uri: str | None = None,
    log: bool = True,
) -> MonitorResult:
    """Monitor every champion (or ``tasks``) as of ``as_of`` (default: the features' as-of), write
    ``reports/monitor-<as-of>.html`` and ``.json`` and (``log``) a run of ``cx-monitoring``.
    Raises ``NothingToMonitor`` when no task has a champion."""
    from training.data import default_as_of, known_customers, load_tables, prepare_store, task_features
    from training.project import project_run
    from training.tracking import predict_params, resolve_tracking

    began = time.perf_counter()
    disable_telemetry()
    config = config or MonitorConfig()
    moment = utc_timestamp(as_of) if as_of is not None else default_as_of(ws)
    names = list(tasks) if tasks else list(registry.names())
    with project_run(ws):
        target = resolve_tracking(ws, tracking_uri)
        found = champions(target, names)
        if not found:
            raise NothingToMonitor(
                f"no task among {', '.join(names)} has a champion: run `cxpredict train` first"
            )
        prepare_store(ws)
        known = cache(lambda t: known_customers(ws, t))
        current_ids = _sample(known(moment), config.current_rows, config.seed)
        if current_ids.empty:
            raise NothingToMonitor(f"no customer is known at {moment.date()}: nothing to compare")
        entity = pd.DataFrame({"customer_id": current_ids, "event_timestamp": moment})
        current = task_features(ws, entity, list(found))
        latest = kept_scores(ws, moment)
        latest = latest[-1] if latest else None
        latest_frame = pd.read_parquet(latest.path) if latest else None
        if latest_frame is not None and len(latest_frame) > config.current_rows:
            latest_frame = latest_frame.sample(n=config.current_rows, random_state=config.seed)
        reports = {}
        for task, champion in found.items():
            report = TaskReport(task, champion.model_name, champion.version)
            inputs = _model_inputs(champion.model)
            reference = task_features(
                ws,
                reference_entity(known, recorded_cutoffs(champion.tags), config.reference_rows, config.seed),
                [task],
            )[task]
            columns = [c for c in inputs if c in reference and c in current[task]]
            missing = sorted(set(inputs) - set(columns))
            if missing:
                report.reasons.append(f"features the champion was trained on are missing now: {missing}")
            report.features = compare(
                reference,
                current[task],
                columns,
                config.drift_threshold,
                config.num_method,
                config.cat_method,
            )
            if report.features.columns and report.features.share >= config.drift_share:
                report.reasons.append(
                    f"{len(report.features.drifted)} of {len(report.features.columns)} features drifted "
                    f"(share {report.features.share:.2f} >= {config.drift_share})"
                )
            if latest_frame is not None:
                held_out = task_features(
                    ws,
                    reference_entity(
                        known, [held_out_cutoff(champion.tags)], config.reference_rows, config.seed
                    ),
                    [task],
                )[task]
                # the reference predicted for the latest scores' window: a season is not drift
                trained = champion.model.predict(
                    held_out[inputs].reset_index(drop=True), params=predict_params(latest.as_of)
                )
                outputs = [c for c in score_columns(champion.model) if c in latest_frame and c in trained]
                report.prediction_source = latest.path.name
                report.predictions = compare(trained, latest_frame, outputs, config.prediction_threshold)
                if latest.versions.get(task) != champion.version:
                    # Another model's scores say nothing about this one's drift: shown, not alarmed.
                    report.notes.append(
                        f"{latest.path.name} was scored by version {latest.versions.get(task, '?')}, "
                        f"not the champion {champion.version}: run `cxpredict score` to check its drift"
                    )
                elif report.predictions.drifted:
                    report.reasons.append(f"scores drifted: {', '.join(report.predictions.drifted)}")
            else:
                report.notes.append(
                    "no kept score output at or before as-of: run `cxpredict score` for prediction drift"
                )
            reports[task] = report
        canonical = cache(lambda: load_tables(ws, moment))
        by_scores = {task: c for task, c in found.items() if not judged_by_qini(task)}
        for task, champion in found.items():
            if task in by_scores:
                continue
            rows, notes = _realised_uplift(ws, moment, champion, config, canonical)
            reports[task].performance = rows
            reports[task].notes += notes
            reports[task].reasons += [
                f"decisions since {row['decided_since'][:10]}: {why}"
                for row in rows
                for why in row["degraded"]
            ]
        for task, rows in _realised(ws, target, moment, by_scores, config, canonical).items():
            reports[task].performance = rows
            for row in rows:
                if row["version"] != found[task].version and row["degraded"]:
                    reports[task].notes.append(
                        f"scores of {row['scored_as_of'][:10]} by version {row['version']}, no longer "
                        f"champion: {'; '.join(row['degraded'])}"
                    )
                    continue
                reports[task].reasons += [
                    f"scores of {row['scored_as_of'][:10]}: {why}" for why in row["degraded"]
                ]
            if not rows:
                reports[task].notes.append("no kept score output whose horizon has passed by as-of")
        stamp = moment.date().isoformat()
        result = MonitorResult(
            moment,
            reports,
            config,
            len(current_ids),
            ws.reports_dir / f"monitor-{stamp}.html",
            ws.reports_dir / f"monitor-{stamp}.json",
        )
        result.seconds = round(time.perf_counter() - began, 2)
        write_reports(result)
        if log:
            result.run_id = log_run(target, result)
            write_reports(result, html=False)
    return result


# ---- outputs -------------------------------------------------------------------------------------


def summary_markdown(result: MonitorResult) -> str:
    lines = [
        f"**Status: {result.status}** as of {result.as_of.date()} "
        f"({result.current_rows} current customers sampled; thresholds: distance {result.config.drift_threshold}, "
        f"drift share {result.config.drift_share}, AUC drop {result.config.auc_drop})",
        "",
        "| task | version | status | features drifted | scores drifted | realised AUC (recorded) "
        "| realised Qini (recorded) |",
        "|---|---|---|---|---|---|---|",
    ]
    for report in result.tasks.values():
        features = report.features
        drifted = f"{len(features.drifted)} of {len(features.columns)}" if features else "-"
        scores = ", ".join(report.predictions.drifted) or "none" if report.predictions else "-"
        perf = report.performance[-1] if report.performance else None
        auc = (
            f"{perf['auc']} ({perf['at_promotion'].get('auc')})" if perf and perf["auc"] is not None else "-"
        )
        qini = f"{perf['qini']} ({perf['at_promotion'].get('qini')})" if perf and "qini" in perf else "-"
        lines.append(
            f"| {report.task} | {report.version} | {report.status} | {drifted} | {scores} | {auc} | {qini} |"
        )
    for report in result.tasks.values():
        for reason in report.reasons:
            lines.append(f"- {report.task}: {reason}")
    return "\n".join(lines)


def render_html(result: MonitorResult) -> str:
    """One page: the summary, then Evidently's drift widgets per task."""
    from evidently.core.metric_types import render_widgets
    from evidently.legacy.renderers.html_widgets import group_widget, text_widget

    widgets = [text_widget(title="CX Predict monitor", text=summary_markdown(result))]
    for report in result.tasks.values():
        if report.features is not None and report.features.widgets:
            widgets.append(group_widget(title=f"{report.task}: feature drift (training reference vs current)",
                                        widgets=report.features.widgets))  # fmt: skip
        if report.predictions is not None and report.predictions.widgets:
            widgets.append(group_widget(title=f"{report.task}: prediction drift ({report.prediction_source})",
                                        widgets=report.predictions.widgets))  # fmt: skip
    return render_widgets(widgets, as_iframe=False)


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial")
    scratch.write_text(text, encoding="utf-8")
    scratch.replace(path)


def write_reports(result: MonitorResult, html: bool = True) -> None:
    """The JSON report and (``html``) the HTML report, each written to a scratch name and renamed
    into place, so a reader (the service's gauges) never sees half a file."""
    if html:
        _write(result.html_path, render_html(result))
    _write(result.json_path, json.dumps(result.to_dict(), indent=2, allow_nan=False, default=str))


def drift_figure(report: TaskReport, top: int = 25):
    """Bar chart of the largest feature distances against the threshold."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    columns = sorted(report.features.columns, key=lambda c: -c.score)[:top]
    figure = Figure(figsize=(7, max(2.5, 0.25 * len(columns) + 1)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh([c.column for c in columns][::-1], [c.score for c in columns][::-1],
              color=["#c0392b" if c.drifted else "#2e86c1" for c in columns][::-1])  # fmt: skip
    if columns:
        axes.axvline(columns[0].threshold, color="black", linestyle="--", linewidth=1)
    axes.set_xlabel(f"distance ({columns[0].method_name if columns else ''})")
    axes.set_title(f"{report.task} v{report.version}: feature drift")
    figure.tight_layout()
    return figure


def log_run(target, result: MonitorResult) -> str:
    """A run of ``cx-monitoring``: thresholds as params, distances and realised figures as metrics,
    the reports and drift plots as artifacts."""
    import mlflow

    from training.tracking import ensure_experiment, tracking_session

    with tracking_session(target) as client:
        experiment = ensure_experiment(client, EXPERIMENT, target.artifact_root)
        stamp = result.as_of.date().isoformat()
        with mlflow.start_run(experiment_id=experiment, run_name=f"monitor-{stamp}") as run:
            mlflow.set_tags({"as_of": result.as_of.isoformat(), "status": result.status})
            mlflow.log_params({**{k: str(v) for k, v in result.config.model_dump().items()},
                               "as_of": result.as_of.isoformat(), "current_rows": str(result.current_rows),
                               **{f"{t}.version": r.version for t, r in result.tasks.items()}})  # fmt: skip
            values: dict[str, float] = {"alert": float(result.status == "alert")}
            for task, report in result.tasks.items():
                if report.features is not None:
                    values[f"{task}.drifted_features"] = float(len(report.features.drifted))
                    values[f"{task}.drift_share"] = report.features.share
                    values[f"{task}.max_feature_distance"] = max(
                        report.features.scores().values(), default=0.0
                    )
                    if report.features.columns:
                        mlflow.log_figure(drift_figure(report), f"plots/{task}_feature_drift.png")
                if report.predictions is not None:
                    for column, score in report.predictions.scores().items():
                        values[f"{task}.prediction_distance.{column}"] = score
                if report.performance:
                    latest = report.performance[-1]
                    for name in ("auc", "ece", "lift_top_decile", "qini"):
                        if latest.get(name) is not None:
                            values[f"{task}.realised_{name}"] = float(latest[name])
            mlflow.log_metrics({k: v for k, v in values.items() if np.isfinite(v)})
            mlflow.log_artifact(str(result.html_path))
            mlflow.log_artifact(str(result.json_path))
            return run.info.run_id


def latest_summary(ws: Workspace) -> dict | None:
    """The newest monitor JSON report in ``reports/`` (by as-of, then by time written), or None.
    What the service exports as gauges; a report being replaced is never read half-written."""
    found = sorted(ws.reports_dir.glob("monitor-*.json"), key=lambda p: (p.name, p.stat().st_mtime))
    for path in reversed(found):
        try:
            return json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
    return None
