"""MLflow tracking and registry: one experiment and one registered model per task.

- Tracking URI: ``MLFLOW_TRACKING_URI`` when set, else an explicit URI argument, else SQLite at
  ``<ws>/mlflow/mlflow.db``. With the SQLite default, every experiment is created with an explicit
  ``artifact_location`` under ``<ws>/mlflow/artifacts/<experiment>`` (MLflow's own default for a
  SQLite store is ``./mlruns`` relative to the current directory, i.e. outside the workspace).
- Each run logs params (as_of, horizon, cutoffs, feature service and its features, data hash, code
  version, LightGBM params), the metrics table of model, baselines and oracle, plots, and the model
  as a pyfunc (``pyfunc_model.py`` + ``model_bundle.py`` + the bundle folder) with signature and an
  input example of feature values only (no customer_id anywhere).
- Registry: every new version gets alias ``challenger``; while the task has no ``champion``, the
  new version becomes ``champion`` (its heads are the best candidates on the validation cutoff,
  whatever their family, so a first run always ends with a usable model). Versions are
  tagged with what promotion needs (as_of, horizon, label definition, feature service, data hash,
  code version, headline AUCs, decision) and their lineage (cutoffs, feature list, row counts, ECE).
  Alias moves go through ``model_registry.move_alias``: locked and recorded in the audit trail.
- Each run also holds ``model_card.md`` (see ``model_card``); the version tag ``model_card`` points to
  it, and the card is the version's description (cut to ``DESCRIPTION_LIMIT``, what MLflow's SQL
  stores hold), so the registry UI shows it.
- Each run names its training data as an input dataset (``mlflow.log_input``, context
  ``training``): the feature service at as_of, with the data hash as digest, the schema of features
  and labels, row counts and cutoffs as profile, and the workspace's feature manifest as source.
  It is metadata only: no row, no identifier (the frames hold personal data).
- The ROC plot's legend gives each curve's AUC; ``fit_seconds`` is the fit's wall time, inside the
  run's own span.
- Interruptions: a task's run opens before fitting (``task_run``) and records its process; the
  version is created with all its tags in one call (``record_task``), the card follows, then the
  run ends FINISHED, and only then do aliases move (``publish_task``). An exception, Ctrl-C or
  SIGTERM ends the run FAILED; after ``kill -9`` the next train marks it FAILED
  (``reap_abandoned``). Either way a version of that run is flagged and refused by the gate
  (``model_registry.version_problem``).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import json
import os
import subprocess
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import lightgbm as lgb
import sklearn
import mlflow
import numpy as np
import pandas as pd
from mlflow.data.code_dataset_source import CodeDatasetSource
from mlflow.data.dataset_source import DatasetSource
from mlflow.data.dataset_source_registry import get_registered_sources
from mlflow.data.meta_dataset import MetaDataset
from mlflow.entities import RunStatus
from mlflow.exceptions import MlflowException
from mlflow.models import ModelSignature, infer_signature
from mlflow.models.model import ModelInfo
from mlflow.types import ColSpec, Schema

from cxpredict import tasks as registry
from cxpredict.workspace import Workspace
from training import explain, model_card
from training.config import TrainConfig
from training.cutoffs import utc_timestamp
from training.datasets import TaskDataset
from training.labels import TREATMENTS
from training.model_bundle import ModelBundle
from training.models import FittedTask
from training.lifecycle import FAILURE_TAG, MAX_FAILURE, process_tags, reap_abandoned_runs
from training.model_registry import REQUIRED_LINEAGE, AliasConflict, move_alias

CHALLENGER = "challenger"
CHAMPION = "champion"
MODEL_CARD = "model_card.md"
DESCRIPTION_LIMIT = 5000
"""Longest version description: MLflow's SQL stores declare the column VARCHAR(5000)."""
TRAINING_CONTEXT = "training"
MAX_PARAM_LENGTH = 6000
PYFUNC_ENTRY = Path(__file__).with_name("pyfunc_model.py")
BUNDLE_CODE = Path(__file__).with_name("model_bundle.py")
PREDICT_PARAMS = {"as_of": ""}
"""Inference parameters of every logged model: ``as_of``, when the predicted window starts (ISO
time; empty: the moment of the call). Seasonal heads depend on it (``training.season``)."""


