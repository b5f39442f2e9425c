"""The I/O edge of training: what ``cxpredict train | evaluate | score`` do with a workspace.

- :func:`load_tables` reads the canonical tables *as of* a moment: rows after it are filtered out
  while reading (never loaded), and only the columns labels need are read.
- :func:`feast_features_for` is the point-in-time retrieval the pipeline expects, through the
  workspace's Feast registry (one FeatureService per task, named like the task).
- :func:`truth_oracle_for` adapts the generated world's exact oracle (``<ws>/truth`` only; used for
  evaluation, never for fitting).
- :func:`train_workspace`, :func:`evaluate_workspace` and :func:`score_workspace` orchestrate.

Task names: the command line says ``next-purchase`` / ``unmet-needs``; the code, the Feast
services and the MLflow tags say ``next_purchase`` / ``unmet_needs`` (:func:`parse_tasks`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pandas as pd
import pyarrow.dataset as pads
import pyarrow.parquet as pq

from cxpredict.settings import Workspace
from features.catalog import canonical_manifest, current_version
from features.contract import pandas_types
from training import labels as L
from training import metrics as m
from training.config import TASKS, Horizons, Task, TrainConfig
from training.cutoffs import plan_cutoffs, utc_timestamp
from training.datasets import FeaturesFor, OracleFor
from training.pipeline import TrainResult, train
from training.tracking import (
    CHAMPION,
    EXPERIMENTS,
    FEATURE_SERVICES,
    TrackingTarget,
    data_hash,
    ensure_experiment,
    load_model,
    resolve_tracking,
    tracking_session,
    version_info,
)

CLI_TASKS: dict[str, Task] = {"churn": "churn", "next-purchase": "next_purchase", "unmet-needs": "unmet_needs"}
LABEL_COLUMNS: dict[str, tuple[str, ...]] = {
    "customers": ("customer_id", "signup_at"),
    "transactions": ("customer_id", "timestamp", "amount", "category"),
    "events": ("customer_id", "timestamp", "event_type", "category"),
    "support_tickets": ("customer_id", "opened_at", "resolved_at"),
    "surveys": ("customer_id", "timestamp"),
    "marketing": ("customer_id", "timestamp"),
    "consents": ("customer_id", "timestamp"),
}
"""Columns read per source: what labels and "known at t" need, nothing more (no identifiers)."""
SCORE_FORMATS = (".parquet", ".csv")
BASE_OUTPUTS = ("churn_probability", "purchase_probability", "expected_days_to_purchase")
NO_CONSENT = "no profiling consent"


class FeaturesNotReady(RuntimeError):
    """The feature snapshots or the Feast registry do not cover what a command needs."""


def parse_tasks(name: str) -> tuple[Task, ...]:
    """``churn`` | ``next-purchase`` | ``unmet-needs`` | ``all`` (underscores accepted) -> tasks."""
    key = name.strip().lower().replace("_", "-")
    if key == "all":
        return TASKS
    if key not in CLI_TASKS:
        raise ValueError(f"unknown task {name!r}: choose {', '.join([*CLI_TASKS, 'all'])}")
    return (CLI_TASKS[key],)


def cli_name(task: str) -> str:
    return task.replace("_", "-")


# --------------------------------------------------------------------------- reading the workspace


def _canonical_folder(ws: Workspace) -> Path:
    folder = current_version(ws)
    if folder is None:
        raise FileNotFoundError(f"no canonical data in {ws.canonical_dir}: run `cxpredict ingest` first")
    return folder


def supplied_sources(ws: Workspace) -> dict[str, list[str]]:
    """Canonical sources present, with the contract columns their files actually supplied."""
    folder = _canonical_folder(ws)
    manifest = canonical_manifest(ws)
    present = {source for source in LABEL_COLUMNS if (folder / f"{source}.parquet").exists()}
    if manifest is None:
        return {source: list(LABEL_COLUMNS[source]) for source in sorted(present)}
    return {source: manifest.supplied(source) for source in sorted(present) if manifest.has(source)}


def load_tables(ws: Workspace, as_of: datetime | pd.Timestamp) -> dict[str, pd.DataFrame]:
    """Canonical tables as known at ``as_of``: facts with time <= as_of (customers: signup unknown or
    <= as_of), filtered in the Parquet scan so later rows are never read. Columns never supplied are
    left out, so a feature or label that needs them is absent rather than built from nulls."""
    folder = _canonical_folder(ws)
    moment = utc_timestamp(as_of).to_pydatetime()
    tables: dict[str, pd.DataFrame] = {}
    for source, supplied in supplied_sources(ws).items():
        columns = [c for c in LABEL_COLUMNS[source] if c in supplied]
        time_column = L.TIME_COLUMNS[source]
        if "customer_id" not in columns or (source != "customers" and time_column not in columns):
            continue
        keep = None
        if time_column in columns:
            field = pads.field(time_column)
            keep = (field <= moment) | field.is_null() if source == "customers" else field <= moment
        table = pq.read_table(folder / f"{source}.parquet", columns=columns, filters=keep)
        tables[source] = pandas_types(table)
    return tables


def feature_manifest(ws: Workspace):
    from features.feature_repo.definitions import load_manifest

    try:
        return load_manifest(ws.features_dir)
    except FileNotFoundError as error:
        raise FeaturesNotReady(f"{error}: run `cxpredict features` first") from error


def default_as_of(ws: Workspace) -> pd.Timestamp:
    """The moment the workspace's features were built for: the latest complete view of the data."""
    return utc_timestamp(feature_manifest(ws).as_of)


