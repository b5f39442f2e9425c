"""The canonical data contract: one typed schema per source and the named rules a raw row must pass.

Why: ingest must never lose or invent a row, so every rejection carries a stable rule name (what
reports and tests count on) and a human reason that never repeats a raw value (raw values may be
personal data). Parsing and rules are vectorised over whole columns.

Contract: :func:`parse_source` turns a raw frame (strings from CSV, or typed Parquet columns) into a
:class:`ParsedSource`: the canonical typed frame (every contract column, canonical dtypes), the
normalised identifier columns, and per row the first rule it breaks (``None`` when it passes all).
Identity rules that need the whole identity graph (``unresolved_identity``, ``ambiguous_identity``)
are applied later by :mod:`features.identity`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import BaseModel, ConfigDict

Kind = Literal["string", "timestamp", "double", "int64", "bool"]

SOURCES: tuple[str, ...] = (
    "customers",
    "transactions",
    "events",
    "support_tickets",
    "surveys",
    "marketing",
    "consents",
)
REQUIRED_SOURCES: frozenset[str] = frozenset({"transactions"})
IDENTIFIER_KINDS: tuple[str, ...] = ("email", "phone", "loyalty_card", "device_id")
IDENTITY_COLUMNS: tuple[str, ...] = ("customer_id", *IDENTIFIER_KINDS)
"""Columns that identify a customer: read as text from every format, never as numbers (see ingest)."""
FUTURE_TOLERANCE = timedelta(minutes=5)
MIN_BIRTH_YEAR = 1900

STRING_DTYPE = pd.StringDtype("pyarrow")
TIMESTAMP_DTYPE = pd.DatetimeTZDtype(unit="us", tz="UTC")
PANDAS_DTYPES: dict[str, object] = {
    "string": STRING_DTYPE,
    "timestamp": TIMESTAMP_DTYPE,
    "double": np.dtype("float64"),
    "int64": pd.Int64Dtype(),
    "bool": pd.BooleanDtype(),
}
ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "timestamp": pa.timestamp("us", tz="UTC"),
    "double": pa.float64(),
    "int64": pa.int64(),
    "bool": pa.bool_(),
}
TRUE_TOKENS = ("true", "t", "yes", "y", "1", "1.0")
FALSE_TOKENS = ("false", "f", "no", "n", "0", "0.0")


class ContractError(Exception):
    """Input refused by the data contract as a whole (a file, not a row); nothing was written."""


class Column(BaseModel):
    """One contract column: its type, whether the file must supply it, and its closed vocabulary."""

    model_config = ConfigDict(frozen=True)

    name: str
    kind: Kind
    required: bool = False
    allowed: tuple[str, ...] | None = None
    lower: bool = False


class SourceContract(BaseModel):
    """The typed schema of one canonical source."""

    model_config = ConfigDict(frozen=True)

    name: str
    columns: tuple[Column, ...]
    time_column: str | None

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def arrow_schema(self) -> pa.Schema:
        return pa.schema([pa.field(c.name, ARROW_TYPES[c.kind]) for c in self.columns])


def _c(name: str, kind: Kind = "string", required: bool = False, allowed: tuple[str, ...] | None = None,
       lower: bool = False) -> Column:  # fmt: skip
    return Column(name=name, kind=kind, required=required, allowed=allowed, lower=lower)


EVENT_TYPES = (
    "session_start", "page_view", "search", "product_view", "add_to_cart", "remove_from_cart",
    "wishlist_add", "checkout_start", "checkout_complete", "app_open", "login",
)  # fmt: skip

CONTRACTS: dict[str, SourceContract] = {
    "customers": SourceContract(
        name="customers",
        time_column="signup_at",
        columns=(
            _c("customer_id", required=True),
            _c("signup_at", "timestamp"),
            _c("birth_year", "int64"),
            _c("region"),
            _c("acquisition_channel"),
            _c("loyalty_tier"),
            _c("email"),
            _c("phone"),
            _c("loyalty_card"),
        ),
    ),
    "transactions": SourceContract(
        name="transactions",
        time_column="timestamp",
        columns=(
            _c("customer_id", required=True),
            _c("timestamp", "timestamp", required=True),
            _c("amount", "double", required=True),
            _c("order_id"),
            _c("channel", allowed=("online", "store", "app"), lower=True),
            _c("category"),
            _c("quantity", "int64"),
            _c("discount", "double"),
            _c("returned", "bool"),
        ),
    ),
    "events": SourceContract(
        name="events",
        time_column="timestamp",
        columns=(
            _c("customer_id", required=True),
            _c("timestamp", "timestamp", required=True),
            _c("event_type", required=True, allowed=EVENT_TYPES, lower=True),
            _c("session_id"),
            _c("channel", allowed=("web", "app"), lower=True),
            _c("category"),
            _c("device_id"),
        ),
    ),
    "support_tickets": SourceContract(
        name="support_tickets",
        time_column="opened_at",
        columns=(
            _c("customer_id", required=True),
            _c("opened_at", "timestamp", required=True),
            _c("topic", lower=True),
            _c("channel", allowed=("phone", "email", "chat", "store", "app"), lower=True),
            _c("resolved_at", "timestamp"),
            _c("satisfaction", "int64"),
            _c("sentiment", "double"),
        ),
    ),
    "surveys": SourceContract(
        name="surveys",
        time_column="timestamp",
        columns=(
            _c("customer_id", required=True),
            _c("timestamp", "timestamp", required=True),
            _c("kind", allowed=("nps", "csat"), lower=True),
            _c("score", "int64"),
            _c("comment"),
        ),
    ),
    "marketing": SourceContract(
        name="marketing",
        time_column="timestamp",
        columns=(
            _c("customer_id", required=True),
            _c("timestamp", "timestamp", required=True),
            _c("campaign_id"),
            _c("channel", allowed=("email", "sms", "push"), lower=True),
            _c("action", allowed=("sent", "opened", "clicked", "unsubscribed"), lower=True),
        ),
    ),
    "consents": SourceContract(
        name="consents",
        time_column="timestamp",
        columns=(
            _c("customer_id", required=True),
            _c("timestamp", "timestamp", required=True),
            _c("purpose", allowed=("profiling", "marketing"), lower=True),
            _c("granted", "bool"),
        ),
    ),
}

TIME_COLUMNS: Mapping[str, str] = {
    name: contract.time_column for name, contract in CONTRACTS.items() if contract.time_column
}
"""The column that dates each source's facts (the point-in-time rule compares it with a cutoff)."""

