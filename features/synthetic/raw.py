"""Raw source files: fixed schemas, injected data-quality defects, incremental Parquet writing.

Defects are *extra* rows (a corrupted copy of a real row, or an exact duplicate), so the clean
world survives intact behind quarantine and de-duplication, and ``rows in = accepted +
quarantined`` can be reconciled against the counts recorded in the truth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from features.synthetic.rows import DAY, iso

STRING, TIME = pa.string(), pa.string()
SCHEMAS: dict[str, pa.Schema] = {
    "customers": pa.schema(
        [
            ("customer_id", STRING),
            ("signup_at", TIME),
            ("birth_year", pa.int64()),
            ("region", STRING),
            ("acquisition_channel", STRING),
            ("loyalty_tier", STRING),
            ("email", STRING),
            ("phone", STRING),
            ("loyalty_card", STRING),
        ]
    ),
    "transactions": pa.schema(
        [
            ("customer_id", STRING),
            ("timestamp", TIME),
            ("amount", pa.float64()),
            ("order_id", STRING),
            ("channel", STRING),
            ("category", STRING),
            ("quantity", pa.int64()),
            ("discount", pa.float64()),
            ("returned", pa.bool_()),
            ("loyalty_card", STRING),
        ]
    ),
    "events": pa.schema(
        [
            ("customer_id", STRING),
            ("timestamp", TIME),
            ("event_type", STRING),
            ("session_id", STRING),
            ("channel", STRING),
            ("category", STRING),
            ("device_id", STRING),
        ]
    ),
    "support_tickets": pa.schema(
        [
            ("customer_id", STRING),
            ("opened_at", TIME),
            ("topic", STRING),
            ("channel", STRING),
            ("resolved_at", TIME),
            ("satisfaction", pa.int64()),
            ("sentiment", pa.float64()),
        ]
    ),
    "surveys": pa.schema(
        [
            ("customer_id", STRING),
            ("timestamp", TIME),
            ("kind", STRING),
            ("score", pa.int64()),
            ("comment", STRING),
        ]
    ),
    "marketing": pa.schema(
        [
            ("customer_id", STRING),
            ("timestamp", TIME),
            ("campaign_id", STRING),
            ("channel", STRING),
            ("action", STRING),
            ("email", STRING),
        ]
    ),
    "consents": pa.schema(
        [("customer_id", STRING), ("timestamp", TIME), ("purpose", STRING), ("granted", pa.bool_())]
    ),
}
TIME_COLUMN = {"customers": "signup_at", "support_tickets": "opened_at"}
IDENTIFIER_COLUMNS = {
    "customers": ("customer_id", "email", "phone", "loyalty_card"),
    "transactions": ("customer_id", "loyalty_card"),
    "events": ("customer_id", "device_id"),
    "marketing": ("customer_id", "email"),
}
ALTERNATE_IDENTIFIER = {"transactions": "loyalty_card", "events": "device_id", "marketing": "email"}
UNKNOWN_ENUM = {
    "transactions": ("channel", "fax"),
    "events": ("event_type", "video_play"),
    "support_tickets": ("channel", "fax"),
    "surveys": ("kind", "ces"),
    "marketing": ("action", "bounced"),
    "consents": ("purpose", "third_party_sharing"),
}
UNPARSABLE_TIMES = (
    "2023-13-45T25:61:00Z",
    "not a date",
    "31/02/2024 10:00",
    "2024-02-30T10:00:00Z",
    "yesterday",
)
MALFORMED_KINDS = (
    "unparsable_time",
    "future_time",
    "missing_id",
    "negative_amount",
    "unknown_enum",
    "out_of_range_score",
)


def time_column(source: str) -> str:
    return TIME_COLUMN.get(source, "timestamp")


def kinds_for(source: str) -> tuple[str, ...]:
    """The defects that make sense for a source."""
    kinds = ["unparsable_time", "future_time", "missing_id"]
    if source == "transactions":
        kinds.append("negative_amount")
    if source in UNKNOWN_ENUM:
        kinds.append("unknown_enum")
    if source in ("support_tickets", "surveys"):
        kinds.append("out_of_range_score")
    return tuple(kinds)


def identifier_only(source: str, table: pa.Table) -> int:
    """Rows without customer_id that carry another identifier stitching can resolve."""
    other = ALTERNATE_IDENTIFIER.get(source)
    if other is None:
        return 0
    return int(pc.sum(pc.and_(pc.is_null(table["customer_id"]), pc.is_valid(table[other]))).as_py() or 0)


def _replace(table: pa.Table, name: str, values: pa.Array) -> pa.Table:
    return table.set_column(
        table.schema.get_field_index(name), name, values.cast(table.schema.field(name).type)
    )


def _corrupt(source: str, kind: str, rows: pa.Table, rng: np.random.Generator, end_second: int) -> pa.Table:
    n = rows.num_rows
    when = time_column(source)
    if kind == "unparsable_time":
        return _replace(
            rows, when, pa.array(np.asarray(UNPARSABLE_TIMES)[rng.integers(0, len(UNPARSABLE_TIMES), n)])
        )
    if kind == "future_time":
        future = end_second + rng.integers(10 * 365 * DAY, 30 * 365 * DAY, n)
        rows = _replace(rows, when, iso(future))
        if source == "support_tickets":
            rows = _replace(rows, "resolved_at", pa.nulls(n, pa.string()))
            rows = _replace(rows, "satisfaction", pa.nulls(n, pa.int64()))
        return rows
    if kind == "missing_id":
        for name in IDENTIFIER_COLUMNS.get(source, ("customer_id",)):
            rows = _replace(rows, name, pa.nulls(n, pa.string()))
        return rows
    if kind == "negative_amount":
        rows = _replace(rows, "amount", pc.negate(pc.abs(rows["amount"])))
        return _replace(rows, "returned", pa.array(np.zeros(n, bool)))
    if kind == "unknown_enum":
        name, value = UNKNOWN_ENUM[source]
        return _replace(rows, name, pa.array([value] * n))
    if kind == "out_of_range_score":
        if source == "surveys":
            nps = np.asarray(pc.equal(rows["kind"], "nps").to_numpy(zero_copy_only=False), bool)
            score = np.where(nps, rng.integers(11, 16, n), rng.integers(6, 10, n))
            return _replace(rows, "score", pa.array(score))
        return _replace(rows, "satisfaction", pa.array(rng.integers(6, 10, n)))
    raise ValueError(f"unknown defect {kind}")


def _candidates(source: str, kind: str, table: pa.Table) -> np.ndarray:
    """Rows a defect may be copied from (a negative amount must hit a purchase, etc.)."""
    everything = np.arange(table.num_rows)
    if kind == "negative_amount":
        mask = pc.invert(table["returned"])
    elif kind == "out_of_range_score" and source == "support_tickets":
        mask = pc.is_valid(table["satisfaction"])
    else:
        return everything
    chosen = everything[np.asarray(mask.to_numpy(zero_copy_only=False), bool)]
    return chosen if chosen.size else everything


def inject_defects(
    source: str,
    table: pa.Table,
    rng: np.random.Generator,
    malformed_share: float,
    duplicate_share: float,
    end_second: int,
) -> tuple[pa.Table, dict[str, int], int]:
    """Add corrupted copies (at random places) and exact duplicates (next to their original).

    Returns the new table, the number of malformed rows per kind and the number of duplicates.
    """
    kinds = kinds_for(source)
    counts = {kind: 0 for kind in kinds}
    rows = table.num_rows
    if rows == 0:
        return table, counts, 0
    drawn = rng.integers(0, len(kinds), rng.binomial(rows, malformed_share))
    pieces, places = [table], []
    for k, kind in enumerate(kinds):
        n = int((drawn == k).sum())
        counts[kind] = n
        if n:
            candidates = _candidates(source, kind, table)
            source_rows = rng.choice(candidates, size=n, replace=n > candidates.size)
            pieces.append(_corrupt(source, kind, table.take(pa.array(source_rows)), rng, end_second))
            places.append(rng.integers(0, rows + 1, n))
    duplicates = int(rng.binomial(rows, duplicate_share))
    if duplicates:
        originals = rng.integers(0, rows, duplicates)
        pieces.append(table.take(pa.array(originals)))
        places.append(originals + 1)
    if not places:
        return table, counts, duplicates
    where = np.concatenate(places)
    extra = np.argsort(where, kind="stable")
    order = np.insert(np.arange(rows), where[extra], rows + extra)
    return pa.concat_tables(pieces).take(pa.array(order)), counts, duplicates


class SourceWriters:
    """One ParquetWriter per source, one row group per block; files appear atomically on close."""

    def __init__(self, folder: Path, schemas: dict[str, pa.Schema]):
        folder.mkdir(parents=True, exist_ok=True)
        self._final = {name: folder / f"{name}.parquet" for name in schemas}
        self._temp = {name: folder / f".{name}.parquet.partial" for name in schemas}
        self._writers = {name: pq.ParquetWriter(self._temp[name], schema) for name, schema in schemas.items()}
        self._schemas = schemas

    def write(self, name: str, table: pa.Table) -> None:
        self._writers[name].write_table(
            table.cast(self._schemas[name]), row_group_size=max(table.num_rows, 1)
        )

    def close(self) -> dict[str, Path]:
        for name, writer in self._writers.items():
            writer.close()
            self._temp[name].replace(self._final[name])
        return dict(self._final)

    def abort(self) -> None:
        for name, writer in self._writers.items():
            writer.close()
            self._temp[name].unlink(missing_ok=True)
