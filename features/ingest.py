"""Ingest: read → validate → quarantine → stitch → de-duplicate → commit, never losing or inventing a row.

Why: everything downstream trusts the canonical tables, so every raw row must end up in exactly one
place — accepted, quarantined (with its rule) or recognised as a duplicate — and the books must
balance: ``read == accepted + quarantined + duplicates + erased`` per source, checked in code (``erased``:
rows of customers forgotten on request, dropped by their tombstones, see :mod:`features.erasure`). A file that
lacks a required column is refused whole before anything is written, and the new canonical state
becomes visible in one atomic step (see :mod:`features.catalog`).

Identifiers (``customer_id``, email, phone, loyalty card, device id) are text from every format: CSV
columns are never type-inferred, and a typed file's numeric identifier column is refused unless
``numeric_ids="convert"`` allows it (a number has already lost any leading zeros). Ids that match
another source's only once leading zeros are stripped are reported as a warning, and the report
then does not count as reconciled.

Contract: :func:`ingest` reads ``<ws>/raw/<source>.{parquet,csv}`` (or the given paths; only
transactions is required), and returns an :class:`IngestReport`; the same report is stored as
``report.json`` in the committed version. A required source must yield rows: when its canonical table
would stay empty, or every row of its file is quarantined (a wrong date format, say), the ingest is
refused with the top quarantine rules (:class:`NoAcceptedRowsError`) and nothing is committed.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, get_args

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
from pydantic import BaseModel, model_validator

from cxpredict.progress import Progress, Steps
from cxpredict.workspace import Workspace
from features import catalog
from features.contract import (
    CONTRACTS,
    IDENTITY_COLUMNS,
    REQUIRED_SOURCES,
    SOURCES,
    STRING_DTYPE,
    ContractError,
    missing_required_columns,
    normalise_name,
    pandas_types,
    parse_source,
    render_raw,
    to_arrow,
)
from features.identity import (
    AMBIGUOUS_SCHEMA,
    ATTACHMENT_SCHEMA,
    LINK_SCHEMA,
    PAIR_SCHEMA,
    Evidence,
    Stitched,
    hex_digest,
    leading_zero_mismatches,
    new_key,
    stitch,
)
from features.erasure import drop_erased, tombstone_matcher
from features.profile import build_profile
from features.profile import to_arrow as profile_to_arrow

RAW_SUFFIXES = (".parquet", ".csv")
QUARANTINE_COLUMNS = ("_rule", "_reason", "_source_file", "_row_number", "_row_hash")
AMBIGUOUS_IN_REPORT = 50
STAGES_PER_SOURCE = 4  # read, validate, stitch + de-duplicate, write
EXAMPLE_IDS = 3
TOP_RULES = 3
EXACT_FLOAT_LIMIT = 2**53

NumericIds = Literal["refuse", "convert"]
NUMERIC_IDS: tuple[NumericIds, ...] = get_args(NumericIds)


class IngestError(ContractError):
    """Ingest refused its input; nothing was written."""


class MissingSourceError(IngestError):
    """A required source (transactions) has no file."""


class MissingColumnError(IngestError):
    """A file lacks a required contract column; the whole file (and this ingest) is refused."""

    def __init__(self, file: Path, source: str, columns: list[str]) -> None:
        self.file, self.source, self.columns = file, source, columns
        names = ", ".join(map(repr, columns))
        super().__init__(f"{file}: the {source} file is missing required column(s) {names}")


class NoAcceptedRowsError(IngestError):
    """A required source yields no row to build on: its file's rows were all quarantined, or its
    canonical table would stay empty. ``rules`` are the commonest (rule, reason, rows), first first;
    reasons never repeat raw values."""

    def __init__(self, file: str, source: str, read: int, rules: list[tuple[str, str, int]]) -> None:
        self.file, self.source, self.read, self.rules = file, source, read, rules
        if rules:
            top = "; ".join(f"{rule}: {rows:,} ({reason})" for rule, reason, rows in rules)
            why = f"all {read:,} rows were quarantined. Top rules: {top}"
        else:
            why = f"the file holds no new row ({read:,} read) and there is none from earlier ingests"
        super().__init__(f"{file}: no {source} row was accepted, so nothing was written; {why}")


class UnreadableSourceError(IngestError):
    """A raw file cannot be read as CSV or Parquet, or its source is ambiguous."""


class IdentifierTypeError(IngestError, ValueError):
    """An identifier column of a typed file is not text and cannot become text; the ingest is refused."""

    def __init__(self, file: Path, source: str, column: str, type_name: str, message: str) -> None:
        self.file, self.source, self.column, self.type_name = file, source, column, type_name
        super().__init__(message)


class NumericIdentifierError(IdentifierTypeError):
    """An identifier column is typed as a number and ``numeric_ids="convert"`` was not given."""

    def __init__(self, file: Path, source: str, column: str, type_name: str) -> None:
        super().__init__(file, source, column, type_name,
                         f"{file}: the {source} identifier column '{column}' is typed {type_name}, but "
                         "identifiers must be text: a number has lost any leading zeros ('0003238' "
                         "becomes 3238), so it may match no other source. Export the column as text, or "
                         "allow the conversion with `ingest --numeric-ids convert` (and "
                         "--customer-id-width N to zero-pad customer ids to N digits)")  # fmt: skip


class SourceReport(BaseModel):
    """What happened to one source's rows. Construction fails unless the books balance."""

    source: str
    file: str
    read: int
    accepted: int
    quarantined: int
    duplicates: int
    erased: int = 0
    updated: int = 0
    quarantine_added: int = 0
    rules: dict[str, int] = {}
    linked: dict[str, int] = {}
    columns_supplied: list[str] = []
    canonical_rows: int = 0
    converted_ids: dict[str, str] = {}

    @property
    def reconciled(self) -> bool:
        return self.read == self.accepted + self.quarantined + self.duplicates + self.erased

    @model_validator(mode="after")
    def _reconciles(self) -> SourceReport:
        if not self.reconciled:
            raise ValueError(f"{self.source}: read {self.read} != accepted {self.accepted} + quarantined "
                             f"{self.quarantined} + duplicates {self.duplicates} + erased {self.erased}")  # fmt: skip
        if sum(self.rules.values()) != self.quarantined:
            raise ValueError(f"{self.source}: rule counts do not add up to the quarantined rows")
        return self