def check_snapshots(ws: Workspace, cutoffs: Sequence[pd.Timestamp]) -> None:
    """Every cutoff must be a feature snapshot time, else its features would be stale or missing."""
    built = {utc_timestamp(moment) for moment in feature_manifest(ws).snapshots}
    missing = [t for t in cutoffs if utc_timestamp(t) not in built]
    if missing:
        raise FeaturesNotReady(
            "no feature snapshot at cutoff(s) "
            + ", ".join(t.date().isoformat() for t in missing)
            + f": run `cxpredict features --as-of <date>` so that its 12 monthly snapshots cover them"
        )


def prepare_store(ws: Workspace) -> None:
    """Register the current feature manifest in Feast (idempotent), so retrieval sees every view."""
    from features.store import apply_repo

    feature_manifest(ws)
    apply_repo(ws)


def feast_features_for(ws: Workspace) -> FeaturesFor:
    """``features_for(entity_df, task)``: Feast point-in-time features of the task's FeatureService.

    Uses ``get_training_features_fast``: the same rows and values as Feast's own
    ``get_historical_features`` (checked in the tests), about 3x faster, and exactly the service's
    features (Feast's join also returns on-demand inputs from views outside the service).
    """
    from features.store import get_training_features_fast

    def features_for(entity_df: pd.DataFrame, task: str) -> pd.DataFrame:
        return get_training_features_fast(ws, entity_df, FEATURE_SERVICES[task])

    return features_for


