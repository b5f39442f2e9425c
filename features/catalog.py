"""The canonical catalog: versioned folders of canonical tables, swapped in atomically.

Why: a run killed half-way must leave the previous canonical tables whole and readable. Each
ingest builds a complete new version under ``<ws>/.canonical-versions/<version-id>/`` and only
then replaces the ``<ws>/canonical`` symlink (a temporary symlink moved over it with
``os.replace``, which is atomic on POSIX). The previous version is kept; older ones are deleted.

Layout of a version: ``<source>.parquet`` (contract schema), ``quarantine/<source>.parquet``,
``identity/*.parquet`` and ``identity/key.txt``, ``profile.parquet``, ``manifest.json``,
``report.json``.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel

from cxpredict.workspace import Workspace, exclusive
from features.contract import SOURCES, pandas_types

VERSIONS_DIR = ".canonical-versions"
LOCK_FILE = ".canonical.lock"
MANIFEST_FILE = "manifest.json"
REPORT_FILE = "report.json"
PROFILE_FILE = "profile.parquet"
QUARANTINE_DIR = "quarantine"
IDENTITY_DIR = "identity"
IDENTITY_KEY_FILE = "key.txt"


class CatalogError(RuntimeError):
    """The canonical folder is not in the shape this catalog writes (e.g. a plain directory)."""


class SourceManifest(BaseModel):
    """What the current canonical table of one source holds."""

    rows: int
    columns_supplied: list[str]
    files: list[str] = []


class Manifest(BaseModel):
    """The current canonical version: per source row count and the columns actually supplied.

    Downstream leaves out a feature whose input column was never supplied instead of zero-filling it.
    """

    version: str
    created_at: datetime
    sources: dict[str, SourceManifest]
    quarantine_rows: dict[str, int] = {}
    profile_rows: int = 0
    identity_links: int = 0
    ambiguous_identifiers: int = 0

    def has(self, source: str) -> bool:
        return source in self.sources

    def supplied(self, source: str) -> list[str]:
        """Contract columns the source's files supplied (empty when the source was never ingested)."""
        return self.sources[source].columns_supplied if source in self.sources else []


def versions_root(ws: Workspace) -> Path:
    return ws.root / VERSIONS_DIR


def current_version(ws: Workspace) -> Path | None:
    """The folder ``<ws>/canonical`` points to, or None before the first ingest."""
    link = ws.canonical_dir
    if not link.is_symlink():
        if link.exists():
            raise CatalogError(f"{link} is not a symlink to a canonical version; move it away to ingest")
        return None
    target = link.resolve()
    return target if target.is_dir() else None


def _read(path: Path) -> pd.DataFrame | None:
    return pandas_types(pq.read_table(path)) if path.exists() else None


def read_canonical(ws: Workspace, source: str) -> pd.DataFrame | None:
    """The canonical table of a source (every contract column), or None if it was never ingested."""
    if source not in SOURCES:
        raise ValueError(f"unknown source {source!r}; sources are {', '.join(SOURCES)}")
    version = current_version(ws)
    return None if version is None else _read(version / f"{source}.parquet")


def read_quarantine(ws: Workspace, source: str) -> pd.DataFrame | None:
    """Quarantined raw rows of a source, as strings, with ``_rule, _reason, _source_file, _row_number,
    _row_hash``."""
    version = current_version(ws)
    return None if version is None else _read(version / QUARANTINE_DIR / f"{source}.parquet")


def read_identity(ws: Workspace, name: str) -> pd.DataFrame | None:
    """An identity table: ``links``, ``ambiguous``, ``attachments`` or ``pairs``."""
    version = current_version(ws)
    return None if version is None else _read(version / IDENTITY_DIR / f"{name}.parquet")


def read_profile(ws: Workspace) -> pd.DataFrame | None:
    """The unified profile (one row per customer seen anywhere), or None before the first ingest."""
    version = current_version(ws)
    return None if version is None else _read(version / PROFILE_FILE)


def read_identity_key(ws: Workspace) -> str | None:
    """The per-workspace key of the identifier hashes, or None before the first ingest."""
    version = current_version(ws)
    path = None if version is None else version / IDENTITY_DIR / IDENTITY_KEY_FILE
    return path.read_text().strip() if path is not None and path.exists() else None


def canonical_manifest(ws: Workspace) -> Manifest | None:
    """The manifest of the current canonical version, or None before the first ingest."""
    version = current_version(ws)
    if version is None or not (version / MANIFEST_FILE).exists():
        return None
    return Manifest.model_validate_json((version / MANIFEST_FILE).read_text())


def write_parquet(table: pa.Table, path: Path) -> None:
    """The one table writer of the catalog (a single seam, so tests can inject a failure here)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table, path)


class StagedVersion:
    """A version folder being built; invisible to readers until :func:`commit` swaps it in."""

    def __init__(self, ws: Workspace, version_id: str) -> None:
        self.ws = ws
        self.id = version_id
        self.path = versions_root(ws) / version_id

    def write_table(self, relative: str, table: pa.Table) -> None:
        write_parquet(table, self.path / relative)

    def write_json(self, relative: str, payload: BaseModel) -> None:
        self.write_text(relative, payload.model_dump_json(indent=2))

    def write_text(self, relative: str, text: str) -> None:
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)

    def carry(self, relative: str, previous: Path | None) -> bool:
        """Reuse an unchanged file of the previous version (hard link; versions are immutable)."""
        source = None if previous is None else previous / relative
        if source is None or not source.exists():
            return False
        target = self.path / relative
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(source, target)
        except OSError:
            shutil.copy2(source, target)
        return True


def new_version_id(now: datetime | None = None) -> str:
    stamp = (now or datetime.now(UTC)).strftime("%Y%m%dT%H%M%S%fZ")
    return f"{stamp}-{secrets.token_hex(4)}"


def stage_version(ws: Workspace) -> StagedVersion:
    staged = StagedVersion(ws, new_version_id())
    staged.path.mkdir(parents=True)
    return staged


def discard(staged: StagedVersion) -> None:
    """Remove a version that was never committed."""
    shutil.rmtree(staged.path, ignore_errors=True)


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def commit(staged: StagedVersion) -> None:
    """Make the staged version current with one atomic rename, then keep only it and the previous one."""
    ws = staged.ws
    previous = current_version(ws)
    for path in sorted(staged.path.rglob("*"), reverse=True) + [staged.path]:
        _fsync(path)
    temporary = ws.root / f".canonical-{staged.id}.tmp"
    temporary.symlink_to(Path(VERSIONS_DIR) / staged.id, target_is_directory=True)
    os.replace(temporary, ws.canonical_dir)
    _fsync(ws.root)
    keep = {staged.path.resolve()} | ({previous.resolve()} if previous is not None else set())
    for folder in versions_root(ws).iterdir():
        if folder.resolve() not in keep:
            shutil.rmtree(folder, ignore_errors=True)


@contextmanager
def ingest_lock(ws: Workspace) -> Iterator[None]:
    """Serialise writers of one workspace (readers never need it: they follow the symlink)."""
    ws.ensure()
    with exclusive(ws.root / LOCK_FILE):
        yield