@dataclass(frozen=True)
class TrackingTarget:
    """Where runs and models go; ``artifact_root`` is None when the server decides."""

    tracking_uri: str
    artifact_root: str | None
    staging_dir: Path | None


def predict_params(moment: datetime | pd.Timestamp) -> dict[str, str]:
    """``params`` of a pyfunc ``predict`` for the window that starts at ``moment``."""
    return {"as_of": utc_timestamp(moment).isoformat()}


def resolve_tracking(ws: Workspace, uri: str | None = None) -> TrackingTarget:
    """``MLFLOW_TRACKING_URI`` if set; else ``uri`` when given; else the workspace's SQLite store
    (``Workspace.tracking_uri``) with artifacts inside the workspace."""
    chosen = os.environ.get("MLFLOW_TRACKING_URI") or uri
    if chosen:
        return TrackingTarget(chosen, None, None)
    (ws.mlflow_dir / "artifacts").mkdir(parents=True, exist_ok=True)
    return TrackingTarget(ws.tracking_uri, (ws.mlflow_dir / "artifacts").as_uri(), ws.mlflow_dir / "staging")


@contextmanager
def tracking_session(target: TrackingTarget) -> Iterator[mlflow.MlflowClient]:
    """Point MLflow's fluent API (needed to log models) at ``target`` for the duration.

    ``mlflow.set_tracking_uri`` also exports ``MLFLOW_TRACKING_URI`` (and the registry URI
    likewise); both variables are restored on exit, so nothing leaks into later resolutions.
    """
    saved = {name: os.environ.get(name) for name in ("MLFLOW_TRACKING_URI", "MLFLOW_REGISTRY_URI")}
    mlflow.set_tracking_uri(target.tracking_uri)
    mlflow.set_registry_uri(target.tracking_uri)
    try:
        yield mlflow.MlflowClient(tracking_uri=target.tracking_uri, registry_uri=target.tracking_uri)
    finally:
        mlflow.set_tracking_uri(saved["MLFLOW_TRACKING_URI"])
        mlflow.set_registry_uri(saved["MLFLOW_REGISTRY_URI"])
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)


def ensure_experiment(client: mlflow.MlflowClient, name: str, artifact_root: str | None) -> str:
    """The experiment's id, creating it (with its artifact location under ``artifact_root``) if needed."""
    found = client.get_experiment_by_name(name)
    if found is not None:
        return found.experiment_id
    location = f"{artifact_root}/{name}" if artifact_root else None
    return client.create_experiment(name, artifact_location=location)


def code_version() -> str:
    """The git commit of the source tree when available, else the installed package version."""
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=Path(__file__).parent,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        if commit:
            return commit
    except (OSError, subprocess.SubprocessError):
        pass
    try:
        return f"cxpredict=={importlib.metadata.version('cxpredict')}"
    except importlib.metadata.PackageNotFoundError:
        return "unknown"


def data_hash(tables: Mapping[str, pd.DataFrame | None]) -> str:
    """A content hash of the given tables (sources sorted by name, rows in their given order)."""
    digest = hashlib.sha256()
    for source in sorted(name for name, table in tables.items() if table is not None):
        digest.update(source.encode())
        digest.update(pd.util.hash_pandas_object(tables[source], index=False).to_numpy().tobytes())
    return digest.hexdigest()[:16]


def task_data_hash(tables: Mapping[str, pd.DataFrame | None], task: str) -> str:
    """:func:`data_hash` of the tables ``task`` reads: the decision log's treatments count only for a
    task that learns from them (``TaskSpec.reads_decision_log``)."""
    reads_log = registry.get(task).reads_decision_log
    return data_hash({name: table for name, table in tables.items() if name != TREATMENTS or reads_log})


def _features_param(names: list[str]) -> str:
    joined = ",".join(names)
    if len(joined) <= MAX_PARAM_LENGTH:
        return joined
    digest = hashlib.sha1(joined.encode()).hexdigest()[:8]
    return joined[: MAX_PARAM_LENGTH - 40] + f"...(see features.json, sha {digest})"