def service_features(ws: Workspace, entity_df: pd.DataFrame, tasks: Sequence[str]) -> dict[str, pd.DataFrame]:
    """Point-in-time features of several tasks' FeatureServices for the same entity rows.

    The same rule and values as ``get_training_features_fast`` per service (checked in the tests),
    but each feature view is joined once for all services (they share most views): scoring
    1,000,000 customers needs 7 view joins instead of ~20. Returns ``{task: entity columns +
    that service's features}``.
    """
    from features.feature_repo.definitions import REQUEST_TIME
    from features.store import open_store, point_in_time_join

    store = open_store(ws)
    services = {task: store.get_feature_service(FEATURE_SERVICES[task]) for task in tasks}
    odfvs = {view.name: view for view in store.list_on_demand_feature_views()}
    wanted: dict[str, list[str]] = {}
    for service in services.values():
        for projection in service.feature_view_projections:
            inputs = (
                odfvs[projection.name].source_feature_view_projections.values()
                if projection.name in odfvs else [projection]
            )
            for source in inputs:
                names = wanted.setdefault(source.name, [])
                names += [f.name for f in source.features if f.name not in names]
    stamps, stored = point_in_time_join(store, wanted, entity_df)
    derived: dict[str, pd.DataFrame] = {}
    base = entity_df.reset_index(drop=True).assign(event_timestamp=stamps)
    out = {}
    for task, service in services.items():
        values: dict[str, np.ndarray] = {}
        for projection in service.feature_view_projections:
            if projection.name in odfvs:
                if projection.name not in derived:
                    odfv = odfvs[projection.name]
                    needed = [f.name for s in odfv.source_feature_view_projections.values() for f in s.features]
                    derived[projection.name] = odfv.feature_transformation.udf(
                        stored[needed].assign(**{REQUEST_TIME: stamps})
                    )
                frame = derived[projection.name]
            else:
                frame = stored
            values.update({f.name: frame[f.name].to_numpy() for f in projection.features})
        new = {name: column for name, column in values.items() if name not in base.columns}
        out[task] = pd.concat([base, pd.DataFrame(new, index=base.index)], axis=1)
    return out


def has_truth(ws: Workspace) -> bool:
    return (ws.truth_dir / "world.json").is_file()


def truth_oracle_for(ws: Workspace, horizons: Horizons, transactions_only_churn: bool) -> OracleFor | None:
    """The generated world's oracle as ``oracle(entity_df, task)``, or None without ``<ws>/truth``.

    Returns, per entity row, the exact probability of each label column (``churn``, ``purchase``,
    ``need_<k>``) over the task's horizon. Only the latest cutoff of ``entity_df`` (the held-out
    evaluation cutoff, the only one the pipeline compares with) is computed; other rows are NaN.
    ``transactions_only_churn``: the churn label is "no purchase" (no events source).
    """
    if not has_truth(ws):
        return None
    from features.synthetic import load_truth, oracle_probabilities

    truth = load_truth(ws)
    cache: dict[tuple[pd.Timestamp, int], pd.DataFrame] = {}

    def probabilities(cutoff: pd.Timestamp, horizon: int) -> pd.DataFrame:
        if (cutoff, horizon) not in cache:
            cache[(cutoff, horizon)] = oracle_probabilities(truth, cutoff.to_pydatetime(), horizon)
        return cache[(cutoff, horizon)]

    def oracle(entity_df: pd.DataFrame, task: str) -> pd.DataFrame:
        stamps = pd.to_datetime(entity_df["event_timestamp"], utc=True)
        latest = utc_timestamp(stamps.max())
        exact = probabilities(latest, horizons.of(task))
        if task == "churn":
            chosen = exact[["customer_id"]].assign(churn=exact["churn_txn_only" if transactions_only_churn else "churn"])
        elif task == "next_purchase":
            chosen = exact[["customer_id", "purchase"]]
        else:
            needs = [c for c in exact.columns if c.startswith("need_")]
            chosen = exact[["customer_id", *needs]].rename(columns={c: L.need_column(c[5:]) for c in needs})
        chosen = chosen.assign(customer_id=chosen["customer_id"].astype(object), event_timestamp=latest)
        keys = entity_df[["customer_id", "event_timestamp"]].assign(
            customer_id=entity_df["customer_id"].astype(object), event_timestamp=stamps.astype("datetime64[us, UTC]")
        )
        chosen["event_timestamp"] = chosen["event_timestamp"].astype("datetime64[us, UTC]")
        return keys.merge(chosen, on=L.KEYS, how="left")

    return oracle


# --------------------------------------------------------------------------- MLflow projects


def workspace_tracking_uri(ws: Workspace) -> str:
    """The workspace's own SQLite tracking URI (as ``training.tracking.resolve_tracking`` builds it)."""
    return f"sqlite:///{(ws.mlflow_dir / 'mlflow.db').as_posix()}"


