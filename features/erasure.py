"""Right to erasure: remove customers from every place the workspace holds them, keep them out, and say so.

Why: a customer who asks to be forgotten must disappear from raw files, every canonical version
kept for rollback, quarantine, identity links, the profile, feature snapshots, the online store,
the event, decision and outcome logs, score files and the MLflow artifacts that hold rows — and
must not come back when old files are ingested again.

Contract:

- :func:`forget` resolves the request's identifiers (customer id, email, phone, loyalty card,
  device id) through the link table to customer ids, writes **tombstones** (HMAC-SHA256 with a
  salt generated once per workspace, of each erased customer id and of every identifier the link
  table resolves to them; never the raw value), then erases place by place (:data:`PLACES`) and
  appends one **audit** entry (hashed subject, time, actor, counts per place).
- Every place is matched by digest, so a request needs no raw identifier once collected: its
  **journal** (``<ws>/erasure/pending/<subject>.json``) holds digests and the places still to do.
  A request killed half-way is finished by running it again or by ``forget --resume``.
- Each file is rewritten next to itself, fsynced and renamed over the old one; each database is
  changed in one transaction, and no deleted row survives in its files: the online store deletes
  with ``secure_delete`` (zeroing what it frees) and rebuilds its indexes (whose pages keep deleted
  keys as separators), the small logs are rebuilt by ``VACUUM``, and either way the WAL is
  checkpointed and truncated. A running server sees the change on its next read: its SQLite connections read the
  committed state, and the files keep their inode.
- :func:`drop_erased` is the ingest hook: rows whose customer id or identifier matches a tombstone
  are dropped and counted as ``erased``.

Identifiers shared with another customer (a family inbox: ambiguous in the link table) are not
tombstoned: they identify nobody, and tombstoning them would drop the other customer's rows.
"""

from __future__ import annotations

import csv
import getpass
import hmac
import json
import os
import secrets
import signal
import sqlite3
import struct
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel

from cxpredict.workspace import Workspace
from features import catalog
from features.contract import IDENTIFIER_KINDS, STRING_DTYPE, normalise_identifiers, normalise_name

KINDS: tuple[str, ...] = ("customer_id", *IDENTIFIER_KINDS)
PLACES: tuple[str, ...] = ("raw", "canonical", "mlflow", "features", "online_store", "event_log",
                           "decision_log", "scores", "truth")  # fmt: skip
"""Erasure order. MLflow comes before the feature snapshots: its input examples are recognised by
comparing them with the erased customers' snapshot rows."""
SALT_FILE = "salt"
TOMBSTONES_FILE = "tombstones.tsv"
AUDIT_FILE = "audit.jsonl"
PENDING_DIR = "pending"
ONLINE_STORE_ENV = "CXPREDICT_FEAST_ONLINE_STORE"
"""Chooses the online store (``RepoSettings``); unset means SQLite, read without importing Feast."""
KILL_AFTER_ENV = "CXPREDICT_ERASURE_KILL_AFTER"
"""Tests only: the process kills itself (SIGKILL) once the named place is done and journaled."""
TABULAR = (".parquet", ".csv")
OWNED_FOLDERS = frozenset({"raw", "truth", "features", "feast", "mlflow", catalog.VERSIONS_DIR, "canonical",
                           "erasure", "events", "decisions"})  # fmt: skip
"""Top-level folders erased by their own place; tabular files anywhere else count as score exports."""
DELETE_CHUNK = 500
FILE_WORKERS = 2
CHECKPOINT_TRIES = 50


class ErasureError(ValueError):
    """A request or request file that cannot be read; nothing was erased."""


# --- digests ---------------------------------------------------------------------------------------


def normalise(kind: str, values: pd.Series) -> pd.Series:
    """Values in the form ingest matches them in: ids stripped, identifiers as stitching normalises them."""
    text = values.astype(STRING_DTYPE) if not isinstance(values.dtype, pd.StringDtype) else values
    if kind == "customer_id":
        text = text.str.strip()
        return text.mask(text == "")
    return normalise_identifiers(pd.DataFrame({kind: text}, index=values.index))[kind]


def digest(salt: bytes, kind: str, value: str) -> str:
    """HMAC-SHA256 of one normalised value, keyed by the workspace salt and bound to its kind."""
    return hmac.digest(salt, f"{kind}\x1f{value}".encode(), "sha256").hex()


def workspace_salt(ws: Workspace, create: bool = True) -> bytes | None:
    """The workspace's tombstone salt, generated once (32 random bytes) and never changed."""
    path = ws.erasure_dir / SALT_FILE
    if not path.exists():
        if not create:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return bytes.fromhex(path.read_text().strip())
        with os.fdopen(descriptor, "w") as handle:
            handle.write(secrets.token_hex(32))
            handle.flush()
            os.fsync(handle.fileno())
        _fsync_dir(path.parent)
    return bytes.fromhex(path.read_text().strip())


Digests = dict[str, set[str]]


def _empty() -> Digests:
    return {kind: set() for kind in KINDS}


def read_tombstones(ws: Workspace) -> Digests:
    """Every tombstone of the workspace by kind (``kind<TAB>digest`` per line)."""
    found = _empty()
    path = ws.erasure_dir / TOMBSTONES_FILE
    if path.exists():
        for line in path.read_text().splitlines():
            kind, _, value = line.partition("\t")
            if kind in found and value:
                found[kind].add(value)
    return found