def run_params(
    fitted: FittedTask, dataset: TaskDataset, config: TrainConfig, hash_: str, version: str
) -> dict[str, str]:
    names = list(dataset.feature_names)
    return {
        **dataset.plan.describe(),
        "task": fitted.task,
        "n_cutoffs": str(len(dataset.plan.all)),
        "label_definition": registry.get(fitted.task).label_definition,
        "feature_service": registry.get(fitted.task).feature_service,
        "feature_count": str(len(names)),
        "features": _features_param(names),
        "data_hash": hash_,
        "code_version": version,
        "seed": str(config.seed),
        "rows_train": str(len(dataset.train)),
        "rows_valid": str(len(dataset.valid)),
        "rows_test": str(len(dataset.test)),
        **{key: str(value) for key, value in fitted.params.items()},
    }


def run_metrics(fitted: FittedTask) -> dict[str, float]:
    """Every finite metric as ``<target>.<model>.<metric>``, plus headline AUCs ``auc`` (the model)
    and ``auc_<baseline>`` / ``auc_oracle``."""
    out = {
        f"{row.target}.{row.model}.{row.metric}": float(row.value)
        for row in fitted.metrics.itertuples(index=False)
        if np.isfinite(row.value)
    }
    metric = fitted.gate_metric
    for model, value in fitted.headline().items():
        if np.isfinite(value):
            out[metric if model == "model" else f"{metric}_{model}"] = float(value)
    return out


def _input_example(dataset: TaskDataset, rows: int = 5) -> pd.DataFrame:
    """Feature values only (no keys): categoricals as plain strings, as a caller would send them."""
    sample = dataset.test.X.head(rows)
    return pd.DataFrame(
        {
            name: sample[name].astype(object).where(sample[name].notna(), None)
            if isinstance(sample[name].dtype, pd.CategoricalDtype)
            else sample[name]
            for name in sample.columns
        }
    )


def optional_inputs(signature: ModelSignature) -> ModelSignature:
    """Every input column optional: missing values are normal for features (null = not observed),
    and an absent column reaches the model as all-missing instead of failing validation."""
    columns = [ColSpec(type=spec.type, name=spec.name, required=False) for spec in signature.inputs.inputs]
    return ModelSignature(inputs=Schema(columns), outputs=signature.outputs, params=signature.params)


def figures(fitted: FittedTask, dataset: TaskDataset, config: TrainConfig) -> dict[str, object]:
    """The run's plots by file name (matplotlib is imported here, not with the module: serving and
    the command line import this module and never draw)."""
    from training import plots

    head = fitted.primary if fitted.evaluations else fitted.bundle.spec["heads"][0]["name"]
    booster = fitted.bundle.boosters.get(head)
    rows = np.random.default_rng(config.seed).permutation(len(dataset.test))[: config.shap_sample]
    sample = dataset.test.X.iloc[np.sort(rows)]
    contributions = (
        explain.contributions(booster, sample, config.lightgbm.num_threads)
        if booster is not None
        else fitted.bundle.contributions(sample, head)
    )
    if fitted.evaluations:
        primary = next(e for e in fitted.evaluations if e.target == fitted.primary)
        ranking = {
            "roc.png": plots.roc(fitted.evaluations),
            "calibration.png": plots.calibration(primary),
            "lift.png": plots.lift(primary),
        }
    elif fitted.regressions:
        ranking = {"deciles.png": plots.deciles(fitted.regressions[0])}
    else:
        ranking = {"qini.png": plots.qini(fitted.uplift)}
    if booster is None:
        importance = pd.DataFrame(
            {
                "feature": list(dataset.feature_names),
                "gain_share": 0.0,
                "mean_abs_shap": np.abs(contributions[:, :-1]).mean(axis=0),
            }
        ).sort_values("mean_abs_shap", ascending=False)
    else:
        importance = explain.global_importance(booster, sample, dataset.feature_names, contributions)
    return {
        **ranking,
        "importance.png": plots.importance(importance),
        "shap_summary.png": plots.shap_summary(contributions, sample, seed=config.seed),
    }


class TrainingData(MetaDataset):
    """A dataset known by its metadata only (schema, digest, source) plus an aggregate profile."""

    def __init__(self, source: DatasetSource, name: str, digest: str, schema: Schema,
                 profile: dict[str, object]) -> None:  # fmt: skip
        self._profile = profile
        super().__init__(source=source, name=name, digest=digest, schema=schema)

    @property
    def profile(self) -> dict[str, object]:
        return self._profile

    def to_dict(self) -> dict[str, str]:
        return {**super().to_dict(), "profile": json.dumps(self._profile)}


