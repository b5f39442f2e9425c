"""Customers erased on request, as the service sees them: so an erased id never re-enters a log.

``cxpredict forget`` removes a customer from every store and writes a tombstone (a salted digest of
the id, never the id). The online store already answers them as unknown; this check keeps the
service from writing them back: ``/events`` refuses them (410) and ``/decide`` answers them
unscored without logging a decision. The tombstone file is re-read when it changes (one ``stat``
per call), so a running server follows a ``forget`` without a restart.
"""

from __future__ import annotations

from collections.abc import Sequence

import pandas as pd

from cxpredict.workspace import Workspace
from features.erasure import TOMBSTONES_FILE, normalise, tombstone_matcher

ERASED = "erased on request"


class ErasedIds:
    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.path = ws.erasure_dir / TOMBSTONES_FILE
        self._stamp: tuple[int, int] | None = None
        self._matcher = None

    def _current(self):
        try:
            status = self.path.stat()
            stamp = (status.st_mtime_ns, status.st_size)
        except FileNotFoundError:
            stamp = None
        if stamp != self._stamp:
            self._matcher = None if stamp is None else tombstone_matcher(self.ws)
            self._stamp = stamp
        return self._matcher

    def among(self, customer_ids: Sequence[str]) -> set[str]:
        """The given ids (as sent) that belong to an erased customer."""
        matcher = self._current()
        if matcher is None or not customer_ids:
            return set()
        normalised = normalise("customer_id", pd.Series(list(customer_ids), dtype=object))
        hits = set(matcher.matches("customer_id", sorted(set(normalised.dropna()))))
        return {raw for raw, value in zip(customer_ids, normalised, strict=True) if value in hits}
