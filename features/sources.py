"""The sources file: the user's own files and database tables, in their own column names and formats.

Why: a real export names its columns ``CustomerID, InvoiceDate, Revenue``, writes ``12,50`` and
``05/03/2025 10:00`` in local time, and often lives in a database. A YAML file says, per canonical
source, where its rows are (``path``: CSV/Parquet files, globs allowed; or ``url`` + ``query``: any
SQLAlchemy URL), which of their columns is which canonical column (``columns``), and how their text is
written (``timezone``, ``date_format``, ``decimal``, ``thousands``, ``delimiter``, ``encoding``). A
source may list several inputs; their rows are combined into one source. See
``docs/sources.example.yaml``.

Contract: :func:`load_sources` validates the whole file (typed, unknown keys refused) and names the
file and line of any problem (:class:`SourcesFileError`). :func:`read_sources` first checks every
input's header against its mapping — a mapped column the data lacks, or a required canonical column
left unmapped and absent, refuses the whole ingest with the source, the column and the closest names
found (:class:`ColumnMappingError`) before any row is read — then reads files one at a time and
database results in chunks of ``chunk_size`` rows, and returns per source a
:class:`features.ingest.RawSource` under canonical column names. Formats only rewrite text that
parses under them (a timestamp becomes ISO-8601 UTC text, a number gets a ``.`` decimal point); text
that does not parse is kept exactly as written, so the contract quarantines it with its rule and the
raw value. Identifier columns stay text as in :func:`features.ingest.identifiers_as_text`.
:func:`ingest_sources` is the whole step the command line runs. Nothing here writes anything.
"""

from __future__ import annotations

import codecs
import difflib
import glob
import os
import re
import zoneinfo
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv
import pyarrow.parquet as pq
import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    RootModel,
    ValidationError,
    field_validator,
    model_validator,
)

from cxpredict.progress import Progress, silent
from cxpredict.workspace import Workspace
from features.contract import (
    CONTRACTS,
    IDENTITY_COLUMNS,
    REQUIRED_SOURCES,
    SOURCES,
    missing_required_columns,
    normalise_name,
    pandas_types,
)
from features.ingest import (
    IngestError,
    IngestReport,
    NumericIds,
    RawSource,
    _check_id_options,
    identifiers_as_text,
    ingest,
)

CHUNK_ROWS = 50_000
CLOSEST = 3
SHOWN_COLUMNS = 12
FILE_SUFFIXES = (".csv", ".parquet")
ENVIRONMENT_VARIABLE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
OFFSET_AFTER_TIME = r"\d{2}:\d{2}(:\d{2}([.,]\d+)?)?\s*([zZ]|[+-]\d{2}(:?\d{2})?)$"
CSV_ONLY = ("delimiter", "encoding")
ORIGIN_COLUMNS = ("_source_file", "_row_number")
"""Where each row came from, as :func:`features.ingest.quarantine_frame` records it."""


class SourcesError(IngestError):
    """The sources file, or what it points to, was refused; nothing was read into the workspace."""


class SourcesFileError(SourcesError):
    """The sources file is not valid YAML or not a valid sources configuration; names file and line."""

    def __init__(self, file: Path, line: int | None, message: str) -> None:
        self.file, self.line = file, line
        super().__init__(f"{file}:{line}: {message}" if line else f"{file}: {message}")


class ColumnMappingError(SourcesError):
    """An input's columns do not meet its mapping or the contract: ``column`` is the name that was
    looked for, ``closest`` the most similar names the data has."""

    def __init__(self, source: str, where: str, column: str, closest: list[str], message: str) -> None:
        self.source, self.where, self.column, self.closest = source, where, column, closest
        super().__init__(message)