# Every rule a row can break, with its human reason template; the name is the stable key reports use.
RULES: dict[str, str] = {
    "missing_customer_id": "customer_id is empty: a customers row needs its id",
    "missing_identity": "the row carries neither a customer_id nor another identifier",
    "missing_required_value": "required column '{column}' is empty",
    "unparsable_timestamp": "'{column}' is not an ISO-8601 time",
    "unparsable_number": "'{column}' is not a number of the contract type",
    "unparsable_flag": "'{column}' is not a true/false flag",
    "future_timestamp": "'{column}' lies in the future of the ingest time",
    "negative_amount": "amount is negative but the row is not a return",
    "quantity_out_of_range": "quantity must be at least 1",
    "discount_out_of_range": "discount must be a fraction between 0 and 1",
    "birth_year_out_of_range": "birth_year must lie between 1900 and the ingest year",
    "unknown_channel": "channel is not one of {allowed}",
    "unknown_event_type": "event_type is not one of the contract's event types",
    "unknown_kind": "kind is not one of {allowed}",
    "unknown_action": "action is not one of {allowed}",
    "unknown_purpose": "purpose is not one of {allowed}",
    "score_out_of_range": "score is outside the range of its survey kind (nps 0..10, csat 1..5)",
    "satisfaction_out_of_range": "satisfaction must lie between 1 and 5",
    "sentiment_out_of_range": "sentiment must lie between -1 and 1",
    "resolved_before_opened": "resolved_at is earlier than opened_at",
    "satisfaction_without_resolution": "satisfaction is given for a ticket that is not resolved",
    "unresolved_identity": "the {column} on this row matches no known customer",
    "ambiguous_identity": "the {column} on this row is attached to several customers, so it identifies none",
}