class AmbiguousIdentifier(BaseModel):
    """An identifier reaching several customers: its kind and keyed hash only, never the value."""

    kind: str
    identifier_hash: str
    n_customers: int


class IdentityReport(BaseModel):
    links: int = 0
    linked_rows: dict[str, dict[str, int]] = {}
    ambiguous_identifiers: int = 0
    ambiguous: list[AmbiguousIdentifier] = []


class IdMismatch(BaseModel):
    """customer_ids of ``source`` that match an id of ``other`` only once leading zeros are stripped:
    the profile counts each such pair as two customers. Examples are ``(id in source, id in other)``;
    ids are pseudonymous keys, so a few may be shown."""

    source: str
    other: str
    ids: int
    examples: list[tuple[str, str]] = []

    @property
    def message(self) -> str:
        shown = ", ".join(f"{mine} ~ {theirs}" for mine, theirs in self.examples)
        return (f"{self.ids:,} customer_id(s) of {self.source} match {self.other} ids only after stripping "
                f"leading zeros (e.g. {shown}), so each counts as two customers; fix the ids upstream "
                "(a numeric export drops leading zeros; see customer_id_width)")  # fmt: skip


class IngestReport(BaseModel):
    """What one ingest did. ``reconciled`` means the books balance for every source *and* the sources'
    customer_ids agree (no :class:`IdMismatch`); ``warnings`` says what does not."""

    version: str
    now: datetime
    seconds: float
    sources: dict[str, SourceReport]
    identity: IdentityReport
    profile_rows: int
    id_mismatches: list[IdMismatch] = []

    @property
    def reconciled(self) -> bool:
        return all(s.reconciled for s in self.sources.values()) and not self.id_mismatches

    @property
    def warnings(self) -> list[str]:
        return [m.message for m in self.id_mismatches]