class InputConfig(BaseModel):
    """One input of a source: where its rows are, their column names and how their text is written."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str | None = Field(None, description="CSV or Parquet file or glob, relative to the sources file")
    url: str | None = Field(None, description="SQLAlchemy URL; ${NAME} is taken from the environment")
    query: str | None = Field(None, description="SQL whose result rows are the source's rows")
    columns: dict[str, str] = Field({}, description="canonical column name: the column's name in the data")
    timezone: str | None = Field(None, description="IANA zone of times written without an offset")
    date_format: str | None = Field(None, description="strptime format of text times, e.g. %d/%m/%Y %H:%M")
    decimal: Literal[".", ","] = "."
    thousands: Literal[",", ".", " ", "'", "_"] | None = None
    delimiter: str = Field(",", min_length=1, max_length=1)
    encoding: str = "utf-8"
    chunk_size: int = Field(CHUNK_ROWS, ge=1, description="rows fetched at a time from a database")

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                zoneinfo.ZoneInfo(value)
            except (zoneinfo.ZoneInfoNotFoundError, ValueError) as error:
                raise ValueError(
                    f"unknown time zone {value!r} (use an IANA name such as Europe/Berlin)"
                ) from error
        return value

    @field_validator("date_format")
    @classmethod
    def _a_format(cls, value: str | None) -> str | None:
        if value is not None and "%" not in value:
            raise ValueError(f"{value!r} is not a strptime format (e.g. %d/%m/%Y %H:%M)")
        return value

    @field_validator("encoding")
    @classmethod
    def _known_encoding(cls, value: str) -> str:
        try:
            codecs.lookup(value)
        except LookupError as error:
            raise ValueError(f"unknown encoding {value!r}") from error
        return value

    @field_validator("columns")
    @classmethod
    def _one_name_each(cls, value: dict[str, str]) -> dict[str, str]:
        theirs = [name for name in value.values()]
        if any(not name.strip() for name in theirs):
            raise ValueError("a mapped column name is empty")
        repeated = sorted({n for n in theirs if theirs.count(n) > 1})
        if repeated:
            raise ValueError(f"column(s) {', '.join(map(repr, repeated))} are mapped to more than one name")
        return value

    @model_validator(mode="after")
    def _one_place(self) -> InputConfig:
        if (self.path is None) == (self.url is None):
            raise ValueError("give either path (files) or url + query (a database), not both or neither")
        if self.url is not None and not (self.query or "").strip():
            raise ValueError("a url needs a query (the SQL whose rows are this source's rows)")
        if self.url is None and self.query is not None:
            raise ValueError("query needs a url")
        if self.url is not None and set(CSV_ONLY) & self.model_fields_set:
            raise ValueError(f"{' and '.join(CSV_ONLY)} apply to CSV files only, not to a database")
        if self.path is not None and "chunk_size" in self.model_fields_set:
            raise ValueError("chunk_size applies to a database; files are read one at a time")
        if self.thousands is not None and self.thousands == self.decimal:
            raise ValueError("thousands and decimal separators must differ")
        return self

    @property
    def label(self) -> str:
        """The input as the report names it: the path as written, or the URL (never its password)."""
        if self.path is not None:
            return self.path
        return f"{_hide_password(self.url or '')} (query)"


def _hide_password(url: str) -> str:
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return url.split("://", 1)[0] + "://…"


class SourcesConfig(RootModel[dict[str, list[InputConfig]]]):
    """Source name → its inputs (one mapping, or a list of them)."""

    @model_validator(mode="before")
    @classmethod
    def _listed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("the file must map source names (transactions, customers, …) to their settings")
        unknown = sorted(str(name) for name in set(data) - set(SOURCES))
        if unknown:
            raise ValueError(f"unknown source(s) {', '.join(unknown)}; sources are {', '.join(SOURCES)}")
        for source in sorted(REQUIRED_SOURCES - set(data)):
            raise ValueError(f"the {source} source is required")
        return {name: value if isinstance(value, list) else [value] for name, value in data.items()}

    @model_validator(mode="after")
    def _known(self) -> SourcesConfig:
        for source, inputs in self.root.items():
            if not inputs:
                raise ValueError(f"{source}: the list of inputs is empty")
            allowed = set(CONTRACTS[source].names) | set(IDENTITY_COLUMNS)
            for item in inputs:
                for canonical in item.columns:
                    if canonical not in allowed:
                        close = difflib.get_close_matches(canonical, sorted(allowed), n=CLOSEST)
                        hint = f" (closest: {', '.join(close)})" if close else ""
                        raise ValueError(f"{source}: {canonical!r} is not a column of the {source} contract"
                                         f"{hint}; its columns are {', '.join(sorted(allowed))}")  # fmt: skip
        return self


@dataclass(frozen=True)
class SourcesFile:
    """A validated sources file: its inputs, and the folder relative paths resolve against."""

    path: Path
    config: SourcesConfig

    @property
    def folder(self) -> Path:
        return self.path.parent

    def inputs(self) -> dict[str, list[InputConfig]]:
        return {s: self.config.root[s] for s in SOURCES if s in self.config.root}


def _duplicate_keys(node: yaml.Node) -> tuple[int, str] | None:
    """The first mapping key that appears twice (YAML would silently keep the last), with its line."""
    if isinstance(node, yaml.MappingNode):
        seen: set[str] = set()
        for key, value in node.value:
            if isinstance(key, yaml.ScalarNode):
                if key.value in seen:
                    return key.start_mark.line + 1, key.value
                seen.add(key.value)
            found = _duplicate_keys(value)
            if found:
                return found
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            found = _duplicate_keys(item)
            if found:
                return found
    return None


def _line_of(node: yaml.Node | None, location: tuple[int | str, ...]) -> int | None:
    """The 1-based line of the deepest node on ``location`` (a validation error's path)."""
    line = node.start_mark.line + 1 if node is not None else None
    for step in location:
        if isinstance(node, yaml.MappingNode):
            if isinstance(step, int):
                continue  # a single mapping written where a list is allowed
            match = next(((k, v) for k, v in node.value if getattr(k, "value", None) == step), None)
            if match is None:
                return line
            key, node = match
            line = key.start_mark.line + 1
        elif isinstance(node, yaml.SequenceNode) and isinstance(step, int) and step < len(node.value):
            node = node.value[step]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _where(location: tuple[int | str, ...], data: dict) -> str:
    steps = []
    for position, step in enumerate(location):
        if isinstance(step, int) and position == 1 and not isinstance(data.get(location[0]), list):
            continue
        steps.append(f"[{step}]" if isinstance(step, int) else str(step))
    return ".".join(steps).replace(".[", "[")


def load_sources(path: Path) -> SourcesFile:
    """Read and validate a sources file; raises :class:`SourcesFileError` naming the file and line."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        raise SourcesFileError(path, None, f"cannot be read ({type(error).__name__})") from error
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        problem = getattr(error, "problem", None) or str(error)
        raise SourcesFileError(path, mark.line + 1 if mark else None, f"not valid YAML: {problem}") from error
    repeated = _duplicate_keys(node) if node is not None else None
    if repeated:
        raise SourcesFileError(path, repeated[0], f"key {repeated[1]!r} appears twice")
    try:
        config = SourcesConfig.model_validate(data)
    except ValidationError as error:
        problems = []
        for detail in error.errors(include_url=False, include_input=False):
            location = tuple(detail["loc"])
            message = detail["msg"].removeprefix("Value error, ")
            if detail["type"] == "extra_forbidden" and location:
                settings = sorted(InputConfig.model_fields)
                close = difflib.get_close_matches(str(location[-1]), settings, n=CLOSEST)
                message = (f"unknown setting (closest: {', '.join(close)})" if close
                           else f"unknown setting; settings are {', '.join(settings)}")  # fmt: skip
            where = _where(location, data) if isinstance(data, dict) else ""
            line = _line_of(node, location)
            problems.append((line, f"{where}: {message}" if where else message))
        line, first = problems[0]
        more = "; ".join(f"line {n}: {m}" for n, m in problems[1:])
        raise SourcesFileError(path, line, first + (f" (also {more})" if more else "")) from error
    return SourcesFile(path, config)


def closest_names(wanted: str, names: list[str]) -> list[str]:
    """Their column names most like ``wanted`` (case-insensitive), best first."""
    lowered = {name.lower(): name for name in names}
    close = difflib.get_close_matches(wanted.lower(), list(lowered), n=CLOSEST, cutoff=0.4)
    return [lowered[name] for name in close]


def _shown(names: list[str]) -> str:
    listed = ", ".join(names[:SHOWN_COLUMNS])
    return listed + (f" and {len(names) - SHOWN_COLUMNS} more" if len(names) > SHOWN_COLUMNS else "")


def canonical_names(source: str, names: list[str], mapping: dict[str, str], where: str) -> list[str]:
    """The name each of their columns takes: the canonical name it is mapped to, else its own name
    normalised (stripped, lower-case). A mapped name matches exactly, else case-insensitively.

    Raises :class:`ColumnMappingError` when a mapped column is not in ``names``, a required contract
    column is neither mapped nor present, or two columns would take the same name.
    """
    normalised = [normalise_name(n) for n in names]
    renamed = list(normalised)
    taken: dict[int, str] = {}
    for canonical, theirs in mapping.items():
        position = names.index(theirs) if theirs in names else None
        if position is None:
            loose = [i for i, n in enumerate(normalised) if n == normalise_name(theirs)]
            position = loose[0] if len(loose) == 1 else None
        if position is None:
            close = closest_names(theirs, names)
            hint = f"closest: {', '.join(close)}" if close else f"its columns are {_shown(names)}"
            raise ColumnMappingError(source, where, theirs, close,
                                     f"{where}: the {source} mapping names column {theirs!r} (for {canonical}), "
                                     f"which the data does not have ({hint}); nothing was ingested")  # fmt: skip
        taken[position] = canonical
        renamed[position] = canonical
    for position, name in enumerate(renamed):
        others = [names[i] for i, n in enumerate(renamed) if n == name and i != position]
        if others:
            raise ColumnMappingError(source, where, name, [names[position], *others],
                                     f"{where}: {source} columns {names[position]!r} and {others[0]!r} would "
                                     f"both be {name!r}; map only one of them (or rename the other) — "
                                     "nothing was ingested")  # fmt: skip
    for canonical in missing_required_columns(source, renamed):
        close = [names[i] for i in range(len(names)) if i not in taken]
        close = closest_names(canonical, close)
        hint = f"closest: {', '.join(close)}" if close else f"its columns are {_shown(names)}"
        raise ColumnMappingError(source, where, canonical, close,
                                 f"{where}: the {source} data has no column {canonical!r} and the mapping "
                                 f"does not name one ({hint}); add `{canonical}: <their column>` under "
                                 "columns — nothing was ingested")  # fmt: skip
    return renamed


def _localize(naive: pd.Series, zone: str) -> pd.Series:
    """Wall times in ``zone`` as UTC. A time the clock passes twice (summer time ending) is read as its
    first occurrence; one it skips (summer time starting) is moved forward past the gap."""
    aware = naive.dt.tz_localize(zone, ambiguous=np.ones(len(naive), dtype=bool), nonexistent="shift_forward")
    return aware.dt.tz_convert("UTC")


def _utc_text(parsed: pd.Series, original: pa.Array) -> pa.Array:
    """ISO-8601 UTC text where ``parsed`` has a time, the original text where it does not."""
    times = pa.array(parsed.dt.as_unit("us"), type=pa.timestamp("us", tz="UTC"))
    wall = pc.cast(pc.cast(times, pa.timestamp("us")), pa.string())  # a UTC-zoned cast is 8x slower
    return pc.if_else(pc.is_valid(times), pc.binary_join_element_wise(wall, "Z", ""), original)


def times_in_utc(values: pa.Array, timezone: str | None, date_format: str | None) -> pa.Array:
    """A timestamp column with the input's time zone and date format applied.

    Typed times: naive ones are wall times in ``timezone`` (when given), aware ones are converted to
    UTC, dates are midnight. Text is parsed by ``date_format`` when given; other ISO-8601 text without
    an offset is read in ``timezone`` too, and text with an offset is left for the contract. Text that
    does not parse is returned as written.
    """
    kind = values.type
    if pa.types.is_date(kind):
        values, kind = pc.cast(values, pa.timestamp("us")), pa.timestamp("us")
    if pa.types.is_timestamp(kind):
        if kind.tz is not None:
            return pc.cast(values, pa.timestamp("us", tz="UTC"))
        if timezone is None:
            return values
        naive = pd.Series(values.to_pandas(), dtype=f"datetime64[{kind.unit}]")
        return pa.array(_localize(naive, timezone).dt.as_unit("us"), type=pa.timestamp("us", tz="UTC"))
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)):
        return values
    if timezone is None and date_format is None:
        return values
    original = pc.cast(values, pa.string())
    text = pd.Series(pd.arrays.ArrowStringArray(pc.utf8_trim_whitespace(original)))
    parsed = pd.Series(pd.NaT, index=text.index, dtype="datetime64[ns, UTC]")
    if date_format is not None:
        aware = "%z" in date_format or "%Z" in date_format
        parsed = pd.to_datetime(text, format=date_format, errors="coerce", utc=aware)
        if not aware:
            parsed = _localize(parsed, timezone or "UTC")
    with_offset = pc.match_substring_regex(pc.utf8_trim_whitespace(original), OFFSET_AFTER_TIME)
    naive = parsed.isna().to_numpy() & ~pc.fill_null(with_offset, False).to_numpy(zero_copy_only=False)
    if naive.any():
        iso = pd.to_datetime(text.where(naive & text.notna().to_numpy()), format="ISO8601", errors="coerce")
        parsed = parsed.fillna(_localize(iso, timezone or "UTC"))
    return _utc_text(parsed, original)


def numbers_with_point(values: pa.Array, decimal: str, thousands: str | None) -> pa.Array:
    """Text numbers written with ``decimal`` and ``thousands`` separators as plain ``1234.5`` text;
    values that are not numbers even then are returned as written (and quarantined by the contract)."""
    kind = values.type
    if decimal == "." and thousands is None:
        return values
    if not (pa.types.is_string(kind) or pa.types.is_large_string(kind) or pa.types.is_dictionary(kind)):
        return values
    original = pc.cast(values, pa.string())
    plain = pc.utf8_trim_whitespace(original)
    if thousands is not None:
        plain = pc.replace_substring(plain, thousands, "")
    if decimal != ".":
        plain = pc.replace_substring(plain, decimal, ".")
    try:
        pc.cast(plain, pa.float64())
        return plain
    except pa.ArrowInvalid:
        ok = pd.to_numeric(pd.Series(pd.arrays.ArrowStringArray(plain)), errors="coerce").notna().to_numpy()
        return pc.if_else(pa.array(ok), plain, original)


def conform_part(table: pa.Table, source: str, item: InputConfig, where: str, numeric_ids: NumericIds,
                 customer_id_width: int | None) -> tuple[pa.Table, dict[str, str]]:  # fmt: skip
    """One file or chunk under canonical names, identifiers as text, the input's formats applied; and
    the identifier columns converted from numbers (see :func:`features.ingest.identifiers_as_text`)."""
    names = canonical_names(source, table.column_names, item.columns, where)
    table, converted = identifiers_as_text(table.rename_columns(names), source, where, numeric_ids,  # type: ignore[arg-type]
                                   customer_id_width)  # fmt: skip
    contract = CONTRACTS[source]
    for position, name in enumerate(table.column_names):
        values = table.column(position).combine_chunks()
        if pa.types.is_decimal(values.type) and name not in IDENTITY_COLUMNS:
            values = pc.cast(values, pa.float64())
        if name in contract.names and contract.column(name).kind == "timestamp":
            values = times_in_utc(values, item.timezone, item.date_format)
        elif name in contract.names and contract.column(name).kind in ("double", "int64"):
            values = numbers_with_point(values, item.decimal, item.thousands)
        elif pa.types.is_timestamp(values.type) and values.type.tz is not None:
            values = pc.cast(values, pa.timestamp("us", tz="UTC"))
        table = table.set_column(position, name, values)
    return table, converted


def _files(item: InputConfig, folder: Path, source: str) -> list[Path]:
    pattern = Path(os.path.expanduser(item.path or ""))
    pattern = pattern if pattern.is_absolute() else folder / pattern
    if glob.has_magic(str(pattern)):
        found = sorted(Path(p) for p in glob.glob(str(pattern), recursive=True) if Path(p).is_file())
        if not found:
            raise SourcesError(f"{source}: no file matches {item.path!r} (in {folder})")
    else:
        if not pattern.is_file():
            raise SourcesError(f"{source}: no such file {item.path!r} (in {folder})")
        found = [pattern]
    wrong = [p.name for p in found if p.suffix.lower() not in FILE_SUFFIXES]
    if wrong:
        raise SourcesError(f"{source}: {item.path!r} matches {', '.join(wrong[:3])}, which is not CSV or "
                           "Parquet (.csv, .parquet)")  # fmt: skip
    return found


def _csv_options(item: InputConfig) -> tuple[pacsv.ReadOptions, pacsv.ParseOptions]:
    return pacsv.ReadOptions(encoding=item.encoding), pacsv.ParseOptions(delimiter=item.delimiter)


def file_header(path: Path, item: InputConfig) -> list[str]:
    """A file's column names, read without its rows."""
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_schema(path).names
        read, parse = _csv_options(item)
        reader = pacsv.open_csv(path, read_options=read, parse_options=parse)
        try:
            return reader.schema.names
        finally:
            reader.close()
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as error:
        raise SourcesError(f"{path}: cannot be read as {path.suffix[1:]} ({type(error).__name__}: "
                           f"{_first_line(error)})") from error  # fmt: skip


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0][:200] if str(error).strip() else ""