def reason(rule: str, column: str | None = None, allowed: tuple[str, ...] | None = None) -> str:
    """Human reason for a rule; built from column names and vocabularies only, never from row values."""
    return RULES[rule].format(column=column or "", allowed=", ".join(sorted(allowed or ())))


@dataclass(frozen=True)
class Violation:
    """Rows (boolean mask) breaking one named rule, with the reason shown for them."""

    rule: str
    reason: str
    mask: np.ndarray


@dataclass(frozen=True)
class ParsedSource:
    """A raw frame after parsing: canonical typed rows, normalised identifiers, first rule broken."""

    source: str
    canonical: pd.DataFrame
    identifiers: pd.DataFrame
    rule: pd.Series
    reason: pd.Series
    supplied: list[str]

    @property
    def valid(self) -> np.ndarray:
        return self.rule.isna().to_numpy()


def normalise_name(name: object) -> str:
    """A column name stripped and lower-cased so ``Customer_ID `` and ``customer_id`` are one column."""
    return str(name).strip().lower()


def missing_required_columns(source: str, columns: list[str]) -> list[str]:
    """Required contract columns a file lacks. A file carrying identifier columns may omit customer_id."""
    present = set(columns)
    missing = [c for c in CONTRACTS[source].required if c not in present]
    if source != "customers" and "customer_id" in missing and present & set(IDENTIFIER_KINDS):
        missing.remove("customer_id")
    return missing


def _as_text(values: pd.Series) -> pd.Series:
    """Stripped text with empty strings as null; typed input is rendered to text first."""
    text = values if isinstance(values.dtype, pd.StringDtype) else values.astype(STRING_DTYPE)
    text = text.astype(STRING_DTYPE).str.strip()
    return text.mask(text == "")


def _is_blank(values: pd.Series) -> pd.Series:
    """Null, or text that is empty once stripped (typed columns need no text round trip)."""
    if isinstance(values.dtype, pd.StringDtype) or values.dtype == object:
        return _as_text(values).isna()
    return values.isna()


def _parse_timestamp(values: pd.Series) -> pd.Series:
    if isinstance(values.dtype, pd.DatetimeTZDtype):
        return values.dt.tz_convert("UTC").dt.as_unit("us")
    if pd.api.types.is_datetime64_dtype(values.dtype):
        return values.dt.tz_localize("UTC").dt.as_unit("us")
    parsed = pd.to_datetime(_as_text(values), utc=True, errors="coerce", format="ISO8601")
    return parsed.dt.as_unit("us")


def _parse_number(values: pd.Series, kind: Kind) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        numbers = values.astype("Float64").astype("float64")
    elif pd.api.types.is_numeric_dtype(values.dtype):
        numbers = values.astype("float64")
    else:
        numbers = pd.to_numeric(_as_text(values), errors="coerce").astype("float64")
    numbers = numbers.where(np.isfinite(numbers))
    if kind == "int64":
        numbers = numbers.where(numbers % 1 == 0)
        return numbers.astype(pd.Int64Dtype())
    return numbers


