"""The unified profile: one row per customer seen in any canonical table.

Why: downstream (profile features, serving's consent check, cold-start decisions) needs one place
that says who a customer is, what they consented to and where we have seen them, without personal
contact data (no email, phone or loyalty card here).

Contract: :func:`build_profile` is a pure function of the canonical tables (missing sources are
None or absent) and returns the columns of :func:`profile_schema`, one row per customer_id, sorted.
Consent per purpose is the latest consent row (by timestamp; a refusal wins a tie), null when unknown.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import compress, product

import numpy as np
import pandas as pd
import pyarrow as pa

from features.contract import ARROW_TYPES, CONTRACTS, PANDAS_DTYPES, SOURCES, STRING_DTYPE, TIMESTAMP_DTYPE

ATTRIBUTES = ("signup_at", "birth_year", "region", "acquisition_channel", "loyalty_tier")
PURPOSES = ("profiling", "marketing")
ACTIVITY_SOURCES = tuple(s for s in SOURCES if s != "customers")


def _time_column(source: str) -> str:
    column = CONTRACTS[source].time_column
    assert column is not None
    return column


def profile_schema() -> pa.Schema:
    fields = [pa.field("customer_id", pa.string())]
    customers = CONTRACTS["customers"]
    fields += [pa.field(name, ARROW_TYPES[customers.column(name).kind]) for name in ATTRIBUTES]
    for purpose in PURPOSES:
        fields += [pa.field(f"consent_{purpose}", pa.bool_()),
                   pa.field(f"consent_{purpose}_at", ARROW_TYPES["timestamp"])]  # fmt: skip
    for source in ACTIVITY_SOURCES:
        fields += [pa.field(f"first_seen_{source}", ARROW_TYPES["timestamp"]),
                   pa.field(f"last_seen_{source}", ARROW_TYPES["timestamp"])]  # fmt: skip
    fields += [pa.field("sources", pa.string()), pa.field("n_sources", pa.int64())]
    return pa.schema(fields)


def _source_labels(flags: np.ndarray) -> np.ndarray:
    """Per row, the covered sources as a sorted comma-joined string, via a lookup over bit patterns."""
    patterns = product((0, 1), repeat=len(SOURCES))
    table = np.array([",".join(sorted(compress(SOURCES, bits))) for bits in patterns])
    weights = 1 << np.arange(len(SOURCES))[::-1]
    return table[flags.astype(np.int64) @ weights] if len(flags) else np.array([], dtype=str)


def _consents(consents: pd.DataFrame | None, ids: pd.Index) -> dict[str, pd.Series]:
    columns: dict[str, pd.Series] = {}
    known = None if consents is None else consents.dropna(subset=["customer_id", "purpose", "granted"])
    for purpose in PURPOSES:
        granted = pd.Series(pd.NA, index=ids, dtype=pd.BooleanDtype())
        at = pd.Series(pd.NaT, index=ids, dtype=TIMESTAMP_DTYPE)
        if known is not None:
            rows = known[known["purpose"] == purpose].sort_values(
                ["timestamp", "granted"], ascending=[True, False], kind="stable")  # fmt: skip
            latest = rows.drop_duplicates("customer_id", keep="last").set_index("customer_id")
            granted = latest["granted"].reindex(ids).astype(pd.BooleanDtype())
            at = latest["timestamp"].reindex(ids)
        columns[f"consent_{purpose}"] = granted
        columns[f"consent_{purpose}_at"] = at
    return columns


def build_profile(tables: Mapping[str, pd.DataFrame | None]) -> pd.DataFrame:
    """The unified profile from canonical tables keyed by source name."""
    present = {s: t for s, t in tables.items() if s in SOURCES and t is not None}
    seen = [t["customer_id"].dropna() for t in present.values()]
    ids = pd.Index(pd.concat(seen).unique() if seen else [], dtype=STRING_DTYPE, name="customer_id")
    ids = ids.sort_values()

    columns: dict[str, pd.Series] = {}
    customers = present.get("customers")
    latest = None if customers is None else customers.drop_duplicates("customer_id", keep="last")
    for name in ATTRIBUTES:
        if latest is None:
            kind = CONTRACTS["customers"].column(name).kind
            columns[name] = pd.Series(pd.NA, index=ids, dtype=PANDAS_DTYPES[kind])
        else:
            columns[name] = latest.set_index("customer_id")[name].reindex(ids)
    columns |= _consents(present.get("consents"), ids)

    flags = np.zeros((len(ids), len(SOURCES)), dtype=bool)
    for position, source in enumerate(SOURCES):
        table = present.get(source)
        if table is not None:
            seen_here = ids.get_indexer(pd.Index(table["customer_id"].dropna().unique()))
            flags[seen_here[seen_here >= 0], position] = True
        if source == "customers":
            continue
        first = pd.Series(pd.NaT, index=ids, dtype=TIMESTAMP_DTYPE)
        last = first
        if table is not None:
            span = table.groupby("customer_id", observed=True)[_time_column(source)].agg(["min", "max"])
            first, last = span["min"].reindex(ids), span["max"].reindex(ids)
        columns[f"first_seen_{source}"] = first
        columns[f"last_seen_{source}"] = last

    profile = pd.DataFrame(columns, index=ids).reset_index()
    profile["sources"] = pd.array(_source_labels(flags), dtype=STRING_DTYPE)
    profile["n_sources"] = pd.array(flags.sum(axis=1), dtype=pd.Int64Dtype())
    return profile[profile_schema().names]


def to_arrow(profile: pd.DataFrame) -> pa.Table:
    return pa.Table.from_pandas(profile, schema=profile_schema(), preserve_index=False)
