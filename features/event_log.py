"""The durable log of pushed events: the one source of truth for what happened since a snapshot.

Why: an orchestration system that gets a 200 for an event must be able to rely on it. The event is
committed to this log before the answer (SQLite in WAL mode with a full fsync by default, or any
SQLAlchemy database, e.g. PostgreSQL shared by replicas on several hosts), once per idempotency key
whichever worker or replica took it. Everything else is derived from the log, so nothing derived
can lose or double an event:

- the realtime counters a prediction folds in (:func:`counters`, read from the log per request);
- Feast's ``realtime`` view, a mirror for Feast clients (``features.store.push_event``);
- the next snapshot: ``cxpredict features`` folds the events dated before its as-of into the
  engagement, service and voice sources (:func:`canonical_rows`), so after a refresh the snapshot
  holds them and the counters restart from it.

The idempotency key is the client's ``event_id`` or, without one, a digest of the event itself
(customer, type, timestamp to the microsecond, kind, score): a retried payload is counted once.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import threading
import time
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pyarrow as pa
from pydantic import BaseModel, ConfigDict, field_validator, model_validator
from sqlalchemy import (
    BigInteger,
    Column,
    Float,
    Index,
    MetaData,
    String,
    Table,
    create_engine,
    event,
    func,
    select,
)
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from cxpredict.workspace import Workspace

REALTIME_FEATURES: tuple[str, ...] = (
    "realtime_sessions",
    "realtime_events",
    "realtime_tickets_opened",
    "realtime_tickets_resolved",
    "realtime_last_event_ts",
    "realtime_last_visit_ts",
    "realtime_last_ticket_ts",
    "realtime_surveys",
    "realtime_last_nps",
    "realtime_last_csat",
    "realtime_last_survey_ts",
    "realtime_window_start_ts",
)
"""Counters since ``realtime_window_start_ts`` (the features' ``as_of``, epoch seconds), the times
(epoch seconds) of the last event, last engagement event, last ticket event and last survey answer,
and the last NPS / CSAT scores answered (null when none): the signals that arrive between two
snapshots. The pushed view ``realtime`` of the Feast repo serves these names."""

LOG_URL_ENV = "CXPREDICT_EVENT_LOG_URL"
SESSION_EVENTS = frozenset({"session_start"})
ENGAGEMENT_EVENTS = frozenset(
    {"session_start", "page_view", "search", "product_view", "add_to_cart", "wishlist_add", "checkout_start"}
)
SERVICE_EVENTS = frozenset({"ticket_opened", "ticket_resolved"})
SURVEY_EVENTS = frozenset({"survey_answered"})
SURVEY_SCALES = {"nps": (0, 10), "csat": (1, 5)}

_SCORES = ("realtime_last_nps", "realtime_last_csat")
"""Scores, not counters: no answer yet is null, never 0 (an NPS of 0 is an answer)."""


class RealtimeEvent(BaseModel):
    """One engagement, service or survey event, as it happens. A survey answer carries its ``kind``
    (nps | csat) and a whole-number ``score`` on that scale (0–10 | 1–5); other events carry neither."""

    model_config = ConfigDict(frozen=True)

    customer_id: str
    event_type: str
    timestamp: datetime
    kind: str | None = None
    score: float | None = None

    @field_validator("event_type")
    @classmethod
    def _known(cls, value: str) -> str:
        known = ENGAGEMENT_EVENTS | SERVICE_EVENTS | SURVEY_EVENTS
        if value not in known:
            raise ValueError(f"event_type must be one of {sorted(known)}")
        return value

    @model_validator(mode="after")
    def _survey_answer(self) -> RealtimeEvent:
        if self.event_type not in SURVEY_EVENTS:
            if self.kind is not None or self.score is not None:
                raise ValueError("kind and score belong to survey_answered events only")
            return self
        if self.kind not in SURVEY_SCALES or self.score is None:
            raise ValueError(f"a survey_answered event needs kind ({' or '.join(SURVEY_SCALES)}) and score")
        low, high = SURVEY_SCALES[self.kind]
        if not (low <= self.score <= high and float(self.score).is_integer()):
            raise ValueError(f"a {self.kind} score is a whole number between {low} and {high}")
        return self

    @field_validator("timestamp")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _missing(value) -> bool:
    return value is None or (isinstance(value, float) and value != value)


def next_counters(current: dict[str, float | None], event: RealtimeEvent, window_start_s: float) -> dict:
    """Counters after ``event``; counters from before the current snapshot (``window_start_s``) restart at 0."""
    stale = (
        current.get("realtime_window_start_ts") is None
        or current["realtime_window_start_ts"] < window_start_s
    )
    base = {
        name: 0.0 if stale or current.get(name) is None else float(current[name])
        for name in REALTIME_FEATURES
    }
    for name in _SCORES:
        base[name] = None if stale or _missing(current.get(name)) else float(current[name])
    event_s = event.timestamp.timestamp()
    base["realtime_sessions"] += float(event.event_type in SESSION_EVENTS)
    base["realtime_events"] += float(event.event_type in ENGAGEMENT_EVENTS)
    base["realtime_tickets_opened"] += float(event.event_type == "ticket_opened")
    base["realtime_tickets_resolved"] += float(event.event_type == "ticket_resolved")
    base["realtime_last_event_ts"] = max(base["realtime_last_event_ts"], event_s)
    if event.event_type in ENGAGEMENT_EVENTS:
        base["realtime_last_visit_ts"] = max(base["realtime_last_visit_ts"], event_s)
    if event.event_type in SERVICE_EVENTS:
        base["realtime_last_ticket_ts"] = max(base["realtime_last_ticket_ts"], event_s)
    if event.event_type in SURVEY_EVENTS:
        base["realtime_surveys"] += 1.0
        if event_s >= base["realtime_last_survey_ts"] or base[f"realtime_last_{event.kind}"] is None:
            base[f"realtime_last_{event.kind}"] = float(event.score)
        base["realtime_last_survey_ts"] = max(base["realtime_last_survey_ts"], event_s)
    base["realtime_window_start_ts"] = window_start_s
    return base


def counters(events: Iterable[RealtimeEvent], window_start_s: float) -> dict[str, float | None] | None:
    """The counters of ``events`` (those at or after ``window_start_s``) in time order; None when none."""
    kept = sorted((e for e in events if e.timestamp.timestamp() >= window_start_s), key=lambda e: e.timestamp)
    state: dict[str, float | None] | None = None
    for item in kept:
        state = next_counters(state or {}, item, window_start_s)
    return state


def event_key(item: RealtimeEvent) -> str:
    """The idempotency key of an event sent without ``event_id``: a digest of what it says."""
    payload = [item.customer_id, item.event_type, _micros(item.timestamp), item.kind, item.score]
    return "sha256:" + hashlib.sha256(json.dumps(payload).encode()).hexdigest()


def _micros(moment: datetime) -> int:
    delta = moment.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def log_url(ws: Workspace) -> str:
    """``CXPREDICT_EVENT_LOG_URL`` (a SQLAlchemy URL) or the workspace's SQLite file."""
    return os.environ.get(LOG_URL_ENV) or f"sqlite:///{(ws.root / 'events' / 'events.db').as_posix()}"


_METADATA = MetaData()
EVENTS = Table(
    "cx_events",
    _METADATA,
    Column("event_id", String(160), primary_key=True),
    Column("customer_id", String(128), nullable=False),
    Column("event_type", String(32), nullable=False),
    Column("ts_us", BigInteger, nullable=False),
    Column("kind", String(8)),
    Column("score", Float),
    Column("received_us", BigInteger, nullable=False),
    Index("cx_events_customer_ts", "customer_id", "ts_us"),
    Index("cx_events_ts", "ts_us"),
)


def _sqlite_durability(connection, _record) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


def durable_engine(url: str) -> Engine:
    """An engine whose commits are durable when they return: SQLite in WAL mode with a full fsync
    (its folder created), or a server database such as PostgreSQL."""
    if url.startswith("sqlite:///"):
        Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(url, pool_pre_ping=not url.startswith("sqlite"))
    if engine.dialect.name == "sqlite":
        event.listen(engine, "connect", _sqlite_durability)
    return engine


def dialect_insert(engine: Engine):
    """The dialect's ``insert`` (it has ``on_conflict_do_nothing``, what makes appends idempotent)."""
    if engine.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert
    elif engine.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert
    else:
        raise ValueError(f"the durable logs support SQLite and PostgreSQL, not {engine.dialect.name}")
    return insert


def create_tables(engine: Engine, metadata: MetaData) -> None:
    """Create missing tables; several workers may do it at the same moment."""
    for attempt in range(3):
        try:
            metadata.create_all(engine, checkfirst=True)
            return
        except (OperationalError, ProgrammingError, IntegrityError):
            if attempt == 2:
                raise
            time.sleep(0.1)


class EventLog:
    """Append-only, idempotent, durable event log; safe to share between processes."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine: Engine = durable_engine(url)
        self._sqlite_path = url.removeprefix("sqlite:///") if url.startswith("sqlite:///") else None
        self._local = threading.local()
        create_tables(self.engine, _METADATA)
        self._insert = dialect_insert(self.engine)(EVENTS).on_conflict_do_nothing(index_elements=["event_id"])

    @classmethod
    def of(cls, ws: Workspace) -> EventLog:
        return cls(log_url(ws))

    def append(self, item: RealtimeEvent, event_id: str | None = None) -> tuple[str, bool]:
        """Commit the event (durable when this returns); (its key, False when the key was already logged)."""
        key = event_id or event_key(item)
        row = {
            "event_id": key,
            "customer_id": item.customer_id,
            "event_type": item.event_type,
            "ts_us": _micros(item.timestamp),
            "kind": item.kind,
            "score": item.score,
            "received_us": _micros(datetime.now(UTC)),
        }
        with self.engine.begin() as connection:
            inserted = connection.execute(self._insert, row).rowcount
        return key, inserted == 1

    def events(
        self, customer_ids: Sequence[str], since: datetime | None = None
    ) -> dict[str, list[RealtimeEvent]]:
        """Logged events of these customers (at or after ``since``), by customer.

        On SQLite this is the per-request read of the serving path, so it runs one plain statement
        on a per-thread read-only connection (SQLAlchemy's per-call overhead is most of the cost)."""
        ids = list(dict.fromkeys(customer_ids))
        floor = _micros(since) if since is not None else -(2**62)
        if self._sqlite_path is not None:
            rows = self._reader().execute(
                "SELECT customer_id, event_type, ts_us, kind, score FROM cx_events "
                f"WHERE customer_id IN ({','.join('?' * len(ids))}) AND ts_us >= ?",
                [*ids, floor],
            )
        else:
            query = select(EVENTS).where(EVENTS.c.customer_id.in_(ids), EVENTS.c.ts_us >= floor)
            with self.engine.connect() as connection:
                rows = [
                    (r.customer_id, r.event_type, r.ts_us, r.kind, r.score) for r in connection.execute(query)
                ]
        found: dict[str, list[RealtimeEvent]] = {}
        for customer_id, event_type, ts_us, kind, score in rows:
            found.setdefault(customer_id, []).append(_event(customer_id, event_type, ts_us, kind, score))
        return found

    def _reader(self) -> sqlite3.Connection:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = sqlite3.connect(f"file:{quote(self._sqlite_path)}?mode=ro", uri=True)
            self._local.connection = connection
        return connection

    def customers(self, since: datetime) -> list[str]:
        """Customers with events at or after ``since``."""
        query = select(EVENTS.c.customer_id).where(EVENTS.c.ts_us >= _micros(since)).distinct()
        with self.engine.connect() as connection:
            return sorted(row[0] for row in connection.execute(query))

    def count(self) -> int:
        with self.engine.connect() as connection:
            return connection.execute(select(func.count()).select_from(EVENTS)).scalar_one()

    def before(self, moment: datetime) -> list[tuple[str, RealtimeEvent]]:
        """Every logged event dated before ``moment`` (what a snapshot at ``moment`` must hold), with its key."""
        query = select(EVENTS).where(EVENTS.c.ts_us < _micros(moment)).order_by(EVENTS.c.ts_us)
        with self.engine.connect() as connection:
            return [
                (r.event_id, _event(r.customer_id, r.event_type, r.ts_us, r.kind, r.score))
                for r in connection.execute(query)
            ]

    def close(self) -> None:
        self.engine.dispose()


def _event(
    customer_id: str, event_type: str, ts_us: int, kind: str | None, score: float | None
) -> RealtimeEvent:
    return RealtimeEvent.model_construct(
        customer_id=customer_id,
        event_type=event_type,
        timestamp=datetime.fromtimestamp(ts_us / 1_000_000, UTC),
        kind=kind,
        score=score,
    )


def canonical_rows(events: Iterable[tuple[str, RealtimeEvent]]) -> dict[str, pa.Table]:
    """Logged (key, event) pairs as rows of the canonical sources they belong to (``events``,
    ``support_tickets``, ``surveys``), for a snapshot to fold in. A ``session_start`` opens a session
    of its own (``session_id`` from its key), as the realtime counters count it; a ``ticket_resolved``
    event is a row of its own here (``opened_at`` null, ``resolved_at`` its time): the snapshot build
    closes the customer's oldest ticket still open with it."""
    stamp = pa.timestamp("us", tz="UTC")
    engagement: dict[str, list] = {"customer_id": [], "timestamp": [], "event_type": [], "session_id": []}
    tickets: dict[str, list] = {"customer_id": [], "opened_at": [], "resolved_at": []}
    surveys: dict[str, list] = {"customer_id": [], "timestamp": [], "kind": [], "score": []}
    for key, item in events:
        if item.event_type in ENGAGEMENT_EVENTS:
            engagement["customer_id"].append(item.customer_id)
            engagement["timestamp"].append(item.timestamp)
            engagement["event_type"].append(item.event_type)
            engagement["session_id"].append(f"logged:{key}" if item.event_type in SESSION_EVENTS else None)
        elif item.event_type in SERVICE_EVENTS:
            opened = item.event_type == "ticket_opened"
            tickets["customer_id"].append(item.customer_id)
            tickets["opened_at"].append(item.timestamp if opened else None)
            tickets["resolved_at"].append(None if opened else item.timestamp)
        elif item.event_type in SURVEY_EVENTS:
            surveys["customer_id"].append(item.customer_id)
            surveys["timestamp"].append(item.timestamp)
            surveys["kind"].append(item.kind)
            surveys["score"].append(int(item.score))
    schemas = {
        "events": pa.schema(
            [
                ("customer_id", pa.string()),
                ("timestamp", stamp),
                ("event_type", pa.string()),
                ("session_id", pa.string()),
            ]
        ),
        "support_tickets": pa.schema(
            [("customer_id", pa.string()), ("opened_at", stamp), ("resolved_at", stamp)]
        ),
        "surveys": pa.schema(
            [("customer_id", pa.string()), ("timestamp", stamp), ("kind", pa.string()), ("score", pa.int64())]
        ),
    }
    columns = {"events": engagement, "support_tickets": tickets, "surveys": surveys}
    return {
        name: pa.Table.from_pydict(columns[name], schema=schemas[name])
        for name in schemas
        if columns[name]["customer_id"]
    }
