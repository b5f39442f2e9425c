"""The model registry's state as MLOps engineers read it, and its audit trail of alias moves.

Audit trail: every move of an alias (``champion``, ``challenger``) made through ``move_alias`` is
recorded as one registered-model tag ``audit.<seq>`` (zero-padded, so keys sort in order) holding
a JSON ``AuditEntry``: when (UTC), alias, action, from which version to which, why, by whom,
whether forced, plus a few gate figures. One tag per move rather than one growing JSON list,
because a registered-model tag value is at most 5,000 characters in the SQL stores.

Atomicity: MLflow has no compare-and-set for aliases or tags, so moves are serialised by a lock
that the backend itself makes atomic: creating the registered model ``<name>.lock`` fails with
``RESOURCE_ALREADY_EXISTS`` while another process holds it (a unique constraint in the SQLite and
PostgreSQL stores alike, and through ``mlflow server``). Under the lock, ``move_alias`` re-reads the
alias, refuses with ``AliasConflict`` when it is not the version the caller decided from, moves it,
re-reads it and appends the audit entry. A lock older than ``stale_after_s`` (a crashed holder) is
broken; breaking is itself not atomic, which only matters after a crash.

Listing: ``version_rows`` / ``snapshot`` read every task's versions with aliases, headline metrics,
as-of, training rows and lineage (version tags, falling back to the training run's params).

Usable versions: training creates a version with its lineage tags (``REQUIRED_LINEAGE``) in the
same call, and only then ends its run FINISHED. A version whose run is not FINISHED (interrupted,
killed, still at work) or that lacks lineage tags (registered by hand, or by an older, interruptible
registration) is not usable: ``version_problem`` says why, the listing shows it (``usable``,
``problem``, ``run_status``) and the gate refuses it.
"""

from __future__ import annotations

import getpass
import json
import os
import random
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Literal

import mlflow
import numpy as np
from mlflow.entities import Run
from mlflow.exceptions import MlflowException
from pydantic import BaseModel, ConfigDict

from training.lifecycle import FAILURE_TAG

AUDIT_PREFIX = "audit."
LOCK_SUFFIX = ".lock"
MAX_REASON = 1_000
CHAMPION = "champion"
CHALLENGER = "challenger"
REQUIRED_LINEAGE = (
    "run_id",
    "task",
    "as_of",
    "horizon_days",
    "label_definition",
    "feature_service",
    "data_hash",
    "code_version",
    "beats_baselines",
    "better_than_chance",
    "families",
    "selection",
    "cutoffs_train",
    "cutoff_valid",
    "cutoff_test",
    "features",
    "feature_count",
    "rows_train",
    "model_card",
)  # the version tags training always writes at creation (``tracking.record_task``)
Action = Literal["train", "initial", "promote", "force", "rollback"]


class AliasConflict(RuntimeError):
    """The alias no longer points where the caller's decision assumed: someone moved it first."""

    def __init__(self, name: str, alias: str, expected: str | None, current: str | None) -> None:
        super().__init__(f"{name}@{alias} is version {current}, not {expected} as expected")
        self.name, self.alias, self.expected, self.current = name, alias, expected, current


class RegistryBusy(TimeoutError):
    """Another process held the registry lock for longer than the caller was willing to wait."""


class _Anything:
    def __repr__(self) -> str:
        return "ANY"


ANY = _Anything()  # ``expected_from`` for moves that need no compare-and-set (still locked and recorded)


def default_actor() -> str:
    """Who is acting: ``$USER`` when set, else the login name."""
    try:
        return os.environ.get("USER") or getpass.getuser()
    except (KeyError, OSError):
        return "unknown"


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