def _data_source(uri: str | None, service: str) -> DatasetSource:
    """A local file source for ``uri`` (MLflow's own class for file URIs), else a code source naming
    the feature service (training on tables given in memory)."""
    if uri is None:
        return CodeDatasetSource(tags={"feature_service": service})
    local = next(source for source in get_registered_sources() if source._get_source_type() == "local")
    return local(uri)


def _column_type(values: pd.Series) -> str:
    """The MLflow type of a column, from its dtype alone (no value is read)."""
    if pd.api.types.is_bool_dtype(values):
        return "boolean"
    if pd.api.types.is_integer_dtype(values):
        return "long"
    return "double" if pd.api.types.is_float_dtype(values) else "string"


def training_data(
    dataset: TaskDataset, inputs: Schema, hash_: str, source_uri: str | None = None
) -> TrainingData:
    """The run's training data for ``mlflow.log_input``: named ``<feature service>@<as_of>``, the data
    hash as digest, ``inputs`` (the model's feature schema) plus the label columns as schema, and
    row counts and cutoffs as profile. Built from no row: the frames hold personal data."""
    service = registry.get(dataset.task).feature_service
    labels = [
        ColSpec(type=_column_type(dataset.train.labels[name]), name=name) for name in dataset.label_columns
    ]
    plan = dataset.plan.describe()
    profile = {
        "feature_service": service,
        "as_of": dataset.plan.as_of.isoformat(),
        "horizon_days": dataset.plan.horizon_days,
        "cutoffs_train": plan["cutoffs_train"],
        "cutoff_valid": plan["cutoff_valid"],
        "cutoff_test": plan["cutoff_test"],
        "features": len(dataset.feature_names),
        **{f"rows_{name}": len(dataset.split(name)) for name in ("train", "valid", "test")},
    }
    return TrainingData(
        source=_data_source(source_uri, service),
        name=f"{service}@{dataset.plan.as_of.date()}",
        digest=hash_,
        schema=Schema([*inputs.inputs, *labels]),
        profile=profile,
    )


def version_description(card: str, run_id: str) -> str:
    """The card as a version description: whole when it fits ``DESCRIPTION_LIMIT``, else cut at a
    line break with a pointer to the full card in the run."""
    if len(card) <= DESCRIPTION_LIMIT:
        return card
    note = f"\n\n(Cut to fit the registry; the full card is runs:/{run_id}/{MODEL_CARD}.)\n"
    kept = card[: DESCRIPTION_LIMIT - len(note)]
    return kept[: kept.rfind("\n")].rstrip() + note


def lineage_tags(fitted: FittedTask, dataset: TaskDataset) -> dict[str, str]:
    """What a version was built from, as version tags (values are unbounded text in the registry):
    cutoffs, feature list, row counts and the held-out ECE next to the AUCs."""
    plan = dataset.plan.describe()
    targets = [evaluation.target for evaluation in fitted.evaluations]
    ece = [fitted.metric(target, "model", "ece") for target in targets]
    ece = [value for value in ece if np.isfinite(value)]
    tags = {
        "cutoffs_train": plan["cutoffs_train"],
        "cutoff_valid": plan["cutoff_valid"],
        "cutoff_test": plan["cutoff_test"],
        "features": ",".join(dataset.feature_names),
        "feature_count": str(len(dataset.feature_names)),
        "rows_train": str(len(dataset.train)),
        "rows_valid": str(len(dataset.valid)),
        "rows_test": str(len(dataset.test)),
    }
    if ece:
        tags["ece_model"] = f"{float(np.mean(ece)):.6f}"
    return tags


def card_text(
    fitted: FittedTask,
    dataset: TaskDataset,
    name: str,
    model_version: str | None,
    run_id: str,
    hash_: str,
    version: str,
) -> str:
    """The version's model card (Markdown), see ``model_card``."""
    inputs = model_card.from_training(
        fitted,
        dataset,
        model_name=name,
        version=model_version,
        run_id=run_id,
        label_definition=registry.get(fitted.task).label_definition,
        feature_service=registry.get(fitted.task).feature_service,
        data_hash=hash_,
        code_version=version,
        generated_at=pd.Timestamp.now(tz="UTC").isoformat(timespec="seconds"),
        selection=selection_summary(fitted),
    )
    return model_card.render(inputs)


