"""Feature vectors for a request: Feast's online store, plus the events logged since the snapshot.

One :class:`OnlineFeatures` per server process. Snapshot reads go through
``features.online.OnlineReader`` (Feast's SQLite layout read directly in one statement, Redis in
one ``MULTI``/``EXEC``, so one answer never mixes two snapshots; other online stores through the
Feast SDK). Events go to the
durable event log (``features.event_log``) and the counters a prediction folds in are computed
from that log, so every worker and replica sees every acknowledged event exactly once. Changes
made by other processes (a feature refresh, a re-applied registry) are noticed on the next
request. Any failure to reach the store surfaces as :class:`StoreUnavailable` so the API answers
503 instead of a stack trace.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from cxpredict.workspace import Workspace
from features.decision_log import DecisionLog
from features.event_log import EventLog, RealtimeEvent, counters
from features.feast_internals import SqliteOnlineStore
from features.feature_repo.definitions import REALTIME_FEATURES
from features.online import EVENT_TIME, OnlineReader
from features.store import PushResult, mirror_counters, mirror_offers, open_store, snapshot_as_of
from serving.realtime import overlay

CONSENT_FEATURE = "profile_consent_profiling"
log = logging.getLogger("cxpredict.serving")


class StoreUnavailable(RuntimeError):
    """The online store or the event log could not be read or written."""


@dataclass(frozen=True)
class RequestFeatures:
    """The union of the services' features as columns (one list per feature, one entry per
    customer); a model picks its own by name."""

    customer_ids: list[str]
    columns: dict[str, list]
    snapshot_s: list[float | None]
    """Per customer: the snapshot time of their features (None: the store does not know them)."""
    consent: list[bool]
    """Per customer: False when the profile records a withheld profiling consent."""


def _stamp(path: Path) -> tuple[int, int] | None:
    try:
        stat = path.stat()
    except OSError:
        return None
    return stat.st_ino, stat.st_mtime_ns


class OnlineFeatures:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = open_store(ws)
        self.reader = OnlineReader(self.store)
        self.log = EventLog.of(ws)
        config = self.store.config
        self.online_path = (
            Path(SqliteOnlineStore._get_db_path(config)) if config.online_store.type == "sqlite" else None
        )
        self.registry_path = Path(str(config.registry.path))
        self._registry_seen = _stamp(self.registry_path)
        self._online_seen = self._online_inode()
        self._services: tuple[str, ...] = ()

    def _online_inode(self) -> int | None:
        stamp = _stamp(self.online_path) if self.online_path else None
        return None if stamp is None else stamp[0]

    def warm(self, services: Iterable[str]) -> None:
        """Plan every service once and read one (absent) customer, so the first request is fast and a
        missing table fails at start rather than on a caller."""
        self._services = tuple(services)
        for service in self._services:
            self.reader.plan(service)
            self._read(["__warm_up__"], service, datetime.now(UTC))
        self.log.events(["__warm_up__"])

    def sync(self) -> None:
        """Notice what other processes changed: a re-applied registry is re-read, a replaced online
        store file reopened (cheap: two ``stat`` calls when nothing changed)."""
        registry = _stamp(self.registry_path)
        inode = self._online_inode()
        if registry != self._registry_seen or inode != self._online_seen:
            self.refresh()
            self._registry_seen, self._online_seen = registry, inode

    def probe(self) -> str | None:
        """None when the online store and the event log answer, else why not (for ``/readyz``)."""
        if self.online_path is not None and not self.online_path.is_file():
            return f"the online store file is missing ({self.online_path.name})"
        try:
            self.sync()
            for service in self._services[:1]:
                self._read(["__probe__"], service, datetime.now(UTC))
            self.log.events(["__probe__"])
        except StoreUnavailable as failure:
            return str(failure)
        except Exception as failure:
            return f"the event log could not be read ({type(failure).__name__})"
        return None

    def refresh(self) -> None:
        """Re-read the Feast registry and reopen the online store (after ``cxpredict features``)."""
        try:
            self.reader.refresh()
        except Exception as error:
            raise StoreUnavailable(
                f"the Feast registry could not be read ({type(error).__name__})"
            ) from error

    def snapshot_as_of(self) -> datetime | None:
        """The snapshot the online store holds now (committed with its rows), as every worker sees it."""
        try:
            return snapshot_as_of(self.ws, self.store)
        except Exception as error:
            raise StoreUnavailable(
                f"the online store's snapshot time could not be read ({type(error).__name__})"
            ) from error

    def _read(
        self,
        ids: list[str],
        service: str | tuple[str, ...],
        request_time: datetime,
        event_times: bool = False,
    ) -> dict:
        try:
            return self.reader.read(ids, service, request_time, event_times=event_times)
        except Exception as error:
            raise StoreUnavailable(
                f"the online feature store could not be read ({type(error).__name__})"
            ) from error

    def _realtime(self, ids: list[str], snapshot_s: list[float | None]) -> dict[str, list]:
        known = [s for s in snapshot_s if s is not None]
        if not known:
            return {}
        try:
            logged = self.log.events(ids, since=datetime.fromtimestamp(min(known), UTC))
        except Exception as error:
            raise StoreUnavailable(f"the event log could not be read ({type(error).__name__})") from error
        if not logged:
            return {}
        rows = [
            None if s is None else counters(logged.get(c, ()), s)
            for c, s in zip(ids, snapshot_s, strict=True)
        ]
        return {name: [None if row is None else row[name] for row in rows] for name in REALTIME_FEATURES}

    def read(
        self, customer_ids: Sequence[str], services: Sequence[str], request_time: datetime
    ) -> RequestFeatures:
        """The services' features (one read of the union, so one snapshot), with the events logged
        since each customer's snapshot folded in."""
        self.sync()
        ids = list(customer_ids)
        columns = self._read(ids, tuple(dict.fromkeys(services)), request_time, event_times=True)
        stamps = columns.pop(EVENT_TIME)
        snapshot_s = [None if stamp is None else float(stamp) for stamp in stamps]
        granted = columns.get(CONSENT_FEATURE)
        consent = (
            [True] * len(ids) if granted is None else [value is None or float(value) > 0 for value in granted]
        )
        merged = overlay(columns, self._realtime(ids, snapshot_s), snapshot_s, request_time.timestamp())
        return RequestFeatures(ids, merged, snapshot_s, consent)

    def known(self, customer_id: str) -> bool:
        """Whether the online snapshot holds this customer."""
        service = self._services[0] if self._services else None
        if service is None:
            return False
        stamps = self._read([customer_id], service, datetime.now(UTC), event_times=True)[EVENT_TIME]
        return stamps[0] is not None

    def push(self, event: RealtimeEvent, event_id: str | None = None, mirror: bool = True) -> PushResult:
        """Log the event durably (the answer may say 200 once this returns) and, when ``mirror``,
        rewrite the customer's counters in Feast's ``realtime`` view (a failure there is logged,
        not fatal: the log already holds the event and predictions read the log)."""
        try:
            key, new = self.log.append(event, event_id)
        except Exception as error:
            raise StoreUnavailable(f"the event could not be logged ({type(error).__name__})") from error
        window = self.snapshot_as_of()
        values = None
        if mirror and window is not None:
            try:
                values = mirror_counters(self.ws, self.store, self.log, [event.customer_id], window)
                values = values[event.customer_id]
            except Exception as error:
                log.warning(
                    "the realtime mirror was not written (%s); the event is logged", type(error).__name__
                )
        if values is None and window is not None:
            logged = self.log.events([event.customer_id], since=window)
            values = counters(logged.get(event.customer_id, ()), window.timestamp())
        return PushResult(event_id=key, duplicate=not new, counters=values or {})

    def push_offers(self, decisions: DecisionLog, customer_id: str) -> dict | None:
        """Push the customer's offer features, recomputed from the decision log, to Feast's
        ``offer_outcomes`` view; None when that failed (logged, not fatal: the outcome is in the log,
        and the next ``cxpredict features`` rewrites the view)."""
        try:
            return mirror_offers(self.ws, self.store, decisions, [customer_id])[customer_id]
        except Exception as error:
            log.warning(
                "the offer features were not pushed (%s); the outcome is logged", type(error).__name__
            )
            return None