def read_file(path: Path, item: InputConfig) -> pa.Table:
    """A CSV with every column as text (nothing inferred, so '0003238' stays as written), or a Parquet
    file as typed."""
    try:
        if path.suffix.lower() == ".parquet":
            return pq.read_table(path)
        read, parse = _csv_options(item)
        as_text = pacsv.ConvertOptions(column_types=dict.fromkeys(file_header(path, item), pa.string()),
                                       strings_can_be_null=True)  # fmt: skip
        return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=as_text)
    except (pa.ArrowInvalid, UnicodeDecodeError, OSError) as error:
        raise SourcesError(
            f"{path}: cannot be read ({type(error).__name__}: {_first_line(error)})"
        ) from error


def _database_url(item: InputConfig, source: str) -> str:
    def value(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in os.environ:
            raise SourcesError(
                f"{source}: the url refers to ${{{name}}}, which is not set in the environment"
            )
        return os.environ[name]

    return ENVIRONMENT_VARIABLE.sub(value, item.url or "")


def _query(item: InputConfig) -> str:
    return (item.query or "").strip().rstrip(";").strip()


@contextmanager
def _connection(item: InputConfig, source: str) -> Iterator[Any]:
    """A connection to the input's database; its errors become :class:`SourcesError` (first line only,
    never the password)."""
    import sqlalchemy
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError, SQLAlchemyError

    try:
        engine = sqlalchemy.create_engine(_database_url(item, source))
    except (ArgumentError, NoSuchModuleError, ImportError) as error:
        raise SourcesError(
            f"{source}: {item.label}: not a usable SQLAlchemy URL ({_first_line(error)})"
        ) from error
    try:
        with engine.connect() as connection:
            yield connection
    except SQLAlchemyError as error:
        cause = error.orig if getattr(error, "orig", None) is not None else error
        raise SourcesError(f"{source}: {item.label}: the database refused ({type(cause).__name__}: "
                           f"{_first_line(cause)})") from error  # fmt: skip
    finally:
        engine.dispose()


def database_header(item: InputConfig, source: str) -> tuple[list[str], int]:
    """The query's column names (from a zero-row run) and its row count (for the progress bar)."""
    import sqlalchemy

    query = _query(item)
    with _connection(item, source) as connection:
        names = list(
            connection.execute(sqlalchemy.text(f"SELECT * FROM ({query}) AS cx_rows LIMIT 0")).keys()
        )
        rows = connection.execute(sqlalchemy.text(f"SELECT count(*) FROM ({query}) AS cx_rows")).scalar()
    return names, int(rows or 0)


def _column_array(values: tuple[Any, ...]) -> pa.Array:
    try:
        return pa.array(values)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in values], type=pa.string())