@dataclass(frozen=True)
class Merge:
    table: pd.DataFrame
    accepted: int
    duplicates: int
    updated: int = 0


def locate_sources(ws: Workspace, paths: dict[str, Path] | None) -> dict[str, Path]:
    """The file of each source: the given paths, else ``<ws>/raw/<source>.{parquet,csv}``."""
    if paths is not None:
        unknown = sorted(set(paths) - set(SOURCES))
        if unknown:
            raise UnreadableSourceError(f"unknown source(s) {', '.join(unknown)}; "
                                        f"sources are {', '.join(SOURCES)}")  # fmt: skip
        found = {s: Path(p) for s, p in paths.items()}
        for source, path in found.items():
            if not path.is_file():
                raise UnreadableSourceError(f"{path}: no such file for source {source}")
    else:
        found = {}
        for source in SOURCES:
            candidates = [ws.raw_dir / f"{source}{suffix}" for suffix in RAW_SUFFIXES]
            present = [p for p in candidates if p.is_file()]
            if len(present) > 1:
                raise UnreadableSourceError(f"both {present[0].name} and {present[1].name} exist in "
                                            f"{ws.raw_dir}; keep one")  # fmt: skip
            if present:
                found[source] = present[0]
    for source in REQUIRED_SOURCES - set(found):
        raise MissingSourceError(f"the {source} source is required: "
                                 f"expected {ws.raw_dir}/{source}.parquet or .csv")  # fmt: skip
    return {s: found[s] for s in SOURCES if s in found}


def _csv_header(path: Path) -> list[str]:
    """Column names as pyarrow itself parses the header, so every one of them can be typed as text."""
    try:
        reader = pacsv.open_csv(path)
    except pa.ArrowInvalid as error:
        if "empty" in str(error).lower():
            raise UnreadableSourceError(f"{path}: empty CSV file (no header)") from error
        raise
    try:
        return reader.schema.names
    finally:
        reader.close()


def read_table(path: Path) -> pa.Table:
    """A raw file as Arrow: every CSV column as text (nothing inferred, so '0003238' stays as written),
    Parquet columns as typed in the file."""
    suffix = path.suffix.lower()
    try:
        if suffix == ".csv":
            as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(_csv_header(path), pa.string()),
                                           strings_can_be_null=True)  # fmt: skip
            table = pacsv.read_csv(path, convert_options=as_text)
            inferred = [f.name for f in table.schema if not pa.types.is_string(f.type)]
            if inferred:
                raise UnreadableSourceError(f"{path}: the header and the columns of this CSV disagree "
                                            f"({', '.join(inferred)})")  # fmt: skip
        elif suffix == ".parquet":
            table = pq.read_table(path)
        else:
            raise UnreadableSourceError(f"{path}: unsupported file type {suffix!r} (use .csv or .parquet)")
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as error:
        raise UnreadableSourceError(f"{path}: cannot be read ({type(error).__name__})") from error
    return table


def _is_text(dtype: pa.DataType) -> bool:
    if pa.types.is_dictionary(dtype):
        return _is_text(dtype.value_type)
    return pa.types.is_string(dtype) or pa.types.is_large_string(dtype) or pa.types.is_null(dtype)


def _is_number(dtype: pa.DataType) -> bool:
    return pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)


class _NotIdentifiers(ValueError):
    """Numbers that no conversion makes into identifiers (the message says which)."""


def _numbers_as_text(values: pa.ChunkedArray) -> pa.ChunkedArray:
    """Whole non-negative numbers as their decimal digits (NaN as null); raises :class:`_NotIdentifiers`
    for fractions, negatives and floats too large to hold a whole number exactly."""
    dtype = values.type
    try:
        if pa.types.is_floating(dtype):
            values = pc.if_else(pc.is_nan(values), pa.scalar(None, dtype), values)
            largest = pc.max(pc.abs(values)).as_py()
            if largest is not None and largest > EXACT_FLOAT_LIMIT:
                raise _NotIdentifiers("values too large to be exact in a float")
            values = pc.cast(values, pa.int64())
        elif pa.types.is_decimal(dtype):
            values = pc.cast(values, pa.decimal128(38, 0))
    except pa.ArrowInvalid as error:
        raise _NotIdentifiers("values that are not whole numbers") from error
    smallest = pc.min(values).as_py()
    if smallest is not None and smallest < 0:
        raise _NotIdentifiers("negative values")
    return pc.cast(values, pa.string())