def alias_trained_version(
    client: mlflow.MlflowClient, name: str, version: str, won: str, usable: bool = True
) -> tuple[bool, str]:
    """Alias the version ``challenger``; while the task has no ``champion``, make it champion too:
    its heads are the best candidates on the validation cutoff, whatever their family (``won`` says
    which), so a first run ends with a model — unless it is not ``usable`` (no better than chance
    beyond the noise on the validation cutoff). Later versions reach champion only through the gate. Returns (is champion now, decision in words). Both moves are locked and
    recorded in the registry's audit trail (``model_registry.move_alias``); a champion set
    concurrently wins."""
    move_alias(client, name, CHALLENGER, version, action="train", reason=f"version {version} trained")
    try:
        current = client.get_model_version_by_alias(name, CHAMPION)
    except MlflowException:
        current = None
    if current is not None:
        return False, f"kept champion version {current.version}; version {version} is challenger"
    if not usable:
        return False, f"version {version} is not champion: no better than chance on the validation cutoff"
    reason = f"version {version} is champion: the task had none; {won}"
    try:
        move_alias(client, name, CHAMPION, version, action="initial", reason=reason, expected_from=None)
    except AliasConflict as conflict:
        return False, f"kept champion version {conflict.current}; version {version} is challenger"
    return True, reason


def selection_summary(fitted: FittedTask) -> str:
    """Which family won each head on the validation cutoff, and by how much (mean of the gate metric,
    AUC or Gini, over heads)."""
    key = f"valid_{fitted.gate_metric}"
    heads = [head for head in fitted.bundle.spec["heads"] if key in head]
    if not heads:
        return "candidates were not compared"
    families = sorted({family for head in heads for family in head[key]})
    mean = {f: float(np.nanmean([head[key].get(f, np.nan) for head in heads])) for f in families}
    won = pd.Series([head.get("family", "lightgbm") for head in heads]).value_counts()
    winners = ", ".join(f"{family} ({count} of {len(heads)} heads)" for family, count in won.items())
    scores = ", ".join(f"{family} {mean[family]:.4f}" for family in sorted(mean, key=lambda f: -mean[f]))
    label = "AUC" if fitted.gate_metric == "auc" else fitted.gate_metric.capitalize()
    return f"best on the validation cutoff: {winners}; validation {label} {scores}"


@dataclass(frozen=True)
class LoggedTask:
    run_id: str
    model_name: str
    model_version: str | None
    model_uri: str
    champion: bool
    decision: str


@dataclass(frozen=True)
class RecordedTask:
    """What ``record_task`` left in the (still open) run: the logged model and, when registered,
    its version. ``model_uri`` is the registry URI of the version, else the logged model's."""

    run_id: str
    model_name: str
    model_version: str | None
    model_uri: str
    usable: bool
    selection: str


def _record_failure(run_id: str, error: BaseException) -> None:
    """Best effort: say on the run why it fails (the run's end must not depend on this)."""
    text = f"{type(error).__name__}: {error}" if str(error) else type(error).__name__
    try:
        mlflow.MlflowClient().set_tag(run_id, FAILURE_TAG, text[:MAX_FAILURE])
    except Exception:  # noqa: BLE001 - the original error is what propagates
        pass


def _end_runs_down_to(run_id: str, status: str) -> None:
    """End ``run_id`` and every run opened after it and left open (nested runs), innermost first:
    ``ActiveRun.__exit__`` ends only the top of the stack, and MLflow's exit hook would end the rest
    FINISHED."""
    while (active := mlflow.active_run()) is not None:
        mlflow.end_run(status)
        if active.info.run_id == run_id:
            return


@contextmanager
def task_run(
    target: TrackingTarget,
    task: str,
    as_of: pd.Timestamp,
    discard: tuple[type[BaseException], ...] = (),
) -> Iterator[mlflow.ActiveRun]:
    """The task's MLflow run, open for the block (fitting, logging, registration).

    Contract: from its start the run names its process (``lifecycle.process_tags``: pid, host),
    so a later train can tell a run whose process was killed (``reap_abandoned``). It ends FINISHED
    only when the block completes; any exception (KeyboardInterrupt and SIGTERM's ``Terminated``
    included) ends it FAILED with the reason in the ``cxpredict.failure`` tag, and every run opened
    inside and left open with it. An exception of a ``discard`` type (the task turned out to be
    unavailable) ends the run KILLED and deletes it: an unavailable task leaves no run.
    """
    spec = registry.get(task)
    with tracking_session(target) as client:
        experiment_id = ensure_experiment(client, spec.experiment, target.artifact_root)
        tags = {"task": task, "as_of": as_of.isoformat(), "code_version": code_version(), **process_tags()}
        run = mlflow.start_run(experiment_id=experiment_id, run_name=f"{task}-{as_of.date()}", tags=tags)
        status = RunStatus.to_string(RunStatus.FAILED)
        try:
            yield run
            status = RunStatus.to_string(RunStatus.FINISHED)
        except discard:
            status = RunStatus.to_string(RunStatus.KILLED)
            raise
        except BaseException as error:
            _record_failure(run.info.run_id, error)
            raise
        finally:
            _end_runs_down_to(run.info.run_id, status)
            if status == RunStatus.to_string(RunStatus.KILLED):
                client.delete_run(run.info.run_id)