def database_chunks(item: InputConfig, source: str) -> Iterator[pa.Table]:
    """The query's rows, ``chunk_size`` at a time over a streaming (server-side) cursor, so only one
    chunk of the result is held as Python objects at once."""
    import sqlalchemy

    with _connection(item, source) as connection:
        streaming = {"stream_results": True, "yield_per": item.chunk_size}
        result = connection.execute(sqlalchemy.text(_query(item)), execution_options=streaming)
        names = list(result.keys())
        for rows in result.partitions(item.chunk_size):
            columns = list(zip(*rows))
            yield pa.Table.from_arrays([_column_array(values) for values in columns], names=names)


@dataclass(frozen=True)
class Part:
    """Rows of one file or database chunk, canonical, with where each row came from."""

    table: pa.Table
    file: str
    first_row: int
    converted: dict[str, str]


@dataclass(frozen=True)
class _Planned:
    item: InputConfig
    files: list[Path]
    rows: int = 0


def _shown_path(path: Path, folder: Path) -> str:
    try:
        return str(path.relative_to(folder))
    except ValueError:
        return str(path)


def plan_inputs(sources: SourcesFile) -> dict[str, list[_Planned]]:
    """Every input resolved (globs to files) and its header checked against its mapping and the
    contract, before any row is read: a bad mapping anywhere refuses the whole ingest."""
    plans: dict[str, list[_Planned]] = {}
    for source, inputs in sources.inputs().items():
        plans[source] = []
        for item in inputs:
            if item.path is not None:
                files = _files(item, sources.folder, source)
                for path in files:
                    where = f"{source} file {_shown_path(path, sources.folder)}"
                    canonical_names(source, file_header(path, item), item.columns, where)
                plans[source].append(_Planned(item, files))
            else:
                names, rows = database_header(item, source)
                canonical_names(source, names, item.columns, f"{source} query at {item.label}")
                plans[source].append(_Planned(item, [], rows))
    return plans