def _add_tombstones(ws: Workspace, new: Digests) -> None:
    merged = read_tombstones(ws)
    for kind, values in new.items():
        merged[kind] |= values
    text = "".join(f"{kind}\t{value}\n" for kind in KINDS for value in sorted(merged[kind]))
    _atomic_text(ws.erasure_dir / TOMBSTONES_FILE, text)


@dataclass
class Matcher:
    """Which values of each kind are erased: by digest, with a cache so each distinct value is hashed
    once per run. ``known`` holds raw values already recognised; when ``complete`` they are all of
    them (a fresh request), so masks need no hashing at all."""

    salt: bytes
    digests: Digests
    known: dict[str, set[str]] = field(default_factory=lambda: {kind: set() for kind in KINDS})
    complete: bool = False
    _seen: dict[str, dict[str, bool]] = field(default_factory=lambda: {kind: {} for kind in KINDS})

    @property
    def empty(self) -> bool:
        return not any(self.digests.values())

    def matches(self, kind: str, values: Iterable[str]) -> list[str]:
        """The given distinct values of ``kind`` that are erased."""
        if self.complete:
            return [v for v in values if v in self.known[kind]]
        seen, wanted = self._seen[kind], self.digests[kind]
        out = []
        for value in values:
            hit = seen.get(value)
            if hit is None:
                hit = seen[value] = digest(self.salt, kind, value) in wanted
                if hit:
                    self.known[kind].add(value)
            if hit:
                out.append(value)
        return out

    def mask(self, kind: str, values: pd.Series) -> np.ndarray:
        """Per value (already normalised): whether it is erased."""
        if not self.digests[kind]:
            return np.zeros(len(values), dtype=bool)
        if self.complete:
            return (
                values.isin(self.known[kind]).to_numpy(dtype=bool)
                if self.known[kind]
                else np.zeros(len(values), dtype=bool)
            )
        hits = self.matches(kind, pd.unique(values.dropna().to_numpy()).tolist())
        return values.isin(hits).to_numpy(dtype=bool) if hits else np.zeros(len(values), dtype=bool)


def erased_spellings(kind: str, distinct: list, matcher: Matcher) -> list:
    """The distinct raw values of a column (as written) whose normalised form is erased."""
    if not distinct or not matcher.digests[kind]:
        return []
    raw = pd.Series(distinct, dtype=STRING_DTYPE)
    forms = normalise(kind, raw)
    hits = set(matcher.matches(kind, pd.unique(forms.dropna().to_numpy()).tolist()))
    return raw[forms.isin(hits).to_numpy(dtype=bool)].tolist() if hits else []


def erased_rows(frame: pd.DataFrame, matcher: Matcher) -> np.ndarray:
    """Rows whose customer id or any identifier column (names compared normalised) is erased. Each
    distinct value is normalised and matched once, however many rows repeat it."""
    mask = np.zeros(len(frame), dtype=bool)
    for column in frame.columns:
        kind = normalise_name(column)
        if kind in KINDS and matcher.digests[kind]:
            values = frame[column].astype(STRING_DTYPE)
            hits = erased_spellings(kind, pd.unique(values.dropna().to_numpy()).tolist(), matcher)
            if hits:
                mask |= values.isin(hits).to_numpy(dtype=bool)
    return mask


def _identity_columns(names: Iterable[str]) -> list[str]:
    return [name for name in names if normalise_name(name) in KINDS]


def table_rows(table: pa.Table, matcher: Matcher) -> np.ndarray:
    """:func:`erased_rows` of an Arrow table, computed on the distinct values of its identity columns."""
    mask = np.zeros(table.num_rows, dtype=bool)
    for name in _identity_columns(table.column_names):
        kind = normalise_name(name)
        if not matcher.digests[kind]:
            continue
        column = table.column(name).cast(pa.string())
        hits = erased_spellings(kind, pc.unique(column).drop_null().to_pylist(), matcher)
        if hits:
            mask |= pc.is_in(column, value_set=pa.array(hits, pa.string())).to_numpy(zero_copy_only=False)
    return mask


def _as_string(dtype: pa.DataType) -> object:
    return STRING_DTYPE if pa.types.is_string(dtype) or pa.types.is_large_string(dtype) else None


# --- the ingest hook ---------------------------------------------------------------------------------


def drop_erased(
    frame: pd.DataFrame, matcher: Matcher | None, origins: pd.DataFrame | None = None
) -> tuple[pd.DataFrame, pd.DataFrame | None, int]:
    """``frame`` without the rows of erased customers (``matcher``: :func:`tombstone_matcher`; None
    erases nothing), ``origins`` (one row per frame row) kept in step, and how many rows were dropped.
    Row labels are kept, so quarantine row numbers still point into the file."""
    if matcher is None:
        return frame, origins, 0
    mask = erased_rows(frame, matcher)
    if not mask.any():
        return frame, origins, 0
    return frame[~mask], None if origins is None else origins[~mask], int(mask.sum())


def tombstone_matcher(ws: Workspace) -> Matcher | None:
    """A matcher over every tombstone of the workspace, or None when nobody was ever erased."""
    salt = workspace_salt(ws, create=False)
    if salt is None:
        return None
    matcher = Matcher(salt, read_tombstones(ws))
    return None if matcher.empty else matcher


# --- files -------------------------------------------------------------------------------------------


def _fsync_dir(folder: Path) -> None:
    descriptor = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)