def version_tags(
    fitted: FittedTask, dataset: TaskDataset, run_id: str, hash_: str, version: str
) -> dict[str, str]:
    """Everything a version records about how it was made (promotion's inputs and its lineage), set
    when the version is created. Holds at least ``model_registry.REQUIRED_LINEAGE``."""
    spec = registry.get(fitted.task)
    headline = fitted.headline().items()
    metric = fitted.gate_metric
    aucs = {f"{metric}_{model}": f"{value:.6f}" for model, value in headline if np.isfinite(value)}
    return {
        "task": fitted.task,
        "as_of": dataset.plan.as_of.isoformat(),
        "horizon_days": str(dataset.plan.horizon_days),
        "label_definition": spec.label_definition,
        "feature_service": spec.feature_service,
        "data_hash": hash_,
        "code_version": version,
        "run_id": run_id,
        "beats_baselines": str(fitted.beats_baselines()).lower(),
        "better_than_chance": str(fitted.usable()).lower(),
        "families": ",".join(sorted(set(fitted.families().values()))),
        "selection": selection_summary(fitted),
        **aucs,
        **lineage_tags(fitted, dataset),
        "model_card": f"runs:/{run_id}/{MODEL_CARD}",
    }


def bundle_signature(bundle: ModelBundle, example: pd.DataFrame) -> ModelSignature:
    """The pyfunc signature of ``bundle``: inputs (all optional) from ``example``, its outputs, and
    the ``as_of`` inference param."""
    return optional_inputs(infer_signature(example, bundle.predict(example), params=PREDICT_PARAMS))


def log_bundle(
    bundle: ModelBundle,
    example: pd.DataFrame,
    signature: ModelSignature | None = None,
    staging_dir: Path | None = None,
) -> ModelInfo:
    """Log ``bundle`` as the active run's pyfunc model ``model``, the way every task model is logged:
    the bundle's files as an artifact, its module as code, pinned requirements. ``staging_dir`` holds
    the temporary copy (default: the system's temporary folder)."""
    if staging_dir is not None:
        staging_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=staging_dir) as staging:
        bundle_dir = bundle.save(Path(staging) / "bundle")
        return mlflow.pyfunc.log_model(
            name="model",
            python_model=str(PYFUNC_ENTRY),
            artifacts={"bundle": str(bundle_dir)},
            code_paths=[str(BUNDLE_CODE)],
            signature=signature or bundle_signature(bundle, example),
            input_example=example,
            pip_requirements=[
                f"mlflow=={mlflow.__version__}",
                f"lightgbm=={lgb.__version__}",
                f"scikit-learn=={sklearn.__version__}",
                f"pandas=={pd.__version__}",
                f"numpy=={np.__version__}",
            ],
        )