class AuditEntry(BaseModel):
    """One alias move. ``from_version``/``to_version`` are None when the alias was unset."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    seq: int
    at: str
    alias: str
    action: Action
    from_version: str | None
    to_version: str | None
    reason: str
    actor: str
    forced: bool = False
    details: dict[str, str | float | bool | None] = {}

    @property
    def key(self) -> str:
        return f"{AUDIT_PREFIX}{self.seq:06d}"

    def to_tag(self) -> str:
        return self.model_dump_json(exclude_none=False)


def alias_version(client: mlflow.MlflowClient, name: str, alias: str) -> str | None:
    """The version behind ``name@alias`` or None when the alias (or the model) does not exist."""
    try:
        return str(client.get_model_version_by_alias(name, alias).version)
    except MlflowException:
        return None


def read_history(client: mlflow.MlflowClient, name: str) -> list[AuditEntry]:
    """Every recorded alias move of a registered model, oldest first ([] for an unknown model)."""
    try:
        tags = client.get_registered_model(name).tags
    except MlflowException:
        return []
    entries = [
        AuditEntry.model_validate_json(value) for key, value in tags.items() if key.startswith(AUDIT_PREFIX)
    ]
    return sorted(entries, key=lambda entry: entry.seq)


@contextmanager
def registry_lock(
    client: mlflow.MlflowClient,
    name: str,
    *,
    timeout_s: float = 30.0,
    stale_after_s: float = 120.0,
    poll_s: float = 0.05,
) -> Iterator[None]:
    """Hold ``<name>.lock`` (a registered model the backend creates at most once) for the block."""
    lock = f"{name}{LOCK_SUFFIX}"
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            created = client.create_registered_model(
                lock,
                tags={"cxpredict.lock": "alias moves", "holder": default_actor()},
                description=f"Held while an alias of {name} moves; safe to delete after a few minutes.",
            )
            break
        except MlflowException as error:
            # The SQL store answers a taken name by looking the holder up; if the holder released
            # in between, that lookup fails with "does not exist": the lock is free, try again.
            if error.error_code not in ("RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"):
                raise
        _break_if_stale(client, lock, stale_after_s)
        if time.monotonic() > deadline:
            raise RegistryBusy(f"{lock} has been held for more than {timeout_s:.0f} s; retry later")
        time.sleep(random.uniform(poll_s, 3 * poll_s))
    stamp = created.creation_timestamp
    try:
        yield
    finally:
        _release(client, lock, stamp)


def _break_if_stale(client: mlflow.MlflowClient, lock: str, stale_after_s: float) -> None:
    try:
        held = client.get_registered_model(lock)
    except MlflowException:
        return
    if held.creation_timestamp and time.time() * 1000 - held.creation_timestamp > stale_after_s * 1000:
        _release(client, lock, held.creation_timestamp)


def _release(client: mlflow.MlflowClient, lock: str, stamp: int | None) -> None:
    """Delete the lock if it is still the one created at ``stamp`` (not a successor's)."""
    try:
        if stamp is None or client.get_registered_model(lock).creation_timestamp == stamp:
            client.delete_registered_model(lock)
    except MlflowException:
        pass


def move_alias(
    client: mlflow.MlflowClient,
    name: str,
    alias: str,
    to_version: str | None,
    *,
    action: Action,
    reason: str,
    actor: str | None = None,
    expected_from: str | None | _Anything = ANY,
    forced: bool = False,
    details: dict[str, str | float | bool | None] | None = None,
    lock_timeout_s: float = 30.0,
) -> AuditEntry:
    """Move ``name@alias`` to ``to_version`` (None removes it) and record the move, atomically with
    respect to every other ``move_alias`` on the same model. With ``expected_from`` given, the move
    happens only if the alias still points there; otherwise ``AliasConflict`` and nothing changes."""
    with registry_lock(client, name, timeout_s=lock_timeout_s):
        current = alias_version(client, name, alias)
        if not isinstance(expected_from, _Anything) and current != expected_from:
            raise AliasConflict(name, alias, expected_from, current)
        if to_version is None:
            if current is not None:
                client.delete_registered_model_alias(name, alias)
        else:
            client.set_registered_model_alias(name, alias, str(to_version))
        now = alias_version(client, name, alias)
        if now != (None if to_version is None else str(to_version)):
            raise RuntimeError(f"{name}@{alias} reads {now} right after moving it to {to_version}")
        history = read_history(client, name)
        entry = AuditEntry(
            seq=(history[-1].seq + 1) if history else 1,
            at=utc_now(),
            alias=alias,
            action=action,
            from_version=current,
            to_version=None if to_version is None else str(to_version),
            reason=reason[:MAX_REASON],
            actor=actor or default_actor(),
            forced=forced,
            details=details or {},
        )
        client.set_registered_model_tag(name, entry.key, entry.to_tag())
    return entry


def alias_stack(entries: Sequence[AuditEntry], alias: str = CHAMPION) -> list[str]:
    """The alias's line of succession replayed from the audit trail: each move pushes its target,
    a rollback pops. The last element is the current holder, the one before it the previous."""
    stack: list[str] = []
    for entry in entries:
        if entry.alias != alias:
            continue
        if entry.action == "rollback":
            if stack:
                stack.pop()
            if entry.to_version is not None and (not stack or stack[-1] != entry.to_version):
                stack.append(entry.to_version)
            continue
        if entry.from_version is None:
            stack = []
        elif not stack or stack[-1] != entry.from_version:
            stack.append(entry.from_version)
        if entry.to_version is not None:
            stack.append(entry.to_version)
    return stack


def history_problems(entries: Sequence[AuditEntry], current: dict[str, str | None]) -> list[str]:
    """Inconsistencies between the audit trail and the registry: a move whose origin is not where
    the previous move of that alias left it, or an alias that is not where the last move put it
    (e.g. moved by hand in the UI)."""
    problems = []
    last: dict[str, str | None] = {}
    for entry in entries:
        if entry.alias in last and last[entry.alias] != entry.from_version:
            problems.append(
                f"audit {entry.seq}: {entry.alias} moved from {entry.from_version}, "
                f"but the previous move left it at {last[entry.alias]}"
            )
        last[entry.alias] = entry.to_version
    for alias, version in current.items():
        if alias in last and last[alias] != version:
            problems.append(f"{alias} is version {version} but the last recorded move set {last[alias]}")
    return problems


@dataclass
class VersionRow:
    """One registered version with its aliases, headline metrics and lineage."""

    task: str
    model: str
    version: str
    aliases: list[str]
    created_at: str
    as_of: str | None
    horizon_days: int | None
    rows_train: int | None
    rows_test: int | None
    auc: float | None
    auc_logistic: float | None
    auc_rf_heuristic: float | None
    auc_oracle: float | None
    ece: float | None
    beats_baselines: bool | None
    label_definition: str | None
    feature_service: str | None
    feature_count: int | None
    features: list[str] = field(default_factory=list)
    cutoffs_train: list[str] = field(default_factory=list)
    cutoff_valid: str | None = None
    cutoff_test: str | None = None
    data_hash: str | None = None
    code_version: str | None = None
    run_id: str | None = None
    model_card: str | None = None
    last_gate: dict[str, object] | None = None
    run_status: str | None = None
    usable: bool = True
    problem: str | None = None
    gini: float | None = None
    """Continuous targets (value): held-out normalised Gini of the model and of the run rate."""
    gini_run_rate: float | None = None


def version_problem(tags: dict[str, str], run_id: str | None, run: Run | None) -> str | None:
    """Why a version cannot be trusted (None when it can): its training run is missing, deleted or
    not FINISHED, or lineage tags are missing. ``run`` is the run behind ``run_id`` (None: not found)."""
    if not run_id:
        return "no training run recorded on the version"
    if run is None:
        return f"training run {run_id} does not exist"
    if run.info.lifecycle_stage == "deleted":
        return f"training run {run_id} was deleted"
    if run.info.status != "FINISHED":
        why = run.data.tags.get(FAILURE_TAG)
        return (
            f"training run {run_id} is {run.info.status}, not FINISHED"
            + (f" ({why})" if why else "")
            + ": the training that registered it did not complete"
        )
    missing = [key for key in REQUIRED_LINEAGE if key not in tags]
    if missing:
        return f"lineage tags missing ({', '.join(missing)}): not registered by a complete training"
    return None


def get_run(client: mlflow.MlflowClient, run_id: str | None) -> Run | None:
    """The run, or None when there is no id or no such run."""
    if not run_id:
        return None
    try:
        return client.get_run(run_id)
    except MlflowException:
        return None


def registered_problem(client: mlflow.MlflowClient, name: str, version: str) -> str | None:
    """``version_problem`` of ``name`` version ``version`` as the registry holds it now."""
    registered = client.get_model_version(name, str(version))
    tags = dict(registered.tags)
    run_id = tags.get("run_id") or registered.run_id
    return version_problem(tags, run_id, get_run(client, run_id))


def _number(value: object, kind: type = float) -> float | int | None:
    try:
        number = kind(float(value)) if kind is int else float(value)
    except (TypeError, ValueError):
        return None
    return number if np.isfinite(number) else None


def _headline_ece(metrics: dict[str, float]) -> float | None:
    """Mean held-out ECE of the model over its binary targets (run metrics ``<target>.model.ece``)."""
    values = [value for key, value in metrics.items() if key.endswith(".model.ece")]
    return float(np.mean(values)) if values else None


def version_row(
    client: mlflow.MlflowClient, task: str, version: mlflow.entities.model_registry.ModelVersion
) -> VersionRow:
    tags = dict(version.tags)
    params: dict[str, str] = {}
    metrics: dict[str, float] = {}
    run_id = tags.get("run_id") or version.run_id
    run = get_run(client, run_id)
    if run is not None:
        params, metrics = dict(run.data.params), dict(run.data.metrics)
    problem = version_problem(tags, run_id, run)

    def lineage(key: str) -> str | None:
        return tags.get(key) or params.get(key) or None

    features = lineage("features")
    cutoffs = lineage("cutoffs_train")
    gate = tags.get("last_gate")
    created = datetime.fromtimestamp(version.creation_timestamp / 1000, UTC).isoformat(timespec="seconds")
    beats = tags.get("beats_baselines")
    return VersionRow(
        task=task,
        model=version.name,
        version=str(version.version),
        aliases=sorted(version.aliases or []),
        created_at=created,
        as_of=lineage("as_of"),
        horizon_days=_number(lineage("horizon_days"), int),
        rows_train=_number(lineage("rows_train"), int),
        rows_test=_number(lineage("rows_test"), int),
        auc=_number(tags.get("auc_model", metrics.get("auc"))),
        auc_logistic=_number(tags.get("auc_logistic", metrics.get("auc_logistic"))),
        auc_rf_heuristic=_number(tags.get("auc_rf_heuristic", metrics.get("auc_rf_heuristic"))),
        auc_oracle=_number(tags.get("auc_oracle", metrics.get("auc_oracle"))),
        ece=_number(tags.get("ece_model")) if "ece_model" in tags else _headline_ece(metrics),
        gini=_number(tags.get("gini_model", metrics.get("gini"))),
        gini_run_rate=_number(tags.get("gini_run_rate", metrics.get("gini_run_rate"))),
        beats_baselines=None if beats is None else beats == "true",
        label_definition=lineage("label_definition"),
        feature_service=lineage("feature_service"),
        feature_count=_number(lineage("feature_count"), int),
        features=features.split(",") if features else [],
        cutoffs_train=cutoffs.split(",") if cutoffs else [],
        cutoff_valid=lineage("cutoff_valid"),
        cutoff_test=lineage("cutoff_test"),
        data_hash=lineage("data_hash"),
        code_version=lineage("code_version"),
        run_id=run_id,
        model_card=tags.get("model_card"),
        last_gate=json.loads(gate) if gate else None,
        run_status=run.info.status if run is not None else None,
        usable=problem is None,
        problem=problem,
    )


def task_versions(client: mlflow.MlflowClient, task: str, name: str) -> list[VersionRow]:
    """Every version of one registered model, newest first ([] when it is not registered)."""
    try:
        found = client.search_model_versions(f"name='{name}'")
    except MlflowException:
        return []
    versions = []
    for summary in found:
        # search results may omit aliases on some stores; the single-version read has them all
        versions.append(client.get_model_version(name, summary.version))
    rows = [version_row(client, task, version) for version in versions]
    return sorted(rows, key=lambda row: int(row.version), reverse=True)


def snapshot(
    client: mlflow.MlflowClient, models: dict[str, str], tasks: Iterable[str] | None = None
) -> dict[str, object]:
    """JSON-able view of the registry: per task its aliases, versions (newest first), audit trail
    and any inconsistency between trail and registry."""
    out = []
    for task in tasks or models:
        name = models[task]
        rows = task_versions(client, task, name)
        aliases = {alias: row.version for row in rows for alias in row.aliases}
        history = read_history(client, name)
        current = {alias: aliases.get(alias) for alias in {entry.alias for entry in history}}
        out.append(
            {
                "task": task,
                "model": name,
                "registered": bool(rows) or _exists(client, name),
                "aliases": aliases,
                "versions": [asdict(row) for row in rows],
                "history": [entry.model_dump() for entry in history],
                "history_problems": history_problems(history, current),
            }
        )
    return {"generated_at": utc_now(), "tasks": out}


def _exists(client: mlflow.MlflowClient, name: str) -> bool:
    try:
        client.get_registered_model(name)
        return True
    except MlflowException:
        return False