def identifiers_as_text(table: pa.Table, source: str, path: Path, numeric_ids: NumericIds = "refuse",
                        customer_id_width: int | None = None) -> tuple[pa.Table, dict[str, str]]:  # fmt: skip
    """The table with every identifier column (:data:`IDENTITY_COLUMNS`, names already normalised) as
    text, and the columns that were converted from a number (column → their Arrow type).

    Text columns pass as they are. A numeric column raises :class:`NumericIdentifierError` unless
    ``numeric_ids="convert"``; then whole non-negative numbers become their digits, and converted
    customer ids are left-padded with zeros to ``customer_id_width`` when given. Any other type (a
    flag, a time, bytes) raises :class:`IdentifierTypeError`.
    """
    converted: dict[str, str] = {}
    for position, name in enumerate(table.column_names):
        if name not in IDENTITY_COLUMNS:
            continue
        values = table.column(position)
        type_name = str(values.type)
        if _is_text(values.type):
            text = pc.cast(values, pa.string())
        elif not _is_number(values.type):
            raise IdentifierTypeError(path, source, name, type_name,
                                      f"{path}: the {source} identifier column '{name}' is typed {type_name}, "
                                      "but identifiers must be text; export the column as text")  # fmt: skip
        elif numeric_ids != "convert":
            raise NumericIdentifierError(path, source, name, type_name)
        else:
            try:
                text = _numbers_as_text(values)
            except _NotIdentifiers as problem:
                raise IdentifierTypeError(path, source, name, type_name,
                                          f"{path}: the {source} identifier column '{name}' is typed "
                                          f"{type_name} and holds {problem}, which are not identifiers; "
                                          "export the column as text")  # fmt: skip
            if name == "customer_id" and customer_id_width is not None:
                text = pc.utf8_lpad(text, width=customer_id_width, padding="0")
            converted[name] = type_name
        table = table.set_column(position, name, text)
    return table, converted


@dataclass(frozen=True)
class RawSource:
    """One source file as read: its rows (identifiers as text) and the identifier columns converted
    from numbers (column → original type). A source read from several inputs (:mod:`features.sources`)
    also carries its ``label`` for the report and, per row, its ``origins`` (``_source_file``,
    ``_row_number``) for quarantine."""

    frame: pd.DataFrame
    converted_ids: dict[str, str] = field(default_factory=dict)
    label: str | None = None
    origins: pd.DataFrame | None = None


def read_source(source: str, path: Path, numeric_ids: NumericIds = "refuse",
                customer_id_width: int | None = None) -> RawSource:  # fmt: skip
    """Read one source file and refuse it whole if a required column is missing or an identifier
    column is not text (see :func:`identifiers_as_text`)."""
    table = read_table(path)
    names = [normalise_name(c) for c in table.column_names]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise UnreadableSourceError(f"{path}: column(s) {', '.join(repeated)} appear more than once")
    table, converted = identifiers_as_text(table.rename_columns(names), source, path, numeric_ids,
                                           customer_id_width)  # fmt: skip
    frame = pandas_types(table)
    missing = missing_required_columns(source, list(frame.columns))
    if missing:
        raise MissingColumnError(path, source, missing)
    return RawSource(frame.reset_index(drop=True), converted)


def row_hashes(rows: pd.DataFrame) -> pd.Series:
    """Hash of a raw row (its column names and text values), stable across re-reads of the same file."""
    ordered = rows[sorted(rows.columns)]
    keyed = ordered.assign(_columns="|".join(ordered.columns))
    digests = hex_digest(pd.util.hash_pandas_object(keyed, index=False).to_numpy())
    return pd.Series(digests, index=rows.index, dtype=STRING_DTYPE)