def record_task(
    run: mlflow.ActiveRun,
    fitted: FittedTask,
    dataset: TaskDataset,
    config: TrainConfig,
    hash_: str,
    staging_dir: Path | None = None,
    data_source: str | None = None,
    fit_seconds: float | None = None,
) -> RecordedTask:
    """Log a fitted task into the active ``run`` (params, metrics, the training data's metadata
    from ``data_source``, plots, the pyfunc model) and, with ``config.register_models``, register
    the model with every version tag in the creating call, so no version ever exists without its
    lineage; then the model card, as artifact and as the version's description. Must run inside
    ``task_run``: the run only ends FINISHED after all of this succeeded."""
    version = code_version()
    name = registry.get(fitted.task).model_name
    run_id = run.info.run_id
    mlflow.log_params(run_params(fitted, dataset, config, hash_, version))
    mlflow.log_metrics(run_metrics(fitted))
    if fit_seconds is not None:
        mlflow.log_metric("fit_seconds", fit_seconds)
    for file_name, figure in figures(fitted, dataset, config).items():
        mlflow.log_figure(figure, f"plots/{file_name}")
    mlflow.log_text(fitted.metrics.to_csv(index=False), "metrics.csv")
    mlflow.log_dict(
        {
            "features": list(dataset.feature_names),
            "categorical_levels": dict(dataset.categorical_levels),
            "notes": fitted.notes,
        },
        "features.json",
    )
    example = _input_example(dataset)
    signature = bundle_signature(fitted.bundle, example)
    mlflow.log_input(training_data(dataset, signature.inputs, hash_, data_source), context=TRAINING_CONTEXT)
    info = log_bundle(fitted.bundle, example, signature, staging_dir)
    won = selection_summary(fitted)
    if not config.register_models:
        mlflow.log_text(card_text(fitted, dataset, name, None, run_id, hash_, version), MODEL_CARD)
        return RecordedTask(run_id, name, None, info.model_uri, fitted.usable(), won)
    tags = version_tags(fitted, dataset, run_id, hash_, version)
    missing = [key for key in REQUIRED_LINEAGE if key not in tags]
    if missing:
        raise RuntimeError(f"version tags lack required lineage {missing}")
    model_version = str(mlflow.register_model(info.model_uri, name, tags=tags).version)
    card = card_text(fitted, dataset, name, model_version, run_id, hash_, version)
    mlflow.log_text(card, MODEL_CARD)
    mlflow.MlflowClient().update_model_version(
        name, model_version, description=version_description(card, run_id)
    )
    return RecordedTask(run_id, name, model_version, f"models:/{name}/{model_version}", fitted.usable(), won)


def publish_task(target: TrackingTarget, recorded: RecordedTask) -> LoggedTask:
    """After the run ended FINISHED: alias the version (``alias_trained_version``) and record the
    decision on it. Aliases never point at a version whose training did not complete."""
    if recorded.model_version is None:
        return LoggedTask(
            recorded.run_id, recorded.model_name, None, recorded.model_uri, False, "not registered"
        )
    name, model_version = recorded.model_name, recorded.model_version
    with tracking_session(target) as client:
        champion, decision = alias_trained_version(
            client, name, model_version, recorded.selection, recorded.usable
        )
        client.set_model_version_tag(name, model_version, "champion_decision", decision)
    return LoggedTask(recorded.run_id, name, model_version, recorded.model_uri, champion, decision)


def log_task(
    target: TrackingTarget,
    fitted: FittedTask,
    dataset: TaskDataset,
    config: TrainConfig,
    hash_: str,
) -> LoggedTask:
    """One MLflow run for an already fitted task: ``task_run`` + ``record_task`` + ``publish_task``
    (training proper opens the run before fitting, see ``pipeline.train_task``)."""
    with task_run(target, fitted.task, dataset.plan.as_of) as run:
        recorded = record_task(run, fitted, dataset, config, hash_, target.staging_dir)
    return publish_task(target, recorded)


def reap_abandoned(target: TrackingTarget) -> list[str]:
    """Mark FAILED the runs of every task's experiment left RUNNING by a process gone from this
    host (``lifecycle.reap_abandoned_runs``); returns their ids."""
    with tracking_session(target) as client:
        experiments = [client.get_experiment_by_name(spec.experiment) for spec in registry.all_tasks()]
        return reap_abandoned_runs(client, [found.experiment_id for found in experiments if found])


def load_model(target: TrackingTarget, task: str, alias: str = CHAMPION) -> mlflow.pyfunc.PyFuncModel:
    """``models:/cx-<task>@<alias>`` as a pyfunc model."""
    with tracking_session(target):
        return mlflow.pyfunc.load_model(f"models:/{registry.get(task).model_name}@{alias}")


def version_info(target: TrackingTarget, task: str, alias: str = CHAMPION) -> dict[str, str] | None:
    """Version number and tags behind an alias, or None when the alias is not set."""
    with tracking_session(target) as client:
        try:
            version = client.get_model_version_by_alias(registry.get(task).model_name, alias)
        except MlflowException:
            return None
        return {"version": str(version.version), **version.tags}
