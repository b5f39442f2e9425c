"""Feature vectors for a request: Feast's online store, plus the events pushed since the snapshot.

One :class:`OnlineFeatures` per server process. Reads go through ``features.online.OnlineReader``
(Feast's SQLite layout read directly; other online stores through the Feast SDK); pushes go through
Feast's push source (``features.store.push_event``). Any failure to reach the store surfaces as
:class:`StoreUnavailable` so the API answers 503 instead of a stack trace.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from cxpredict.workspace import Workspace
from features.online import EVENT_TIME, OnlineReader
from features.store import RealtimeEvent, open_store, push_event
from serving.realtime import overlay

REALTIME_SERVICE = "realtime_signals"
CONSENT_FEATURE = "profile_consent_profiling"


class StoreUnavailable(RuntimeError):
    """The online store could not be read or written."""


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


class OnlineFeatures:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.store = open_store(ws)
        self.reader = OnlineReader(self.store)
        self._push_lock = threading.Lock()

    def warm(self, services: Iterable[str]) -> None:
        """Plan every service once and read one (absent) customer, so the first request is fast and a
        missing table fails at start rather than on a caller."""
        for service in [*services, REALTIME_SERVICE]:
            self.reader.plan(service)
            self._read(["__warm_up__"], service, datetime.now(UTC))

    def probe(self) -> str | None:
        """None when the online store answers a read, else why not (for ``/readyz``)."""
        try:
            self._read(["__probe__"], REALTIME_SERVICE, datetime.now(UTC))
        except StoreUnavailable as failure:
            return str(failure)
        return None

    def refresh(self) -> None:
        """Re-read the Feast registry (after ``cxpredict features`` re-applied and materialised)."""
        try:
            self.reader.refresh()
        except Exception as error:
            raise StoreUnavailable(
                f"the Feast registry could not be read ({type(error).__name__})"
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

    def read(
        self, customer_ids: Sequence[str], services: Sequence[str], request_time: datetime
    ) -> RequestFeatures:
        """The services' features (one read of the union, the realtime counters included), with the
        pushed events folded in."""
        ids = list(customer_ids)
        wanted = tuple(dict.fromkeys([*services, REALTIME_SERVICE]))
        columns = self._read(ids, wanted, request_time, event_times=True)
        stamps = columns.pop(EVENT_TIME)
        realtime = {name: columns[name] for name in self.reader.plan(REALTIME_SERVICE).outputs}
        snapshot_s = [None if stamp is None else float(stamp) for stamp in stamps]
        granted = columns.get(CONSENT_FEATURE)
        consent = (
            [True] * len(ids) if granted is None else [value is None or float(value) > 0 for value in granted]
        )
        merged = overlay(columns, realtime, snapshot_s, request_time.timestamp())
        return RequestFeatures(ids, merged, snapshot_s, consent)

    def push(self, event: RealtimeEvent) -> dict[str, float]:
        """Count the event into the customer's realtime features (serialised within this process, so
        concurrent events for one customer are not lost here)."""
        try:
            with self._push_lock:
                return push_event(self.ws, event, store=self.store)
        except Exception as error:
            raise StoreUnavailable(
                f"the event could not be pushed to the online store ({type(error).__name__})"
            ) from error