def _read_planned(source: str, planned: _Planned, folder: Path, progress: Progress, numeric_ids: NumericIds,
                  customer_id_width: int | None) -> Iterator[Part]:  # fmt: skip
    item = planned.item
    stage = f"read {source}: {item.label}"
    if item.path is not None:
        progress(stage, 0, len(planned.files), stage)
        for done, path in enumerate(planned.files, start=1):
            shown = _shown_path(path, folder)
            table, converted = conform_part(read_file(path, item), source, item, f"{source} file {shown}",
                                            numeric_ids, customer_id_width)  # fmt: skip
            yield Part(table, shown, 0, converted)
            progress(stage, done, len(planned.files), f"{stage} ({done:,}/{len(planned.files):,} files)")
        return
    where, read = f"{source} query at {item.label}", 0
    progress(stage, 0, planned.rows, stage)
    for chunk in database_chunks(item, source):
        table, converted = conform_part(chunk, source, item, where, numeric_ids, customer_id_width)
        yield Part(table, item.label, read, converted)
        read += table.num_rows
        progress(stage, read, max(planned.rows, read), stage)


def combine(parts: list[Part]) -> tuple[pa.Table, pd.DataFrame]:
    """The parts as one table (a column typed differently in two parts becomes text in all, which
    the contract parses; a column some parts lack is null there), and each row's file and 1-based row
    number within it."""
    types: dict[str, set[pa.DataType]] = {}
    for part in parts:
        for column in part.table.schema:
            if not pa.types.is_null(column.type):
                types.setdefault(column.name, set()).add(column.type)
    as_text = {name for name, kinds in types.items() if len(kinds) > 1}
    tables = []
    for part in parts:
        table = part.table
        for position, name in enumerate(table.column_names):
            if name in as_text:
                table = table.set_column(position, name, pc.cast(table.column(position), pa.string()))
        tables.append(table)
    table = pa.concat_tables(tables, promote_options="default")
    files = list(dict.fromkeys(part.file for part in parts))
    codes = np.concatenate([np.full(p.table.num_rows, files.index(p.file), dtype=np.int32) for p in parts])
    numbers = np.concatenate([np.arange(p.first_row + 1, p.first_row + 1 + p.table.num_rows) for p in parts])
    file_column, row_column = ORIGIN_COLUMNS
    origins = pd.DataFrame({file_column: pd.Categorical.from_codes(codes, categories=files),
                            row_column: pd.array(numbers, dtype=pd.Int64Dtype())})  # fmt: skip
    return table, origins