def _parse_flag(values: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(values.dtype):
        return values.astype(pd.BooleanDtype())
    tokens = {**dict.fromkeys(TRUE_TOKENS, True), **dict.fromkeys(FALSE_TOKENS, False)}
    return _as_text(values).str.lower().map(tokens).astype(pd.BooleanDtype())


def _parse_column(values: pd.Series, column: Column) -> pd.Series:
    if column.kind == "timestamp":
        return _parse_timestamp(values)
    if column.kind in ("double", "int64"):
        return _parse_number(values, column.kind)
    if column.kind == "bool":
        return _parse_flag(values)
    text = _as_text(values)
    return text.str.lower() if column.lower else text


def normalise_identifiers(raw: pd.DataFrame) -> pd.DataFrame:
    """Identifier columns in their matching form (null where absent or empty after normalising).

    email lower-cased and stripped; phone digits only, a leading international ``00`` dropped (so
    ``+44…`` and ``0044…`` meet); loyalty card upper-case alphanumerics; device id stripped, as is.
    """
    out = pd.DataFrame(index=raw.index)
    for kind in IDENTIFIER_KINDS:
        if kind not in raw.columns:
            out[kind] = pd.Series(pd.NA, index=raw.index, dtype=STRING_DTYPE)
            continue
        text = _as_text(raw[kind])
        if kind == "email":
            text = text.str.lower()
        elif kind == "phone":
            text = text.str.replace(r"\D", "", regex=True).str.replace(r"^00", "", regex=True)
        elif kind == "loyalty_card":
            text = text.str.upper().str.replace(r"[^0-9A-Z]", "", regex=True)
        out[kind] = text.mask(text == "")
    return out


def conform(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Exactly the contract columns, in contract order, with canonical dtypes (null where absent)."""
    contract = CONTRACTS[source]
    columns = {}
    for column in contract.columns:
        dtype = PANDAS_DTYPES[column.kind]
        if column.name in frame.columns:
            columns[column.name] = frame[column.name].astype(dtype)
        else:
            columns[column.name] = pd.Series(
                pd.NA if column.kind != "double" else np.nan, index=frame.index, dtype=dtype
            )
    return pd.DataFrame(columns, index=frame.index)


RuleCheck = Callable[[pd.DataFrame, datetime], list[tuple[str, str | None, pd.Series]]]


def _between(values: pd.Series, low: float, high: float) -> pd.Series:
    return values.notna() & ~values.between(low, high)


def _domain_rules(source: str) -> RuleCheck:
    """Source-specific value rules, applied to rows whose columns all parsed."""

    def transactions(t: pd.DataFrame, now: datetime) -> list[tuple[str, str | None, pd.Series]]:
        return [
            ("negative_amount", "amount", (t["amount"] < 0) & ~t["returned"].fillna(False)),
            ("quantity_out_of_range", "quantity", t["quantity"].notna() & (t["quantity"] < 1)),
            ("discount_out_of_range", "discount", _between(t["discount"], 0.0, 1.0)),
        ]

    def customers(t: pd.DataFrame, now: datetime) -> list[tuple[str, str | None, pd.Series]]:
        too_early_or_late = _between(t["birth_year"], MIN_BIRTH_YEAR, now.year)
        return [("birth_year_out_of_range", "birth_year", too_early_or_late)]

    def support_tickets(t: pd.DataFrame, now: datetime) -> list[tuple[str, str | None, pd.Series]]:
        early = t["resolved_at"].notna() & (t["resolved_at"] < t["opened_at"])
        return [
            ("resolved_before_opened", "resolved_at", early),
            ("satisfaction_out_of_range", "satisfaction", _between(t["satisfaction"], 1, 5)),
            ("sentiment_out_of_range", "sentiment", _between(t["sentiment"], -1.0, 1.0)),
            ("satisfaction_without_resolution", "satisfaction",
             t["satisfaction"].notna() & t["resolved_at"].isna()),
        ]  # fmt: skip

    def surveys(t: pd.DataFrame, now: datetime) -> list[tuple[str, str | None, pd.Series]]:
        high = np.where(t["kind"].fillna("nps") == "csat", 5, 10)
        low = np.where(t["kind"].fillna("nps") == "csat", 1, 0)
        score = t["score"].astype("float64")
        return [("score_out_of_range", "score", score.notna() & ((score < low) | (score > high)))]

    def none(t: pd.DataFrame, now: datetime) -> list[tuple[str, str | None, pd.Series]]:
        return []

    return {"transactions": transactions, "customers": customers, "support_tickets": support_tickets,
            "surveys": surveys}.get(source, none)  # fmt: skip


def _to_mask(values: pd.Series) -> np.ndarray:
    return values.fillna(False).to_numpy(dtype=bool)


def violations(source: str, raw: pd.DataFrame, typed: pd.DataFrame, identifiers: pd.DataFrame,
               now: datetime) -> list[Violation]:  # fmt: skip
    """Every contract rule in precedence order, each with the mask of rows breaking it."""
    contract = CONTRACTS[source]
    found: list[Violation] = []

    def add(rule: str, mask: pd.Series | np.ndarray, column: str | None = None,
            allowed: tuple[str, ...] | None = None) -> None:  # fmt: skip
        mask = _to_mask(mask) if isinstance(mask, pd.Series) else mask
        found.append(Violation(rule, reason(rule, column, allowed), mask))

    no_customer = typed["customer_id"].isna()
    if source == "customers":
        add("missing_customer_id", no_customer)
    else:
        add("missing_identity", no_customer & identifiers.isna().all(axis=1))
    for name in contract.required:
        if name != "customer_id":
            add("missing_required_value", _is_blank(raw[name]), name)
    flag_rule = {"timestamp": "unparsable_timestamp", "double": "unparsable_number",
                 "int64": "unparsable_number", "bool": "unparsable_flag"}  # fmt: skip
    for column in contract.columns:
        if column.kind in flag_rule and column.name in raw.columns:
            unparsed = ~_is_blank(raw[column.name]) & typed[column.name].isna()
            add(flag_rule[column.kind], unparsed, column.name)
    horizon = pd.Timestamp(now) + FUTURE_TOLERANCE
    for column in contract.columns:
        if column.kind == "timestamp":
            add("future_timestamp", typed[column.name] > horizon, column.name)
    for column in contract.columns:
        if column.allowed is not None:
            unknown = typed[column.name].notna() & ~typed[column.name].isin(column.allowed)
            add(f"unknown_{column.name}", unknown, column.name, column.allowed)
    for rule, column_name, mask in _domain_rules(source)(typed, now):
        add(rule, mask, column_name)
    return found


def first_violation(found: list[Violation], index: pd.Index) -> tuple[pd.Series, pd.Series]:
    """Per row, the first rule broken (in precedence order) and its reason; null where none."""
    which = np.full(len(index), -1)
    for position in range(len(found) - 1, -1, -1):
        which[found[position].mask] = position
    names = np.array([v.rule for v in found] + [None], dtype=object)
    reasons = np.array([v.reason for v in found] + [None], dtype=object)
    return (pd.Series(names[which], index=index, dtype=STRING_DTYPE),
            pd.Series(reasons[which], index=index, dtype=STRING_DTYPE))  # fmt: skip


def parse_source(source: str, raw: pd.DataFrame, now: datetime) -> ParsedSource:
    """Parse and check one raw frame (column names already normalised, required columns present)."""
    contract = CONTRACTS[source]
    supplied = [c for c in contract.names if c in raw.columns]
    typed = conform(pd.DataFrame({c: _parse_column(raw[c], contract.column(c)) for c in supplied},
                                 index=raw.index), source)  # fmt: skip
    identifiers = normalise_identifiers(raw)
    rule, why = first_violation(violations(source, raw, typed, identifiers, now), raw.index)
    return ParsedSource(source, typed, identifiers, rule, why, supplied)


def render_raw(raw: pd.DataFrame) -> pd.DataFrame:
    """Raw rows as strings, the form quarantine keeps them in."""
    return raw.astype(STRING_DTYPE)


def to_arrow(frame: pd.DataFrame, source: str) -> pa.Table:
    """A conformed canonical frame as an Arrow table of exactly the contract schema."""
    return pa.Table.from_pandas(conform(frame, source), schema=CONTRACTS[source].arrow_schema(),
                                preserve_index=False)  # fmt: skip


def pandas_types(table: pa.Table) -> pd.DataFrame:
    """An Arrow table in the pandas dtypes the canonical frames use."""
    mapping: Mapping[pa.DataType, object] = {
        pa.string(): STRING_DTYPE, pa.large_string(): STRING_DTYPE,
        pa.int64(): pd.Int64Dtype(), pa.bool_(): pd.BooleanDtype(),
    }  # fmt: skip
    return table.to_pandas(types_mapper=mapping.get)
