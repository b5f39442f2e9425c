"""Feast's Redis online store, written and read so that one answer never mixes two snapshots.

Why: Feast's Redis materialisation writes view by view and customer by customer, and its read sends
one ``HMGET`` per customer and view in a plain pipeline, so a reader during a refresh can get one
view of a customer from the old snapshot and another from the new one, or two customers from two
snapshots. Here a refresh writes the whole new snapshot into staging keys, then swaps them all in
with one ``MULTI``/``EXEC`` (a ``RENAME`` per customer, a ``DEL`` of the customers the new snapshot
lacks, and the snapshot time); a read sends its ``HMGET`` s in one ``MULTI``/``EXEC`` too, and Redis
runs transactions one after the other, so a read sees the whole old or the whole new snapshot.

The layout is Feast's own, so ``store.get_online_features`` reads the store unchanged: one hash per
customer under ``serialised entity key + project``; field ``mmh3("view:feature")`` (4 bytes, little
endian) holds the serialised ``ValueProto`` (``b''`` for null), ``_ts:view`` the serialised protobuf
``Timestamp`` of the view's row. Pushed realtime counters live in the same hash: a swap replaces the
hash, so they restart empty and ``features.store.remirror`` rewrites them from the event log, as the
counters restart from the new snapshot anyway.

Keys this module adds, neither ending with the project (so Feast's and the erasure's scans of
``*<project>`` count customers only): the snapshot state ``<project>:cx_online_state`` (a hash,
``snapshot_as_of``), and, during a refresh, ``cx_staging:<project>:<run>:<entity key>``. A refresh
that dies leaves its staging keys; the next refresh deletes them first. Single Redis node only
(a swap's ``RENAME`` s span hash slots, which Redis Cluster refuses in one transaction).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from feast import FeatureStore, FeatureView
from google.protobuf.timestamp_pb2 import Timestamp

from features.feast_internals import ValueProto, compute_table_id, redis_field_hash
from features.materialize import KeyCache, double_slots, feature_kinds, latest_rows

CHUNK_CUSTOMERS = 5_000
SCAN_COUNT = 10_000
STATE_SUFFIX = b":cx_online_state"
STAGING = b"cx_staging:"


def field_of(view_name: str, feature: str) -> bytes:
    """Feast's hash field of a feature: murmur3 (32-bit, unsigned) of ``view:feature``, little endian."""
    return redis_field_hash(f"{view_name}:{feature}")


def ts_field(view_name: str) -> bytes:
    """Feast's hash field of a view's row time."""
    return f"_ts:{view_name}".encode()


def state_key(project: str) -> bytes:
    return project.encode() + STATE_SUFFIX


def staging_prefix(project: str) -> bytes:
    return STAGING + project.encode() + b":"


def client_of(store: FeatureStore):
    """The redis-py client Feast's Redis online store uses (same connection string and options)."""
    online = store.config.online_store
    if online.type != "redis":
        raise ValueError("not a Redis online store")
    if getattr(online, "redis_type", "redis") != "redis":
        raise ValueError("the atomic Redis swap needs a single Redis node (not a cluster or sentinel)")
    return store._get_provider().online_store._get_client(online)


def view_name(store: FeatureStore, view: FeatureView) -> str:
    """The view's name in Feast's Redis fields (versioned when the registry versions online views)."""
    config = store.config
    table = compute_table_id(config.project, view, config.registry.enable_online_feature_view_versioning)
    return table[len(config.project) + 1 :]