def read_sources(sources: SourcesFile, progress: Progress | None = None, *, numeric_ids: NumericIds = "refuse",
                 customer_id_width: int | None = None) -> dict[str, RawSource]:  # fmt: skip
    """Each configured source as canonical raw rows, ready for :func:`features.ingest.ingest`.

    Raises :class:`SourcesError` (and the identifier errors of ingest) before returning anything when
    an input is missing, unreadable or does not meet its mapping.
    """
    progress = progress or silent
    plans = plan_inputs(sources)
    read: dict[str, RawSource] = {}
    for source, planned in plans.items():
        parts = [part for p in planned
                 for part in _read_planned(source, p, sources.folder, progress, numeric_ids, customer_id_width)]  # fmt: skip
        if not parts:
            raise SourcesError(f"{source}: its inputs hold no rows")
        table, origins = combine(parts)
        converted = {name: kind for part in parts for name, kind in part.converted.items()}
        label = " + ".join(p.item.label for p in planned)
        read[source] = RawSource(pandas_types(table).reset_index(drop=True), converted, label, origins)
    return read


def ingest_sources(ws: Workspace, path: Path, now: datetime | None = None, progress: Progress | None = None,
                   *, numeric_ids: NumericIds = "refuse", customer_id_width: int | None = None) -> IngestReport:  # fmt: skip
    """``cxpredict ingest --sources``: validate the sources file, read every input and ingest the
    result as one new canonical version (see :func:`features.ingest.ingest` for what is refused)."""
    _check_id_options(numeric_ids, customer_id_width)
    sources = load_sources(path)
    read = read_sources(sources, progress, numeric_ids=numeric_ids, customer_id_width=customer_id_width)
    return ingest(ws, now=now, progress=progress, numeric_ids=numeric_ids, customer_id_width=customer_id_width,
                  raw_sources=read)  # fmt: skip