def _replace(path: Path, write: Callable[[Path], None]) -> None:
    """Write the new content next to ``path``, fsync it, rename it over ``path``, fsync the folder."""
    scratch = path.with_name(f".{path.name}.erasing")
    write(scratch)
    descriptor = os.open(scratch, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
    os.replace(scratch, path)
    _fsync_dir(path.parent)


def _atomic_text(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    _replace(path, lambda scratch: scratch.write_text(text))


def _read_csv(path: Path) -> pa.Table:
    from features.ingest import read_table

    return read_table(path)


def erase_file(path: Path, matcher: Matcher) -> int:
    """Rewrite one CSV or Parquet file without the erased rows; returns how many were removed
    (0 and the file untouched when none)."""
    if path.suffix.lower() == ".parquet":
        handle = pq.ParquetFile(path)
        names = handle.schema_arrow.names
        if not _identity_columns(names):
            return 0
        table = handle.read()
        compression = (
            handle.metadata.row_group(0).column(0).compression if handle.metadata.num_row_groups else None
        )
    else:
        table = _read_csv(path)
        compression = None
    mask = table_rows(table, matcher)
    removed = int(mask.sum())
    if not removed:
        return 0
    kept = table.filter(pa.array(~mask))
    if path.suffix.lower() == ".parquet":
        codec = {"uncompressed": "none"}.get(
            (compression or "snappy").lower(), (compression or "snappy").lower()
        )
        _replace(path, lambda scratch: pq.write_table(kept, scratch, compression=codec))
    else:
        frame = kept.to_pandas(types_mapper=_as_string)
        _replace(path, lambda scratch: frame.to_csv(scratch, index=False))
    return removed


def _tabular(folder: Path, skip: frozenset[str] = frozenset()) -> list[Path]:
    """CSV and Parquet files under ``folder`` (scratch files excluded), leaving out top-level ``skip`` folders."""
    if not folder.is_dir():
        return []
    found = []
    for child in folder.iterdir():
        if child.name in skip or child.is_symlink():
            continue
        found += [child] if child.is_file() else [p for p in child.rglob("*") if p.is_file()]
    return sorted(p for p in found if p.suffix.lower() in TABULAR and not p.name.startswith("."))


def _erase_files(paths: list[Path], matcher: Matcher) -> dict[str, int]:
    """Every file rewritten on its own (atomically), two at a time: Arrow's reading, filtering and
    writing leave the interpreter lock."""
    with ThreadPoolExecutor(max_workers=FILE_WORKERS) as pool:
        removed = list(pool.map(lambda path: erase_file(path, matcher), paths))
    return {"rows": sum(removed), "files_rewritten": sum(1 for n in removed if n)}


# --- the places --------------------------------------------------------------------------------------


@dataclass
class Context:
    ws: Workspace
    matcher: Matcher
    settings: object | None = None


def erase_raw(ctx: Context) -> dict[str, int]:
    return _erase_files(_tabular(ctx.ws.raw_dir), ctx.matcher)


def erase_truth(ctx: Context) -> dict[str, int]:
    return _erase_files(_tabular(ctx.ws.truth_dir), ctx.matcher)


def erase_scores(ctx: Context) -> dict[str, int]:
    """Score files under ``reports/`` and any other CSV/Parquet export kept in the workspace."""
    return _erase_files(_tabular(ctx.ws.root, OWNED_FOLDERS), ctx.matcher)


def erase_features(ctx: Context) -> dict[str, int]:
    """Feature snapshots (every family and date) and the Parquet files Feast keeps (the realtime log)."""
    snapshots = [p for p in _tabular(ctx.ws.features_dir) if catalog.VERSIONS_DIR not in p.parts]
    return _erase_files(snapshots + _tabular(ctx.ws.feast_dir), ctx.matcher)


def _identity_tables(version: Path, matcher: Matcher) -> int | None:
    """Rewrite a version's identity tables without the erased customers' evidence; returns the links
    removed, or None when nothing changed."""
    from features.identity import (
        AMBIGUOUS_SCHEMA,
        ATTACHMENT_SCHEMA,
        LINK_SCHEMA,
        NODE,
        PAIR_SCHEMA,
        Evidence,
        build_graph,
    )

    folder = version / catalog.IDENTITY_DIR
    paths = {name: folder / f"{name}.parquet" for name in ("attachments", "pairs", "links", "ambiguous")}
    if not all(p.exists() for p in paths.values()):
        return None
    read = {name: catalog.pandas_types(pq.read_table(p)) for name, p in paths.items()}
    links, attachments, pairs = read["links"], read["attachments"], read["pairs"]
    theirs = links[matcher.mask("customer_id", links["customer_id"])][NODE]
    nodes = set(theirs.itertuples(index=False, name=None))
    owned = matcher.mask("customer_id", attachments["customer_id"])
    owned |= np.array([n in nodes for n in attachments[NODE].itertuples(index=False, name=None)], dtype=bool)
    paired = np.array([(a, x) in nodes or (b, y) in nodes for a, x, b, y in
                       pairs[["kind_a", "hash_a", "kind_b", "hash_b"]].itertuples(index=False, name=None)],
                      dtype=bool)  # fmt: skip
    if not owned.any() and not paired.any():
        return None
    evidence = Evidence(attachments[~owned].reset_index(drop=True), pairs[~paired].reset_index(drop=True))
    if len(evidence.attachments) or len(evidence.pairs):
        graph = build_graph(evidence)
        new_links, ambiguous = graph.links(), graph.ambiguous()
    else:
        new_links, ambiguous = links.iloc[:0], read["ambiguous"].iloc[:0]
    for name, frame, schema in (("attachments", evidence.attachments, ATTACHMENT_SCHEMA),
                                ("pairs", evidence.pairs, PAIR_SCHEMA), ("links", new_links, LINK_SCHEMA),
                                ("ambiguous", ambiguous, AMBIGUOUS_SCHEMA)):  # fmt: skip
        arrow = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        _replace(paths[name], lambda scratch, arrow=arrow: pq.write_table(arrow, scratch))
    return len(links) - len(new_links)


def _rows(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows


def _refresh_manifest(version: Path) -> None:
    """Row counts of the manifest as the version's files now hold them."""
    path = version / catalog.MANIFEST_FILE
    if not path.exists():
        return
    manifest = catalog.Manifest.model_validate_json(path.read_text())
    for source, entry in manifest.sources.items():
        table = version / f"{source}.parquet"
        if table.exists():
            entry.rows = _rows(table)
    manifest.quarantine_rows = {source: _rows(version / catalog.QUARANTINE_DIR / f"{source}.parquet")
                                for source in manifest.quarantine_rows
                                if (version / catalog.QUARANTINE_DIR / f"{source}.parquet").exists()}  # fmt: skip
    if (version / catalog.PROFILE_FILE).exists():
        manifest.profile_rows = _rows(version / catalog.PROFILE_FILE)
    identity = version / catalog.IDENTITY_DIR
    if (identity / "links.parquet").exists():
        manifest.identity_links = _rows(identity / "links.parquet")
        manifest.ambiguous_identifiers = _rows(identity / "ambiguous.parquet")
    _atomic_text(path, manifest.model_dump_json(indent=2))


def _scrub_report(version: Path, matcher: Matcher) -> None:
    """Leading-zero mismatch examples of the ingest report quote customer ids: drop the erased ones."""
    path = version / catalog.REPORT_FILE
    if not path.exists():
        return
    report = json.loads(path.read_text())
    changed = False
    for mismatch in report.get("id_mismatches", []):
        examples = mismatch.get("examples", [])
        kept = [pair for pair in examples if not matcher.matches("customer_id", [str(v) for v in pair])]
        if len(kept) != len(examples):
            mismatch["examples"], changed = kept, True
    if changed:
        _atomic_text(path, json.dumps(report, indent=2))


def erase_canonical(ctx: Context) -> dict[str, int]:
    """Every canonical version kept (current and previous): tables, quarantine, identity, profile."""
    counts = {"versions": 0, "rows": 0, "quarantine_rows": 0, "profile_rows": 0, "identity_links": 0}
    root = catalog.versions_root(ctx.ws)
    versions = sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []
    for version in versions:
        before = dict(counts)
        tables = sorted(version.glob("*.parquet")) + sorted(
            (version / catalog.QUARANTINE_DIR).glob("*.parquet")
        )
        with ThreadPoolExecutor(max_workers=FILE_WORKERS) as pool:
            removed = list(pool.map(lambda path: erase_file(path, ctx.matcher), tables))
        for table, n in zip(tables, removed, strict=True):
            if table.parent.name == catalog.QUARANTINE_DIR:
                counts["quarantine_rows"] += n
            else:
                counts["profile_rows" if table.name == catalog.PROFILE_FILE else "rows"] += n
        links = _identity_tables(version, ctx.matcher)
        counts["identity_links"] += links or 0
        if counts != before or links is not None:
            _refresh_manifest(version)
            counts["versions"] += 1
        _scrub_report(version, ctx.matcher)
    return counts


def _snapshot_rows(ws: Workspace, matcher: Matcher, columns: set[str]) -> pd.DataFrame:
    """The erased customers' snapshot rows (every family joined per customer and date) over ``columns``."""
    per_family = []
    for family in sorted(p for p in ws.features_dir.iterdir() if p.is_dir() and not p.name.startswith(".")):
        frames = []
        for path in sorted(family.glob("snapshot_date=*/data.parquet")):
            handle = pq.ParquetFile(path)
            wanted = [c for c in handle.schema_arrow.names if c in columns]
            if not wanted:
                continue
            ids = handle.read(columns=["customer_id"]).column(0).to_pandas(types_mapper=_as_string)
            hit = matcher.mask("customer_id", ids)
            if hit.any():
                rows = handle.read(columns=["customer_id", *wanted]).filter(pa.array(hit)).to_pandas()
                frames.append(rows.assign(__date=path.parent.name))
        if frames:
            per_family.append(pd.concat(frames, ignore_index=True))
    if not per_family:
        return pd.DataFrame()
    joined = per_family[0]
    for frame in per_family[1:]:
        joined = joined.merge(frame, on=["customer_id", "__date"], how="outer")
    return joined


def _same(example: object, value: object) -> bool:
    if example is None or (isinstance(example, float) and np.isnan(example)):
        return value is None or (isinstance(value, float) and np.isnan(value)) or pd.isna(value)
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return False
    if isinstance(example, int | float) and not isinstance(value, str):
        return bool(np.isclose(float(example), float(value), rtol=1e-9, atol=1e-12))
    return str(example) == str(value)


def _example_rows(example: dict, erased: pd.DataFrame) -> list[int]:
    """Positions of input example rows equal, on every stored feature, to an erased customer's row."""
    columns = [c for c in example["columns"] if c in erased.columns]
    if not columns or erased.empty:
        return []
    where = [example["columns"].index(c) for c in columns]
    candidates = erased[columns].to_numpy(dtype=object)
    hits = []
    for position, row in enumerate(example["data"]):
        values = [row[i] for i in where]
        if any(all(_same(v, c) for v, c in zip(values, candidate, strict=True)) for candidate in candidates):
            hits.append(position)
    return hits


def erase_mlflow(ctx: Context) -> dict[str, int]:
    """Logged models' input examples (rows of feature values, no id) that are an erased customer's
    snapshot row: the row is removed; an example left empty is removed with its MLmodel entry."""
    import yaml

    counts = {"example_rows": 0, "examples_removed": 0}
    folder = ctx.ws.mlflow_dir
    examples = sorted(folder.rglob("input_example.json")) if folder.is_dir() else []
    if not examples or not ctx.ws.features_dir.is_dir():
        return counts
    parsed = {path: json.loads(path.read_text()) for path in examples}
    wanted = {c for example in parsed.values() for c in example.get("columns", [])}
    erased = _snapshot_rows(ctx.ws, ctx.matcher, wanted)
    for path, example in parsed.items():
        if "data" not in example or "columns" not in example:
            continue
        hits = set(_example_rows(example, erased))
        if not hits:
            continue
        counts["example_rows"] += len(hits)
        kept = [row for i, row in enumerate(example["data"]) if i not in hits]
        serving = path.with_name("serving_input_example.json")
        if kept:
            remaining = {**example, "data": kept}
            if "index" in example:
                remaining["index"] = [v for i, v in enumerate(example["index"]) if i not in hits]
            _atomic_text(path, json.dumps(remaining))
            if serving.exists():
                split = {"columns": example["columns"], "data": kept}
                _atomic_text(serving, json.dumps({"dataframe_split": split}, indent=2))
            continue
        counts["examples_removed"] += 1
        model_file = path.with_name("MLmodel")
        if model_file.exists():
            spec = yaml.safe_load(model_file.read_text())
            spec.pop("saved_input_example_info", None)
            _atomic_text(model_file, yaml.safe_dump(spec, sort_keys=False))
        for stale in (path, serving):
            stale.unlink(missing_ok=True)
        _fsync_dir(path.parent)
    return counts


def _entity_ids(keys: list[bytes], prefix: bytes, suffix: bytes = b"") -> dict[bytes, str]:
    """Customer ids inside Feast's serialised entity keys (single string join key); others skipped."""
    found = {}
    for key in keys:
        body = key[: len(key) - len(suffix)] if suffix else key
        if not body.startswith(prefix) or (suffix and not key.endswith(suffix)):
            continue
        rest = body[len(prefix) :]
        if len(rest) >= 4 and struct.unpack("<I", rest[:4])[0] == len(rest) - 4:
            found[key] = rest[4:].decode("utf-8", errors="replace")
    return found


ENTITY_KEY_PREFIX = struct.pack("<II", 1, 2) + struct.pack("<I", 11) + b"customer_id" + struct.pack("<I", 2)
"""Feast's serialised entity key (version 3) of one string ``customer_id`` up to the value's length:
key count, key type, key name, value type (``features.online.EntityKeyEncoder`` builds the same; a
test checks they agree). Spelled out so erasing a SQLite store needs no Feast import."""


def _vacuum(path: Path, rebuild: bool = True) -> None:
    """Empty the database's WAL into it (so no old page image survives there) and, with ``rebuild``,
    first rebuild it without free pages, so deleted rows leave the files. Without ``rebuild`` the
    deletion must have run with ``secure_delete`` (which zeroes what it deletes): the online store,
    which rebuilds its indexes instead."""
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    try:
        connection.execute("PRAGMA busy_timeout=30000")
        if rebuild:
            connection.execute("VACUUM")
        for _ in range(CHECKPOINT_TRIES):
            busy, _, _ = connection.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
            if not busy:
                break
            time.sleep(0.1)
    finally:
        connection.close()


def _erase_sqlite_online(path: Path, matcher: Matcher) -> dict[str, int]:
    counts = {"rows": 0, "customers": 0}
    if not path.exists():
        return counts
    connection = sqlite3.connect(path, isolation_level=None, timeout=30)
    erased: set[str] = set()
    try:
        connection.execute("PRAGMA busy_timeout=30000")
        connection.execute("PRAGMA secure_delete=ON")
        connection.execute("CREATE TEMP TABLE IF NOT EXISTS cx_erased (entity_key BLOB PRIMARY KEY)")
        tables = [name for (name,) in connection.execute("SELECT name FROM sqlite_master WHERE type='table'")
                  if "entity_key" in {row[1] for row in connection.execute(f'PRAGMA table_info("{name}")')}]  # fmt: skip
        connection.execute("BEGIN IMMEDIATE")
        try:
            for table in tables:
                keys = [key for (key,) in connection.execute(f'SELECT DISTINCT entity_key FROM "{table}"')]
                ids = _entity_ids(keys, ENTITY_KEY_PREFIX)
                hits = set(matcher.matches("customer_id", sorted(set(ids.values()))))
                doomed = [(key,) for key, customer in ids.items() if customer in hits]
                erased |= hits
                if doomed:
                    connection.execute("DELETE FROM temp.cx_erased")
                    connection.executemany("INSERT OR IGNORE INTO temp.cx_erased VALUES (?)", doomed)
                    cursor = connection.execute(
                        f'DELETE FROM "{table}" WHERE entity_key IN (SELECT entity_key FROM temp.cx_erased)'
                    )
                    counts["rows"] += cursor.rowcount
            connection.execute("COMMIT")
        except BaseException:
            connection.execute("ROLLBACK")
            raise
        if counts["rows"]:
            # Index pages keep deleted keys as separators: rebuilding the indexes (their old pages
            # freed, and zeroed by secure_delete) removes them, at a fraction of a VACUUM's cost.
            connection.execute("REINDEX")
    finally:
        connection.close()
    counts["customers"] = len(erased)
    if counts["rows"]:
        _vacuum(path, rebuild=False)
    return counts


def _erase_redis(store, matcher: Matcher) -> dict[str, int]:
    """Delete the erased customers' hashes (one per entity key) in one MULTI/EXEC transaction."""
    config = store.config
    client = store._get_provider().online_store._get_client(config.online_store)
    suffix = config.project.encode()
    keys = list(client.scan_iter(match=b"*" + suffix, count=10_000))
    ids = _entity_ids(keys, ENTITY_KEY_PREFIX, suffix)
    hits = set(matcher.matches("customer_id", sorted(set(ids.values()))))
    doomed = [key for key, customer in ids.items() if customer in hits]
    if doomed:
        pipe = client.pipeline(transaction=True)
        pipe.delete(*doomed)
        pipe.execute()
    return {"keys": len(doomed), "customers": len(hits)}


def erase_online_store(ctx: Context) -> dict[str, int]:
    """The SQLite online store (rows deleted in one transaction with ``secure_delete``, the indexes
    rebuilt, then the WAL checkpointed and truncated) or Redis keys."""
    settings = ctx.settings
    if settings is None and os.environ.get(ONLINE_STORE_ENV):
        from features.feature_repo.definitions import RepoSettings

        settings = RepoSettings()
    if settings is not None and settings.online_store == "redis":
        from features.store import open_store

        return _erase_redis(open_store(ctx.ws, settings), ctx.matcher)
    return _erase_sqlite_online(ctx.ws.feast_dir / "online_store.db", ctx.matcher)


EVENT_LOG = ("CXPREDICT_EVENT_LOG_URL", "events/events.db", "cx_events", None)
DECISION_LOG = ("CXPREDICT_DECISION_LOG_URL", "decisions/decisions.db", "cx_decisions", "cx_outcomes")
"""(URL variable, default SQLite file in the workspace, table keyed by customer_id, outcomes table) of
the durable logs, as ``features.event_log`` and ``features.decision_log`` define them (a test checks
they agree); the tables are reflected, so erasing needs neither module nor Feast, which they import."""


def _log_url(ws: Workspace, log: tuple) -> str:
    return os.environ.get(log[0]) or f"sqlite:///{(ws.root / log[1]).as_posix()}"


def _after_delete(engine, url: str, tables: list[str]) -> None:
    if url.startswith("sqlite:///"):
        engine.dispose()
        _vacuum(Path(url.removeprefix("sqlite:///")))
    elif engine.dialect.name == "postgresql":
        from sqlalchemy import text

        with engine.connect().execution_options(isolation_level="AUTOCOMMIT") as connection:
            for table in tables:
                connection.execute(text(f'VACUUM "{table}"'))


def _erase_log(ws: Workspace, log: tuple, matcher: Matcher) -> tuple[int, int] | None:
    """Delete the erased customers' rows (and, for decisions, their outcomes) in one transaction;
    (rows, outcome rows) removed, or None when the log does not exist."""
    from sqlalchemy import MetaData, Table, create_engine, inspect, select

    url, (_, _, name, outcomes_name) = _log_url(ws, log), log
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).exists():
        return None
    engine = create_engine(url)
    try:
        if not inspect(engine).has_table(name):
            return None
        metadata = MetaData()
        table = Table(name, metadata, autoload_with=engine)
        outcomes = Table(outcomes_name, metadata, autoload_with=engine) if outcomes_name else None
        removed = removed_outcomes = 0
        with engine.begin() as connection:
            present = [row[0] for row in connection.execute(select(table.c.customer_id).distinct())]
            hits = matcher.matches("customer_id", present)
            for start in range(0, len(hits), DELETE_CHUNK):
                chunk = hits[start : start + DELETE_CHUNK]
                if outcomes is not None:
                    decided = select(table.c.decision_id).where(table.c.customer_id.in_(chunk))
                    removed_outcomes += connection.execute(
                        outcomes.delete().where(outcomes.c.decision_id.in_(decided))
                    ).rowcount
                removed += connection.execute(table.delete().where(table.c.customer_id.in_(chunk))).rowcount
        if removed:
            _after_delete(engine, url, [name] + ([outcomes_name] if outcomes_name else []))
        return removed, removed_outcomes
    finally:
        engine.dispose()


def erase_event_log(ctx: Context) -> dict[str, int]:
    """The durable event log (SQLite in the workspace, or the configured database, e.g. PostgreSQL)."""
    found = _erase_log(ctx.ws, EVENT_LOG, ctx.matcher)
    return {"rows": found[0] if found else 0}


def erase_decision_log(ctx: Context) -> dict[str, int]:
    """Decisions and the outcomes reported for them."""
    found = _erase_log(ctx.ws, DECISION_LOG, ctx.matcher)
    return {"decisions": found[0] if found else 0, "outcomes": found[1] if found else 0}


ERASERS: dict[str, Callable[[Context], dict[str, int]]] = {
    "raw": erase_raw, "canonical": erase_canonical, "mlflow": erase_mlflow, "features": erase_features,
    "online_store": erase_online_store, "event_log": erase_event_log, "decision_log": erase_decision_log,
    "scores": erase_scores, "truth": erase_truth,
}  # fmt: skip


# --- requests, journal, audit ------------------------------------------------------------------------


class Request(BaseModel):
    """Identifiers to forget, by kind (raw values as given; normalised before use)."""

    identifiers: dict[str, list[str]]

    def count(self) -> int:
        return sum(len(v) for v in self.identifiers.values())


class Journal(BaseModel):
    """A request in progress: digests only (never a raw value) and what each place removed so far."""

    subject: str
    requested_at: datetime
    actor: str
    identifiers: int
    not_found: int
    customers: int
    digests: dict[str, list[str]]
    done: dict[str, dict[str, int]] = {}
    resumed: int = 0


class AuditEntry(BaseModel):
    """One erasure request as the audit keeps it: the hashed subject, when, who, and counts per place."""

    subject: str
    requested_at: datetime
    completed_at: datetime
    actor: str
    identifiers: int
    not_found: int
    customers: int
    tombstones: int
    resumed: int
    removed: dict[str, dict[str, int]]

    @property
    def total(self) -> int:
        return sum(n for counts in self.removed.values() for name, n in counts.items()
                   if name not in ("versions", "files_rewritten", "customers"))  # fmt: skip


def read_request_file(path: Path) -> Request:
    """A CSV whose header names a kind per column (customer_id, email, phone, loyalty_card, device_id),
    or one customer id per line. Raises :class:`ErasureError` naming the file (never a value)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as error:
        raise ErasureError(f"{path}: cannot be read ({type(error).__name__})") from error
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise ErasureError(f"{path}: the file holds no identifier")
    header = [normalise_name(name) for name in next(csv.reader([lines[0]]))]
    if set(header) & set(KINDS):
        unknown = [name for name in header if name not in KINDS]
        if unknown:
            raise ErasureError(f"{path}: column(s) {', '.join(unknown)} are not identifier kinds; "
                               f"use {', '.join(KINDS)}")  # fmt: skip
        frame = pd.read_csv(path, dtype=str, keep_default_na=False, encoding="utf-8-sig")
        frame.columns = header
        found = {kind: [v for v in frame[kind].tolist() if v.strip()] for kind in header}
    else:
        found = {"customer_id": [line.strip() for line in lines]}
    request = Request(identifiers={k: v for k, v in found.items() if v})
    if not request.count():
        raise ErasureError(f"{path}: the file holds no identifier")
    return request


def _normalised(request: Request) -> dict[str, list[str]]:
    out = {}
    for kind, values in request.identifiers.items():
        if kind not in KINDS:
            raise ErasureError(f"unknown identifier kind {kind!r}; kinds are {', '.join(KINDS)}")
        series = normalise(kind, pd.Series(values, dtype=STRING_DTYPE))
        if series.isna().any():
            raise ErasureError(
                f"an empty or unusable {kind} was given ({int(series.isna().sum())} of {len(series)})"
            )
        out[kind] = sorted(set(series.tolist()))
    if not any(out.values()):
        raise ErasureError("no identifier was given")
    return out


def _subject(salt: bytes, given: Mapping[str, list[str]]) -> str:
    """The request's hashed subject: one digest over the digests of what was given (order-free)."""
    parts = sorted(digest(salt, kind, value) for kind, values in given.items() for value in values)
    return hmac.digest(salt, "\n".join(parts).encode(), "sha256").hex()


def _pending_path(ws: Workspace, subject: str) -> Path:
    return ws.erasure_dir / PENDING_DIR / f"{subject[:32]}.json"


def pending(ws: Workspace) -> list[Journal]:
    """Requests started and not finished (a run was killed), oldest first."""
    folder = ws.erasure_dir / PENDING_DIR
    found = (
        [Journal.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json"))]
        if folder.is_dir()
        else []
    )
    return sorted(found, key=lambda j: j.requested_at)


def _save(ws: Workspace, journal: Journal) -> None:
    _atomic_text(_pending_path(ws, journal.subject), journal.model_dump_json(indent=1))


@dataclass(frozen=True)
class Collected:
    customers: set[str]
    identifiers: dict[str, set[str]]
    not_found: int


def _sip_hashes(values: list[str], key: str) -> list[str]:
    from features.identity import hash_values

    return hash_values(pd.Series(values, dtype=STRING_DTYPE), key).tolist()


def _identity_values(ws: Workspace, version: Path | None) -> list[pd.DataFrame]:
    """The identifier columns of every raw file, and of the version's quarantine and customers/events."""
    frames = []
    paths = _tabular(ws.raw_dir)
    if version is not None:
        paths += sorted((version / catalog.QUARANTINE_DIR).glob("*.parquet"))
        paths += [version / "customers.parquet", version / "events.parquet"]
    for path in paths:
        if not path.exists():
            continue
        if path.suffix.lower() == ".parquet":
            names = _identity_columns(pq.ParquetFile(path).schema_arrow.names)
            table = pq.read_table(path, columns=names) if names else None
        else:
            table = _read_csv(path)
        if table is None:
            continue
        names = _identity_columns(table.column_names)
        frame = pd.DataFrame({normalise_name(n): table.column(n).cast(pa.string()).to_pandas(types_mapper=_as_string)
                              for n in names})  # fmt: skip
        frames.append(frame.loc[:, ~frame.columns.duplicated()])
    return frames


def collect(ws: Workspace, given: Mapping[str, list[str]]) -> Collected:
    """Resolve the given identifiers to customers through the link table, then gather every identifier
    the link table resolves to those customers, as normalised raw values (what the tombstones hash)."""
    version = catalog.current_version(ws)
    key = catalog.read_identity_key(ws)
    links = catalog.read_identity(ws, "links")
    profile = catalog.read_profile(ws)
    known = set()
    if profile is not None:
        known |= set(profile["customer_id"].dropna().tolist())
    if links is not None:
        known |= set(links["customer_id"].dropna().tolist())
    customers, not_found = set(), 0
    for value in given.get("customer_id", []):
        customers.add(value)
        not_found += value not in known
    lookup = {}
    if links is not None and key is not None:
        lookup = {(k, h): c for k, h, c in links[["identifier_kind", "identifier_hash", "customer_id"]]
                  .itertuples(index=False, name=None)}  # fmt: skip
    identifiers: dict[str, set[str]] = {kind: set() for kind in IDENTIFIER_KINDS}
    for kind in IDENTIFIER_KINDS:
        values = given.get(kind, [])
        hashes = _sip_hashes(values, key) if values and key is not None else [None] * len(values)
        for value, hashed in zip(values, hashes, strict=True):
            customer = lookup.get((kind, hashed))
            if customer is None:
                not_found += 1
            else:
                customers.add(customer)
                identifiers[kind].add(value)
    if links is not None and key is not None and customers:
        owned = links[links["customer_id"].isin(customers)]
        nodes = {
            kind: set(owned.loc[owned["identifier_kind"] == kind, "identifier_hash"])
            for kind in IDENTIFIER_KINDS
        }
        for frame in _identity_values(ws, version):
            for kind in IDENTIFIER_KINDS:
                if kind not in frame.columns or not nodes[kind]:
                    continue
                distinct = pd.unique(normalise(kind, frame[kind]).dropna().to_numpy()).tolist()
                if not distinct:
                    continue
                hashed = _sip_hashes(distinct, key)
                identifiers[kind] |= {v for v, h in zip(distinct, hashed, strict=True) if h in nodes[kind]}
    return Collected(customers, identifiers, not_found)


def _digests(salt: bytes, collected: Collected) -> Digests:
    out = _empty()
    out["customer_id"] = {digest(salt, "customer_id", c) for c in collected.customers}
    for kind, values in collected.identifiers.items():
        out[kind] = {digest(salt, kind, v) for v in values}
    return out


def _kill_point(place: str) -> None:
    if os.environ.get(KILL_AFTER_ENV) == place:
        os.kill(os.getpid(), signal.SIGKILL)


def _audit(ws: Workspace, entry: AuditEntry) -> None:
    """Append one line and fsync; a finished request already in the audit is not written twice."""
    path = ws.erasure_dir / AUDIT_FILE
    if any(e.subject == entry.subject and e.requested_at == entry.requested_at for e in read_audit(ws)):
        return
    with open(path, "a", encoding="utf-8") as handle:
        handle.write(entry.model_dump_json() + "\n")
        handle.flush()
        os.fsync(handle.fileno())


def read_audit(ws: Workspace) -> list[AuditEntry]:
    """Every finished erasure request, in the order they finished."""
    path = ws.erasure_dir / AUDIT_FILE
    if not path.exists():
        return []
    return [AuditEntry.model_validate_json(line) for line in path.read_text().splitlines() if line.strip()]


def _run(ws: Workspace, journal: Journal, matcher: Matcher, settings: object | None) -> AuditEntry:
    ctx = Context(ws, matcher, settings)
    for place in PLACES:
        if place in journal.done:
            continue
        journal.done[place] = ERASERS[place](ctx)
        _save(ws, journal)
        _kill_point(place)
    entry = AuditEntry(
        subject=journal.subject, requested_at=journal.requested_at, completed_at=datetime.now(UTC),
        actor=journal.actor, identifiers=journal.identifiers, not_found=journal.not_found,
        customers=journal.customers, tombstones=sum(len(v) for v in journal.digests.values()),
        resumed=journal.resumed, removed={place: journal.done[place] for place in PLACES},
    )  # fmt: skip
    _audit(ws, entry)
    _pending_path(ws, journal.subject).unlink(missing_ok=True)
    return entry


def _resume(ws: Workspace, journal: Journal, salt: bytes, settings: object | None) -> AuditEntry:
    journal.resumed += 1
    _save(ws, journal)
    digests = _empty()
    for kind, values in journal.digests.items():
        digests[kind] = set(values)
    return _run(ws, journal, Matcher(salt, digests), settings)


def forget(
    ws: Workspace, request: Request, actor: str | None = None, settings: object | None = None
) -> AuditEntry:
    """Erase the request's customers from every place (see the module docstring); returns the audit
    entry. Running a request again after it was killed finishes it instead of starting over.
    ``settings`` (a ``RepoSettings``) chooses the online store; default from the environment."""
    given = _normalised(request)
    with catalog.ingest_lock(ws):
        salt = workspace_salt(ws)
        subject = _subject(salt, given)
        for journal in pending(ws):
            if journal.subject == subject:
                return _resume(ws, journal, salt, settings)
        collected = collect(ws, given)
        digests = _digests(salt, collected)
        _add_tombstones(ws, digests)
        journal = Journal(
            subject=subject, requested_at=datetime.now(UTC), actor=actor or _os_user(),
            identifiers=sum(len(v) for v in given.values()), not_found=collected.not_found,
            customers=len(collected.customers), digests={k: sorted(v) for k, v in digests.items() if v},
        )  # fmt: skip
        _save(ws, journal)
        known = {kind: set() for kind in KINDS}
        known["customer_id"] = set(collected.customers)
        for kind, values in collected.identifiers.items():
            known[kind] = set(values)
        return _run(ws, journal, Matcher(salt, digests, known, complete=True), settings)


def resume(ws: Workspace, settings: object | None = None) -> list[AuditEntry]:
    """Finish every pending request (runs that were killed); returns their audit entries."""
    with catalog.ingest_lock(ws):
        salt = workspace_salt(ws)
        return [_resume(ws, journal, salt, settings) for journal in pending(ws)]


def _os_user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "unknown"