def quarantine_frame(raw: pd.DataFrame, rule: pd.Series, why: pd.Series, file_name: str,
                     origins: pd.DataFrame | None = None) -> pd.DataFrame:  # fmt: skip
    """Rows that broke a rule, kept as raw text plus the rule, reason, file name, row number (1-based,
    header not counted) and row hash; ``origins`` gives each row's own file and row number instead."""
    bad = rule.notna().to_numpy()
    rows = render_raw(raw[bad])
    if origins is None:
        files = pd.Series(file_name, index=rows.index, dtype=STRING_DTYPE)
        numbers = pd.array(rows.index.to_numpy() + 1, dtype=pd.Int64Dtype())
    else:
        files = pd.Series(origins["_source_file"].to_numpy()[bad], index=rows.index).astype(STRING_DTYPE)
        numbers = pd.array(origins["_row_number"].to_numpy()[bad], dtype=pd.Int64Dtype())
    return rows.assign(_rule=rule[bad], _reason=why[bad], _source_file=files, _row_number=numbers,
                       _row_hash=row_hashes(rows))  # fmt: skip


def merge_quarantine(existing: pd.DataFrame | None, new: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """Existing quarantine plus the new rows not already there (by ``_row_hash``)."""
    base = existing if existing is not None else new.iloc[:0]
    merged = pd.concat([base, new], ignore_index=True).drop_duplicates("_row_hash", ignore_index=True)
    raw_columns = [c for c in merged.columns if c not in QUARANTINE_COLUMNS]
    merged = merged[raw_columns + list(QUARANTINE_COLUMNS)]
    return merged, len(merged) - len(base)


def _null_safe_equal(left: pd.Series, right: pd.Series) -> np.ndarray:
    both_null = left.isna().to_numpy() & right.isna().to_numpy()
    return (left == right).fillna(False).to_numpy(dtype=bool) | both_null


def merge_events(existing: pd.DataFrame | None, batch: pd.DataFrame) -> Merge:
    """Append the batch rows not identical to an earlier canonical or batch row (event-like tables)."""
    base = existing if existing is not None else batch.iloc[:0]
    combined = pd.concat([base, batch], ignore_index=True)
    duplicate = combined.duplicated(keep="first").to_numpy()[len(base) :]
    fresh = batch[~duplicate]
    return Merge(pd.concat([base, fresh], ignore_index=True), len(fresh), int(duplicate.sum()))


def merge_customers(existing: pd.DataFrame | None, batch: pd.DataFrame, supplied: list[str]) -> Merge:
    """Upsert customers by customer_id: a row identical to the customer's current state is a duplicate,
    a changed row is an update and the last one wins. Columns this file did not supply keep their
    existing values instead of being blanked."""
    base = existing if existing is not None else batch.iloc[:0]
    batch = batch.copy()
    if len(base) and len(batch):
        known = base.set_index("customer_id")
        for column in (c for c in batch.columns if c not in supplied):
            batch[column] = known[column].reindex(batch["customer_id"]).set_axis(batch.index)
    combined = pd.concat([base, batch], ignore_index=True)
    ordered = combined.sort_values("customer_id", kind="stable")
    previous = ordered.shift(1)
    same_customer = (_null_safe_equal(ordered["customer_id"], previous["customer_id"])
                     & ordered["customer_id"].notna().to_numpy())  # fmt: skip
    identical = same_customer.copy()
    for column in combined.columns:
        identical &= _null_safe_equal(ordered[column], previous[column])
    duplicate = pd.Series(identical, index=ordered.index).sort_index().to_numpy()[len(base) :]
    seen_before = pd.Series(same_customer, index=ordered.index).sort_index().to_numpy()[len(base) :]
    fresh = batch[~duplicate]
    table = pd.concat([base, fresh], ignore_index=True)
    table = table.drop_duplicates("customer_id", keep="last", ignore_index=True)
    return Merge(table, len(fresh), int(duplicate.sum()), int((seen_before & ~duplicate).sum()))


class _Stages:
    """One progress stage per source (and one for the commit)."""

    def __init__(self, progress: Progress | None, sources: list[str]) -> None:
        self.steps = {s: Steps(progress, f"ingest {s}", STAGES_PER_SOURCE) for s in sources}
        self.steps["commit"] = Steps(progress, "commit canonical version", 1)

    def advance(self, name: str) -> None:
        self.steps[name]()


def _utc(now: datetime | None) -> datetime:
    if now is None:
        return datetime.now(UTC)
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def _read_evidence(ws: Workspace) -> tuple[Evidence, str]:
    """What earlier ingests learned about identities, and the key their hashes were made with."""
    key = catalog.read_identity_key(ws)
    attachments, pairs = catalog.read_identity(ws, "attachments"), catalog.read_identity(ws, "pairs")
    if key is None or attachments is None or pairs is None:
        return Evidence.empty(), new_key()
    return Evidence(attachments, pairs), key


def _check_id_options(numeric_ids: str, customer_id_width: int | None) -> None:
    if numeric_ids not in NUMERIC_IDS:
        raise IngestError(f"numeric_ids must be one of {', '.join(NUMERIC_IDS)}, not {numeric_ids!r}")
    if customer_id_width is not None and (numeric_ids != "convert" or customer_id_width < 1):
        raise IngestError("customer_id_width pads converted numeric ids, so it needs numeric_ids='convert' "
                          "and a width of at least 1")  # fmt: skip


def _given_sources(paths: dict[str, Path] | None, given: dict[str, RawSource]) -> dict[str, str]:
    """The label of each source already read elsewhere; refuses what :func:`locate_sources` and
    :func:`read_source` would (unknown or missing sources, a missing required column)."""
    if paths is not None:
        raise IngestError("give source files or sources already read, not both")
    unknown = sorted(set(given) - set(SOURCES))
    if unknown:
        raise UnreadableSourceError(
            f"unknown source(s) {', '.join(unknown)}; sources are {', '.join(SOURCES)}"
        )
    for source in sorted(REQUIRED_SOURCES - set(given)):
        raise MissingSourceError(f"the {source} source is required")
    labels = {s: given[s].label or s for s in SOURCES if s in given}
    for source, label in labels.items():
        missing = missing_required_columns(source, list(given[source].frame.columns))
        if missing:
            raise MissingColumnError(Path(label), source, missing)
    return labels


def ingest(ws: Workspace, paths: dict[str, Path] | None = None, now: datetime | None = None,
           progress: Progress | None = None, *, numeric_ids: NumericIds = "refuse",
           customer_id_width: int | None = None, raw_sources: dict[str, RawSource] | None = None) -> IngestReport:  # fmt: skip
    """Ingest raw source files into a new canonical version and return the report.

    ``numeric_ids="convert"`` lets a typed file's numeric identifier columns become text (the report
    lists them under ``converted_ids``), and ``customer_id_width`` then zero-pads converted customer
    ids to that many digits so they meet the text ids of other sources.

    Raises :class:`IngestError` subclasses (nothing written) when transactions are absent, a file
    cannot be read, a file lacks a required column, an identifier column is not text (and, if
    numeric, its conversion was not allowed), or a required source yields no accepted row
    (:class:`NoAcceptedRowsError`).

    ``raw_sources`` are sources already read (by :mod:`features.sources`) to ingest instead of files.
    """
    started = time.perf_counter()
    now = _utc(now)
    _check_id_options(numeric_ids, customer_id_width)
    if raw_sources is None:
        files = locate_sources(ws, paths)
        labels = {source: path.name for source, path in files.items()}
    else:
        labels = _given_sources(paths, raw_sources)
    stages = _Stages(progress, list(labels))
    raws: dict[str, pd.DataFrame] = {}
    converted: dict[str, dict[str, str]] = {}
    origins: dict[str, pd.DataFrame | None] = {}
    erased: dict[str, int] = {}
    tombstones = tombstone_matcher(ws)
    for source in labels:
        read = raw_sources[source] if raw_sources else read_source(source, files[source], numeric_ids,
                                                                   customer_id_width)  # fmt: skip
        raws[source], converted[source], origins[source] = read.frame, read.converted_ids, read.origins
        raws[source], origins[source], erased[source] = drop_erased(raws[source], tombstones, origins[source])
        stages.advance(source)

    with catalog.ingest_lock(ws):
        previous = catalog.current_version(ws)
        manifest = catalog.canonical_manifest(ws)
        evidence, key = _read_evidence(ws)

        parsed = {source: parse_source(source, raw, now) for source, raw in raws.items()}
        for source in parsed:
            stages.advance(source)
        stitched = stitch(parsed, evidence, key)

        staged = catalog.stage_version(ws)
        try:
            reports, tables = _write_sources(ws, staged, previous, labels, raws, converted, stitched,
                                             manifest, stages, origins, erased)  # fmt: skip
            _require_rows(reports, stitched)
            report = _finish(staged, manifest, reports, tables, stitched, key, started, now)
        except BaseException:
            catalog.discard(staged)
            raise
        catalog.commit(staged)
        stages.advance("commit")
    return report


def _write_sources(
    ws: Workspace,
    staged: catalog.StagedVersion,
    previous: Path | None,
    files: dict[str, str],
    raws: dict[str, pd.DataFrame],
    converted: dict[str, dict[str, str]],
    stitched: Stitched,
    manifest: catalog.Manifest | None,
    stages: _Stages,
    origins: dict[str, pd.DataFrame | None] | None = None,
    erased: dict[str, int] | None = None,
) -> tuple[dict[str, SourceReport], dict[str, pd.DataFrame | None]]:
    """Merge each ingested source into its canonical and quarantine tables in the staged version
    (``files``: each ingested source's file name as the report shows it)."""
    reports: dict[str, SourceReport] = {}
    tables: dict[str, pd.DataFrame | None] = {}
    for source in SOURCES:
        existing = catalog.read_canonical(ws, source)
        if source not in files:
            tables[source] = existing
            staged.carry(f"{source}.parquet", previous)
            staged.carry(f"{catalog.QUARANTINE_DIR}/{source}.parquet", previous)
            continue
        parsed = stitched.sources[source]
        accepted_rows = parsed.canonical[parsed.valid]
        ever = set(parsed.supplied) | {"customer_id"} | set(manifest.supplied(source) if manifest else [])
        supplied = [c for c in CONTRACTS[source].names if c in ever]
        if source == "customers":
            merge = merge_customers(existing, accepted_rows, parsed.supplied)
        else:
            merge = merge_events(existing, accepted_rows)
        new_quarantine = quarantine_frame(raws[source], parsed.rule, parsed.reason, files[source],
                                          (origins or {}).get(source))  # fmt: skip
        quarantine, added = merge_quarantine(catalog.read_quarantine(ws, source), new_quarantine)
        stages.advance(source)

        if merge.accepted or existing is None:
            staged.write_table(f"{source}.parquet", to_arrow(merge.table, source))
        else:
            staged.carry(f"{source}.parquet", previous)
        if added or not staged.carry(f"{catalog.QUARANTINE_DIR}/{source}.parquet", previous):
            staged.write_table(f"{catalog.QUARANTINE_DIR}/{source}.parquet",
                               pa.Table.from_pandas(quarantine, preserve_index=False))  # fmt: skip
        stages.advance(source)

        tables[source] = merge.table
        reports[source] = SourceReport(
            source=source, file=files[source], read=len(raws[source]) + (erased or {}).get(source, 0),
            erased=(erased or {}).get(source, 0), accepted=merge.accepted,
            quarantined=int(parsed.rule.notna().sum()), duplicates=merge.duplicates, updated=merge.updated,
            quarantine_added=added, rules={str(k): int(v) for k, v in parsed.rule.value_counts().items()},
            linked=stitched.linked.get(source, {}), columns_supplied=supplied,
            canonical_rows=len(merge.table), converted_ids=converted.get(source, {}),
        )  # fmt: skip
    return reports, tables


def _require_rows(reports: dict[str, SourceReport], stitched: Stitched) -> None:
    """Raise :class:`NoAcceptedRowsError` for the first required source whose file had rows but all
    were quarantined, or whose canonical table would be empty: downstream would silently see no
    customers. A re-delivered file (rows recognised as duplicates) passes."""
    for source in sorted(REQUIRED_SOURCES & set(reports)):
        r = reports[source]
        if r.canonical_rows and not (r.read and r.quarantined == r.read):
            continue
        parsed = stitched.sources[source]
        broken = pd.DataFrame({"rule": parsed.rule, "reason": parsed.reason}).dropna()
        counts = broken.value_counts(sort=True).head(TOP_RULES)
        rules = [(str(rule), str(reason), int(rows)) for (rule, reason), rows in counts.items()]
        raise NoAcceptedRowsError(r.file, source, r.read, rules)


def id_mismatches(tables: dict[str, pd.DataFrame | None]) -> list[IdMismatch]:
    """Leading-zero mismatches between the customer_ids of every two canonical tables; each pair is
    reported once, against the source earlier in :data:`SOURCES` (customers first)."""
    ids = {s: tables[s]["customer_id"] for s in SOURCES if tables.get(s) is not None}
    return [
        IdMismatch(source=source, other=other, ids=pairs["id"].nunique(),
                   examples=list(pairs.drop_duplicates("id").head(EXAMPLE_IDS).itertuples(index=False, name=None)))
        for (source, other), pairs in leading_zero_mismatches(ids).items()
    ]  # fmt: skip


def _finish(staged: catalog.StagedVersion, old: catalog.Manifest | None, reports: dict[str, SourceReport],
            tables: dict[str, pd.DataFrame | None], stitched: Stitched, key: str, started: float,
            now: datetime) -> IngestReport:  # fmt: skip
    identity = catalog.IDENTITY_DIR
    links, ambiguous = stitched.graph.links(), stitched.graph.ambiguous()
    staged.write_text(f"{identity}/{catalog.IDENTITY_KEY_FILE}", key)
    identity_tables = (("attachments", stitched.evidence.attachments, ATTACHMENT_SCHEMA),
                       ("pairs", stitched.evidence.pairs, PAIR_SCHEMA),
                       ("links", links, LINK_SCHEMA), ("ambiguous", ambiguous, AMBIGUOUS_SCHEMA))  # fmt: skip
    for name, frame, schema in identity_tables:
        arrow = pa.Table.from_pandas(frame, schema=schema, preserve_index=False)
        staged.write_table(f"{identity}/{name}.parquet", arrow)

    profile = build_profile(tables)
    staged.write_table(catalog.PROFILE_FILE, profile_to_arrow(profile))

    sources: dict[str, catalog.SourceManifest] = {}
    quarantine_rows: dict[str, int] = {}
    for source in SOURCES:
        quarantine_path = staged.path / catalog.QUARANTINE_DIR / f"{source}.parquet"
        if quarantine_path.exists():
            quarantine_rows[source] = pq.ParquetFile(quarantine_path).metadata.num_rows
        if source in reports:
            before = old.sources[source].files if old and source in old.sources else []
            r = reports[source]
            seen_files = sorted(set(before) | {r.file})
            sources[source] = catalog.SourceManifest(
                rows=r.canonical_rows, columns_supplied=r.columns_supplied, files=seen_files
            )
        elif old and source in old.sources:
            sources[source] = old.sources[source]
    report = IngestReport(
        version=staged.id, now=now, seconds=round(time.perf_counter() - started, 3), sources=reports,
        identity=IdentityReport(
            links=len(links), linked_rows=stitched.linked, ambiguous_identifiers=len(ambiguous),
            ambiguous=[AmbiguousIdentifier(kind=k, identifier_hash=h, n_customers=int(n))
                       for k, h, n in ambiguous.head(AMBIGUOUS_IN_REPORT).itertuples(index=False)],
        ),
        profile_rows=len(profile), id_mismatches=id_mismatches(tables),
    )  # fmt: skip
    staged.write_json(catalog.MANIFEST_FILE, catalog.Manifest(
        version=staged.id, created_at=datetime.now(UTC), sources=sources, quarantine_rows=quarantine_rows,
        profile_rows=len(profile), identity_links=len(links), ambiguous_identifiers=len(ambiguous),
    ))  # fmt: skip
    staged.write_json(catalog.REPORT_FILE, report)
    return report
