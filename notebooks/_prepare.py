"""The notebooks' shared first step: build only what the workspace still lacks.

Why: each notebook must run standalone on a fresh machine and also in sequence in CI, against
the same small world; one copy of these few library calls keeps the notebooks identical in that
respect. Heavy libraries (Feast, MLflow, LightGBM) are imported only by the steps that need them,
so a notebook that only reads canonical data starts quickly.

Contract of :func:`prepare`: afterwards the workspace holds at least the level asked for —
``"canonical"`` (ingested data), ``"features"`` (snapshots, Feast repo applied, online store
materialised) or ``"models"`` (a registered version of every task). A step whose output exists is
never repeated, so a workspace filled by ``make demo`` is used as it is. When there is no data,
a world of ``$CXPREDICT_NOTEBOOK_CUSTOMERS`` customers (default 3,000) is generated with a fixed
seed and end date, so the same size gives the same results.
"""

from __future__ import annotations

import json
import logging
import os
import warnings
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta

import pandas as pd

from cxpredict.workspace import Workspace
from cxpredict import tasks as registry

CUSTOMERS_VARIABLE = "CXPREDICT_NOTEBOOK_CUSTOMERS"
DEFAULT_CUSTOMERS = 3_000
SEED = 7
END = date(2026, 11, 1)
"""Exclusive end of a generated world's history: fixed, so results do not depend on today's date."""
LEVELS = ("canonical", "features", "models")


@dataclass
class Prepared:
    """What :func:`prepare` found or built.

    ``as_of`` is the moment the features describe (None below level ``features``); ``alias`` is
    the registry alias to read models by (None below level ``models``): ``champion`` when churn and
    next purchase have one, else ``challenger`` (the versions just trained, as ``cxpredict demo``
    does).
    """

    ws: Workspace
    as_of: pd.Timestamp | None = None
    alias: str | None = None
    done: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        lines = [f"workspace: {self.ws.root}"]
        if self.as_of is not None:
            lines.append(f"features as of: {self.as_of:%Y-%m-%d}")
        if self.alias is not None:
            lines.append(f"models read by alias: {self.alias}")
        lines += [f"built: {step}" for step in self.done] or ["built: nothing, the workspace was ready"]
        return "\n".join(lines)


def world_size() -> int:
    return int(os.environ.get(CUSTOMERS_VARIABLE) or DEFAULT_CUSTOMERS)


def quiet_libraries() -> None:
    """Keep notebook outputs readable: no MLflow INFO lines or progress bars, no library chatter.

    Called before and after importing Feast, because Feast adds warning filters of its own at import.
    """
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for message in (
        "On demand feature view is an experimental feature",
        ".*noload.*",
        r"fetch_arrow_table\(\) is deprecated",
        "IProgress not found",
    ):
        warnings.filterwarnings("ignore", message=message)


def _has_raw(ws: Workspace) -> bool:
    return any((ws.raw_dir / f"transactions{suffix}").exists() for suffix in (".parquet", ".csv"))


def _data_end(ws: Workspace) -> datetime:
    """UTC midnight at the end of the data: a generated world's end, else the day after the last purchase."""
    world = ws.truth_dir / "world.json"
    if world.is_file():
        end = date.fromisoformat(json.loads(world.read_text())["config"]["end"])
        return datetime.combine(end, time(0), tzinfo=UTC)
    from features.catalog import read_canonical

    last = read_canonical(ws, "transactions")["timestamp"].max()
    return datetime.combine(last.date() + timedelta(days=1), time(0), tzinfo=UTC)


def _ensure_canonical(ws: Workspace, done: list[str]) -> None:
    from features.catalog import current_version
    from features.ingest import ingest

    if current_version(ws) is not None:
        return
    if not _has_raw(ws):
        from features.synthetic import WorldConfig, generate

        config = WorldConfig(customers=world_size(), seed=SEED, end=END)
        generate(ws, config)
        done.append(f"generated {config.customers:,} customers (seed {SEED}, history to {END})")
    report = ingest(ws, now=_data_end(ws))
    done.append(f"ingested {sum(s.accepted for s in report.sources.values()):,} rows")


def _ensure_features(ws: Workspace, done: list[str]) -> pd.Timestamp:
    quiet_libraries()
    from features.snapshots import build_features
    from features.store import apply_repo, materialize_latest
    from training.data import default_as_of

    quiet_libraries()
    if not (ws.features_dir / "manifest.json").exists():
        moment = _data_end(ws)
        build = build_features(ws, moment)
        apply_repo(ws)
        materialize_latest(ws, end=moment)
        done.append(f"built features as of {moment:%Y-%m-%d} ({sum(build.features.values())} features)")
    return default_as_of(ws)


def _ensure_models(ws: Workspace, as_of: pd.Timestamp, done: list[str]) -> str:
    from training.run import train_workspace
    from training.tracking import CHALLENGER, CHAMPION, resolve_tracking, version_info

    target = resolve_tracking(ws)
    aliases = (CHAMPION, CHALLENGER)
    missing = tuple(
        task for task in registry.names() if not any(version_info(target, task, alias) for alias in aliases)
    )
    if missing:
        results = train_workspace(ws, missing, as_of=as_of)
        done += [f"trained {task}: {result.decision or result.reason}" for task, result in results.items()]
    champions = [version_info(target, task, CHAMPION) for task in ("churn", "next_purchase")]
    return CHAMPION if all(champions) else CHALLENGER


def prepare(ws: Workspace, until: str = "models") -> Prepared:
    """Bring ``ws`` up to level ``until`` (``canonical`` | ``features`` | ``models``), building only
    what is missing."""
    if until not in LEVELS:
        raise ValueError(f"until must be one of {', '.join(LEVELS)}, not {until!r}")
    prepared = Prepared(ws.ensure())
    _ensure_canonical(ws, prepared.done)
    if until == "canonical":
        return prepared
    prepared.as_of = _ensure_features(ws, prepared.done)
    if until == "models":
        prepared.alias = _ensure_models(ws, prepared.as_of, prepared.done)
    return prepared