@contextmanager
def project_run(ws: Workspace) -> Iterator[tuple[str | None, str | None]]:
    """Yield ``(run_id, tracking_uri)`` of the run ``mlflow run`` started for this command, if any.

    Why: ``mlflow run`` exports ``MLFLOW_RUN_ID`` (and ``MLFLOW_TRACKING_URI``); left in place, the
    first ``mlflow.start_run`` would resume that run in the Default experiment instead of opening a
    run in the task's experiment. So both variables are withheld for the duration; when the URI is
    the workspace's own store, runs go there with artifacts inside the workspace, as without
    ``mlflow run``. Everything is restored on exit.
    """
    names = ("MLFLOW_RUN_ID", "MLFLOW_EXPERIMENT_ID", "MLFLOW_TRACKING_URI")
    saved = {name: os.environ.get(name) for name in names}
    run_id, uri = saved["MLFLOW_RUN_ID"], saved["MLFLOW_TRACKING_URI"]
    os.environ.pop("MLFLOW_RUN_ID", None)
    os.environ.pop("MLFLOW_EXPERIMENT_ID", None)
    if run_id is not None and uri == workspace_tracking_uri(ws):
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    try:
        yield run_id, uri
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def link_project_run(run_id: str, tracking_uri: str | None, results: Mapping[str, TrainResult]) -> None:
    """Record on the ``mlflow run`` run which task runs and model versions the command produced."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    for task, result in results.items():
        client.set_tag(run_id, f"cxpredict.{task}.status", result.status)
        if result.run_id:
            client.set_tag(run_id, f"cxpredict.{task}.run_id", result.run_id)
            client.set_tag(run_id, f"cxpredict.{task}.model", f"{result.model_name}/{result.model_version}")
        for model, value in result.headline().items():
            if np.isfinite(value):
                client.log_metric(run_id, f"{task}.auc_{model}", float(value))


# --------------------------------------------------------------------------- train


def train_workspace(
    ws: Workspace,
    tasks: Sequence[Task] = TASKS,
    as_of: datetime | pd.Timestamp | None = None,
    horizon_days: int | None = None,
    tune_trials: int = 0,
    progress: Any = None,
    tracking: Workspace | Path | str | None = None,
    **config_overrides: Any,
) -> dict[str, TrainResult]:
    """Train, log and register ``tasks`` on the workspace's data as of ``as_of``.

    ``as_of`` defaults to the features' as_of; ``horizon_days`` (when given) applies to every task.
    Canonical tables are read up to ``as_of`` only; features come from Feast at each cutoff; the
    oracle joins the evaluation when the workspace holds a generated world's truth. Runs go to
    ``tracking`` (default: ``MLFLOW_TRACKING_URI``, else the workspace's SQLite store).
    """
    moment = utc_timestamp(as_of) if as_of is not None else default_as_of(ws)
    horizons = Horizons(**{task: horizon_days for task in TASKS}) if horizon_days else Horizons()
    config = TrainConfig(
        as_of=moment.to_pydatetime(), horizons=horizons, tasks=tuple(tasks), tune_trials=tune_trials,
        **config_overrides,
    )
    for task in config.tasks:
        check_snapshots(ws, plan_cutoffs(
            moment, horizons.of(task), config.n_cutoffs, config.cutoff_step_months,
            config.align_cutoffs_to_month_start,
        ).all)
    prepare_store(ws)
    tables = load_tables(ws, moment)
    oracle = truth_oracle_for(ws, horizons, transactions_only_churn="events" not in tables)
    with project_run(ws) as (parent, parent_uri):
        results = train(
            tracking if tracking is not None else ws, tables, feast_features_for(ws), config, oracle,
            progress=progress, data_hash_=data_hash(tables),
        )
    if parent is not None:
        link_project_run(parent, parent_uri, results)
    return results


def binary_targets(metrics: pd.DataFrame) -> list[str]:
    """Targets of a metrics table that have AUCs (binary heads)."""
    return sorted(metrics.loc[metrics["metric"] == "auc", "target"].unique())


def summary_table(metrics: pd.DataFrame, models: Sequence[str] = ("model", "rf_heuristic", "logistic", "oracle")) -> pd.DataFrame:
    """Model vs baselines vs oracle on the binary targets (means over targets, e.g. over needs):
    rows = models present, columns auc, pr_auc, ece, brier, rows and the AUC ratio to the oracle."""
    binary = metrics.loc[metrics["target"].isin(binary_targets(metrics))]
    wide = binary.pivot_table(index="model", columns="metric", values="value", aggfunc="mean")
    wide = wide.reindex([name for name in models if name in wide.index])
    table = wide.reindex(columns=["auc", "pr_auc", "ece", "brier", "rows"])
    if "oracle" in table.index:
        table["auc_ratio_to_oracle"] = table["auc"] / table.loc["oracle", "auc"]
    return table


# --------------------------------------------------------------------------- evaluate


@dataclass
class Evaluation:
    """A registered model version re-evaluated on one held-out cutoff."""

    task: str
    status: str  # "evaluated" | "missing"
    alias: str
    version: str | None = None
    cutoff: pd.Timestamp | None = None
    metrics: pd.DataFrame | None = None
    run_id: str | None = None
    reason: str | None = None


def evaluation_labels(
    task: str, tables: Mapping[str, pd.DataFrame], cutoff: pd.Timestamp, horizon: int, as_of: pd.Timestamp,
    needs: Sequence[str] = (),
) -> tuple[pd.DataFrame, dict[str, str]]:
    """Labels of one task at one cutoff; ``{target: model output column}`` of its binary heads."""
    if task == "churn":
        return L.churn_labels(tables, [cutoff], horizon, as_of), {"churn": "churn_probability"}
    if task == "next_purchase":
        return L.next_purchase_labels(tables, [cutoff], horizon, as_of), {"purchase": "purchase_probability"}
    frame, columns = L.unmet_needs_labels(tables, [cutoff], horizon, as_of, needs=list(needs))
    return frame, {column: f"{column}_probability" for column in columns.values()}


def score_targets(
    frame: pd.DataFrame, predicted: pd.DataFrame, outputs: Mapping[str, str], oracle: pd.DataFrame | None
) -> pd.DataFrame:
    """Long metrics table (target, model, metric, value) of predictions (and the oracle) vs labels."""
    rows = []
    for target, output in outputs.items():
        y = frame[target].to_numpy(dtype=np.int64)
        scores = {"model": m.binary_metrics(y, predicted[output].to_numpy(dtype=float))}
        if oracle is not None and target in oracle and oracle[target].notna().all():
            scores["oracle"] = m.binary_metrics(y, oracle[target].to_numpy(dtype=float))
            scores["model"]["auc_ratio_to_oracle"] = m.with_oracle(scores["model"], scores["oracle"])[
                "auc_ratio_to_oracle"
            ]
        rows += [(target, name, metric, float(value)) for name, values in scores.items() for metric, value in values.items()]
    return pd.DataFrame(rows, columns=["target", "model", "metric", "value"])


def _log_evaluation(target: TrackingTarget, result: Evaluation, horizon: int, as_of: pd.Timestamp) -> str:
    import mlflow

    assert result.cutoff is not None and result.metrics is not None

    with tracking_session(target) as client:
        experiment_id = ensure_experiment(client, EXPERIMENTS[result.task], target.artifact_root)
        name = f"evaluate-{result.task}-v{result.version}-{result.cutoff.date()}"
        tags = {"kind": "evaluation", "task": result.task, "model_version": str(result.version), "alias": result.alias}
        with mlflow.start_run(experiment_id=experiment_id, run_name=name, tags=tags) as run:
            mlflow.log_params({
                "cutoff": result.cutoff.isoformat(), "horizon_days": str(horizon), "as_of": as_of.isoformat(),
                "model_version": str(result.version), "alias": result.alias,
            })
            mlflow.log_metrics({
                f"{row.target}.{row.model}.{row.metric}": row.value
                for row in result.metrics.itertuples(index=False) if np.isfinite(row.value)
            })
            mlflow.log_text(result.metrics.to_csv(index=False), "metrics.csv")
            return run.info.run_id


def evaluate_workspace(
    ws: Workspace,
    tasks: Sequence[Task] = TASKS,
    alias: str = CHAMPION,
    as_of: datetime | pd.Timestamp | None = None,
    tracking: Workspace | Path | str | None = None,
    log: bool = True,
) -> dict[str, Evaluation]:
    """Re-evaluate ``models:/cx-<task>@<alias>`` on the latest complete cutoff before ``as_of``
    (default: the features' as_of): labels from canonical tables up to ``as_of``, features from
    Feast at the cutoff, against the oracle when the workspace has a truth. Logged as an
    ``evaluate-…`` run in the task's experiment when ``log``."""
    with project_run(ws):
        return _evaluate(ws, tasks, alias, as_of, tracking, log)


def _evaluate(
    ws: Workspace,
    tasks: Sequence[Task],
    alias: str,
    as_of: datetime | pd.Timestamp | None,
    tracking: Workspace | Path | str | None,
    log: bool,
) -> dict[str, Evaluation]:
    target = resolve_tracking(tracking if tracking is not None else ws)
    moment = utc_timestamp(as_of) if as_of is not None else default_as_of(ws)
    found = {task: version_info(target, task, alias) for task in tasks}
    results: dict[str, Evaluation] = {
        task: Evaluation(task, "missing", alias, reason=f"no version of {EXPERIMENTS[task]} has alias {alias!r}")
        for task, info in found.items() if info is None
    }
    if len(results) == len(tasks):
        return results
    prepare_store(ws)
    tables = load_tables(ws, moment)
    features_for = feast_features_for(ws)
    horizons = Horizons(**{task: int(info["horizon_days"]) for task, info in found.items() if info is not None})
    oracle = truth_oracle_for(ws, horizons, "events" not in tables)
    for task, info in found.items():
        if info is None:
            continue
        horizon = horizons.of(task)
        cutoff = plan_cutoffs(moment, horizon, 3).test
        check_snapshots(ws, [cutoff])
        model = load_model(target, task, alias)
        needs = model.unwrap_python_model().bundle.spec.get("needs", {}) if task == "unmet_needs" else {}
        frame, outputs = evaluation_labels(task, tables, cutoff, horizon, moment, list(needs))
        features = features_for(frame[L.KEYS].copy(), task)
        predicted = model.predict(features[model.metadata.get_input_schema().input_names()])
        exact = None if oracle is None else oracle(frame[L.KEYS], task)
        result = Evaluation(task, "evaluated", alias, info["version"], cutoff,
                            score_targets(frame, predicted, outputs, exact))
        if log:
            result.run_id = _log_evaluation(target, result, horizon, moment)
        results[task] = result
    return {task: results[task] for task in tasks}


# --------------------------------------------------------------------------- score


@dataclass
class ScoreSummary:
    """What ``score`` wrote."""

    path: Path
    customers: int
    not_scored: int
    versions: dict[str, str]
    columns: list[str]
    seconds: float


def known_customers(ws: Workspace, as_of: datetime | pd.Timestamp) -> pd.Series:
    """Customer ids first seen (sign-up or any fact) strictly before ``as_of``, sorted.

    One DuckDB scan of the id and time columns of every canonical source, filtered by time.
    """
    folder = _canonical_folder(ws)
    moment = utc_timestamp(as_of).to_pydatetime()
    parts = [
        f"SELECT customer_id FROM read_parquet('{(folder / f'{source}.parquet').as_posix()}') "
        f"WHERE {L.TIME_COLUMNS[source]} < $moment"
        for source, supplied in supplied_sources(ws).items()
        if "customer_id" in supplied and L.TIME_COLUMNS[source] in supplied
    ]
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        ids = connection.execute(
            f"SELECT DISTINCT customer_id FROM ({' UNION ALL '.join(parts)}) ORDER BY 1", {"moment": moment}
        ).fetchnumpy()["customer_id"]
    return pd.Series(np.asarray(ids, dtype=object), name="customer_id")


def withheld_consent(ws: Workspace, as_of: datetime | pd.Timestamp) -> set[str]:
    """Customers whose latest profiling-consent record at or before ``as_of`` is a refusal."""
    supplied = supplied_sources(ws).get("consents", [])
    if not {"customer_id", "timestamp", "purpose", "granted"} <= set(supplied):
        return set()
    path = (_canonical_folder(ws) / "consents.parquet").as_posix()
    with duckdb.connect() as connection:
        connection.execute("SET TimeZone = 'UTC'")
        rows = connection.execute(
            f"SELECT customer_id FROM read_parquet('{path}') WHERE purpose = 'profiling' AND timestamp <= $moment "
            "QUALIFY row_number() OVER (PARTITION BY customer_id ORDER BY timestamp DESC) = 1 AND NOT granted",
            {"moment": utc_timestamp(as_of).to_pydatetime()},
        ).fetchall()
    return {row[0] for row in rows}


def write_table(frame: pd.DataFrame, path: Path) -> None:
    """Parquet or CSV by the file's extension, written to a scratch name and renamed into place."""
    suffix = path.suffix.lower()
    if suffix not in SCORE_FORMATS:
        raise ValueError(f"output must end in {' or '.join(SCORE_FORMATS)}, not {path.name!r}")
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.partial")
    if suffix == ".parquet":
        frame.to_parquet(scratch, index=False)
    else:
        frame.to_csv(scratch, index=False)
    scratch.replace(path)


def score_workspace(
    ws: Workspace,
    as_of: datetime | pd.Timestamp | None,
    out: Path,
    alias: str = CHAMPION,
    tracking: Workspace | Path | str | None = None,
    progress: Any = None,
) -> ScoreSummary:
    """Score every customer known at ``as_of`` (default: the features' as_of) with the ``alias``
    models and write ``out``.

    Features are the point-in-time values at ``as_of`` from the offline snapshots (the latest
    snapshot at or before it, through Feast's services). One row per known customer, in id order:
    ``customer_id``, then every model output (at least ``churn_probability``,
    ``purchase_probability``, ``expected_days_to_purchase``). Customers whose profiling consent was
    refused get no scores (nulls) and ``not_scored_reason``.
    """
    from training.scoring import load_models, score

    began = time.perf_counter()
    moment = utc_timestamp(as_of) if as_of is not None else default_as_of(ws)
    with project_run(ws):
        target = resolve_tracking(tracking if tracking is not None else ws)
    models = load_models(target.tracking_uri, alias)
    missing = [task for task in ("churn", "next_purchase") if task not in models]
    if missing:
        raise LookupError(
            f"no {alias!r} model for {', '.join(cli_name(t) for t in missing)}: run `cxpredict train` first"
        )
    step = progress.add_task("scoring", total=3) if hasattr(progress, "add_task") else None

    def advance(description: str) -> None:
        if step is not None:
            progress.update(step, advance=1, description=description)

    prepare_store(ws)
    customers = known_customers(ws, moment)
    refused = withheld_consent(ws, moment)
    advance("features")
    entity = pd.DataFrame({"customer_id": customers, "event_timestamp": moment})
    frames = service_features(ws, entity, list(models))
    advance("scoring")
    scored = score(models, frames)
    del frames
    scored = entity[["customer_id"]].merge(scored, on="customer_id", how="left", validate="one_to_one")
    blocked = scored["customer_id"].isin(refused).to_numpy()
    outputs = [c for c in scored.columns if c != "customer_id"]
    scored.loc[blocked, outputs] = None
    scored["not_scored_reason"] = np.array([None, NO_CONSENT], dtype=object)[blocked.astype(np.int64)]
    write_table(scored, Path(out))
    advance("written")
    versions = {task: (version_info(target, task, alias) or {}).get("version", "?") for task in models}
    return ScoreSummary(
        Path(out), len(scored), int(blocked.sum()), versions, list(scored.columns),
        round(time.perf_counter() - began, 2),
    )