def timestamp_blobs(stamps: pa.ChunkedArray | pa.Array) -> list[bytes]:
    """Each row time as Feast stores it (``Timestamp.FromDatetime``: seconds and nanos), computed once
    per distinct time (a snapshot's rows share one)."""
    micros = pc.cast(pc.cast(stamps, pa.timestamp("us", tz="UTC")), pa.int64()).to_numpy(zero_copy_only=False)
    distinct, inverse = np.unique(micros, return_inverse=True)
    blobs = [
        Timestamp(seconds=int(m // 1_000_000), nanos=int(m % 1_000_000) * 1000).SerializeToString()
        for m in distinct.tolist()
    ]
    return [blobs[i] for i in inverse.tolist()]


def value_blobs(column: pa.ChunkedArray | pa.Array, kind: str) -> np.ndarray:
    """Serialised ``ValueProto`` per row: doubles in bulk (9 bytes), strings once per distinct value,
    ``b''`` for null and NaN (as Feast writes them)."""
    if kind == "string":
        texts = column.to_pylist()
        cache = {t: ValueProto(string_val=t).SerializeToString() for t in set(texts) if t is not None}
        return np.array([b"" if t is None else cache[t] for t in texts], dtype=object)
    values = pc.cast(column, pa.float64()).to_numpy(zero_copy_only=False)
    slots = double_slots(values)
    out = np.array([slots[i * 9 : i * 9 + 9] for i in range(len(values))], dtype=object)
    out[np.isnan(values)] = b""
    return out


def clear_staging(client, project: str) -> int:
    """Delete every staging key of the project (a refresh that died); returns how many."""
    doomed = list(client.scan_iter(match=staging_prefix(project) + b"*", count=SCAN_COUNT))
    for offset in range(0, len(doomed), SCAN_COUNT):
        client.delete(*doomed[offset : offset + SCAN_COUNT])
    return len(doomed)


def live_keys(client, store: FeatureStore, prefix: bytes) -> set[bytes]:
    """The project's customer hashes (``prefix`` = the serialised entity key up to the id)."""
    project = store.config.project.encode()
    pattern = _glob_escape(prefix) + b"*" + _glob_escape(project)
    return {
        key
        for key in client.scan_iter(match=pattern, count=SCAN_COUNT)
        if key.startswith(prefix) and key.endswith(project)
    }


def _glob_escape(raw: bytes) -> bytes:
    out = bytearray()
    for byte in raw:
        if byte in b"*?[]\\":
            out.append(ord("\\"))
        out.append(byte)
    return bytes(out)


def write_snapshot(
    store: FeatureStore,
    views: list[FeatureView],
    start: datetime,
    end: datetime,
    state: dict[str, str] | None = None,
) -> tuple[int, int]:
    """Replace the project's snapshot by each view's latest row per customer in ``[start, end]``;
    returns (customers, values) as :func:`features.materialize.write_latest` does.

    Every customer's new hash is written under a staging key, then one transaction renames them all
    over the live hashes, deletes the live hashes of customers the new snapshot lacks (an older
    ``--as-of``) and sets ``state`` (``snapshot_as_of``). Until that ``EXEC`` readers see the old
    snapshot whole; a failure before it leaves the old snapshot as it was. The registry records the
    interval after the swap, as Feast's ``materialize`` does.
    """
    config = store.config
    client = client_of(store)
    clear_staging(client, config.project)
    staging = staging_prefix(config.project) + uuid.uuid4().hex[:12].encode() + b":"
    project = config.project.encode()
    join_key = views[0].entity_columns[0].name if views else "customer_id"
    keys_of = KeyCache(join_key, config.entity_key_serialization_version)
    staged: set[bytes] = set()
    written: dict[str, int] = {}
    values = 0
    try:
        for view in views:
            name, kinds = view_name(store, view), feature_kinds(view)
            fields = [field_of(name, feature) for feature, _ in kinds]
            stamp_field = ts_field(name)
            source = view.batch_source
            table = latest_rows(store, view, start, end)
            for offset in range(0, table.num_rows, CHUNK_CUSTOMERS):
                chunk = table.slice(offset, CHUNK_CUSTOMERS)
                keys = keys_of(chunk.column(join_key).to_pylist())
                columns = [value_blobs(chunk.column(feature), kind) for feature, kind in kinds]
                stamps = timestamp_blobs(chunk.column(source.timestamp_field))
                pipe = client.pipeline(transaction=False)
                for i, key in enumerate(keys):
                    mapping = dict(zip(fields, (column[i] for column in columns), strict=True))
                    mapping[stamp_field] = stamps[i]
                    pipe.hset(staging + key, mapping=mapping)
                pipe.execute()
                staged.update(keys)
                written[view.name] = written.get(view.name, 0) + chunk.num_rows
                values += chunk.num_rows * len(kinds)
        stale = live_keys(client, store, _entity_prefix(keys_of)) - {key + project for key in staged}
        if not views:
            stale = set()
        swap = client.pipeline(transaction=True)
        for key in sorted(staged):
            swap.rename(staging + key, key + project)
        ordered = sorted(stale)
        for offset in range(0, len(ordered), SCAN_COUNT):
            swap.delete(*ordered[offset : offset + SCAN_COUNT])
        if state:
            swap.hset(state_key(config.project), mapping=state)
        swap.execute()
    except BaseException:
        clear_staging(client, config.project)
        raise
    for view in views:
        store.registry.apply_materialization(view, config.project, start, end)
    return max(written.values(), default=0), values


def _entity_prefix(keys_of: KeyCache) -> bytes:
    """The serialised entity key of the join key up to the id's length (Feast's, probed with '')."""
    empty = keys_of([""])[0]
    return empty[: len(empty) - 4]


def read_state(store: FeatureStore) -> dict[str, str]:
    """The state the last swap committed (``{}`` before the first)."""
    raw = client_of(store).hgetall(state_key(store.config.project))
    return {key.decode(): value.decode() for key, value in raw.items()}


@dataclass(frozen=True)
class ReadLayout:
    """What one plan reads from each customer's hash: the fields, and per field the feature it holds
    (None for a view's row time) and the view it belongs to."""

    fields: tuple[bytes, ...]
    features: tuple[str | None, ...]
    view_of: tuple[int, ...]
    stamp_at: tuple[int, ...]
    """Position of each view's row-time field."""


class RedisSnapshotReader:
    """Rows of a few customers in the shape of Feast's SQLite tables, read in one transaction.

    :meth:`rows` answers ``(entity_key, feature_name, value, event_ts)`` like the SQLite reader's
    statement (``event_ts`` in whole seconds), one row per stored feature of each view the customer
    has a row time for, so ``features.online.OnlineReader`` builds the answer the same way.
    """

    def __init__(self, store: FeatureStore) -> None:
        self.store = store
        self.client = client_of(store)
        self.project = store.config.project.encode()
        self._layouts: dict[tuple, ReadLayout] = {}

    def clear(self) -> None:
        self._layouts.clear()

    def layout(self, tables: tuple[str, ...], stored: tuple[str, ...]) -> ReadLayout:
        key = (tables, stored)
        if key not in self._layouts:
            store, config = self.store, self.store.config
            versioning = config.registry.enable_online_feature_view_versioning
            by_table = {
                compute_table_id(config.project, view, versioning): view
                for view in store.list_feature_views(allow_cache=True)
            }
            wanted = set(stored)
            fields, features, view_of, stamp_at = [], [], [], []
            for index, table in enumerate(tables):
                view = by_table[table]
                name = view_name(store, view)
                for feature in view.features:
                    if feature.name in wanted:
                        fields.append(field_of(name, feature.name))
                        features.append(feature.name)
                        view_of.append(index)
                stamp_at.append(len(fields))
                fields.append(ts_field(name))
                features.append(None)
                view_of.append(index)
            self._layouts[key] = ReadLayout(tuple(fields), tuple(features), tuple(view_of), tuple(stamp_at))
        return self._layouts[key]

    def rows(self, tables: tuple[str, ...], stored: tuple[str, ...], keys: list[bytes]) -> list[tuple]:
        layout = self.layout(tables, stored)
        pipe = self.client.pipeline(transaction=True)
        for key in keys:
            pipe.hmget(key + self.project, layout.fields)
        replies = pipe.execute()
        rows = []
        pairs = list(zip(layout.features, layout.view_of, strict=True))
        for key, reply in zip(keys, replies, strict=True):
            seconds = [
                None if reply[at] is None else Timestamp.FromString(reply[at]).seconds
                for at in layout.stamp_at
            ]
            for (feature, index), blob in zip(pairs, reply, strict=True):
                if feature is not None and seconds[index] is not None:
                    rows.append((key, feature, blob or b"", seconds[index]))
        return rows
