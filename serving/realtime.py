"""Events pushed since the last snapshot, folded into the snapshot features a model reads.

Why: the models are trained on snapshot features; pushed events (``features.store.push_event``) are
counted in the ``realtime`` view and would otherwise never reach a prediction before the next batch
run. The overlay answers "what would the snapshot say if it were rebuilt now" for the features the
counters determine exactly or as a lower bound: sessions in every window, tickets opened in every
window, unresolved tickets, the days since the last visit / ticket / survey answer, surveys in the
year, and the last NPS / CSAT with its change (against the snapshot's last score) and NPS band. Counters whose window started
before the customer's snapshot are stale (a newer snapshot already holds those events) and ignored.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

SESSION_WINDOWS = ("engagement_sessions_7d", "engagement_sessions_30d", "engagement_sessions_90d")
TICKET_WINDOWS = ("service_tickets_30d", "service_tickets_90d", "service_tickets_365d")
UNRESOLVED = "service_tickets_unresolved"
VISIT_AGES = ("days_since_last_visit", "days_since_last_visit_now")
TICKET_AGES = ("days_since_last_ticket", "days_since_last_ticket_now")
SURVEY_AGES = ("days_since_last_survey", "days_since_last_survey_now")
SURVEYS = "voice_surveys_365d"


def nps_band(score: float) -> str:
    """As the voice family bands NPS: 0–6 detractor, 7–8 passive, 9–10 promoter."""
    return "detractor" if score <= 6 else "passive" if score <= 8 else "promoter"


DAY_S = 86400.0


def _value(values: Sequence[object] | None, i: int) -> float | None:
    if values is None:
        return None
    value = values[i]
    return None if value is None or (isinstance(value, float) and math.isnan(value)) else float(value)


def overlay(
    columns: Mapping[str, list],
    realtime: Mapping[str, Sequence[object]],
    snapshot_s: Sequence[float | None],
    request_s: float,
) -> dict[str, list]:
    """``columns`` (one list per feature, one entry per customer) with the pushed counters applied.

    ``realtime`` holds the ``realtime`` view's columns for the same customers and ``snapshot_s``
    each customer's snapshot time (None: no snapshot, nothing to adjust). Columns are copied only
    when a value changes; absent features are left absent.
    """
    out = dict(columns)
    window = realtime.get("realtime_window_start_ts")
    if window is None:
        return out

    def update(name: str, i: int, value: float | str) -> None:
        if name not in out:
            return
        if out[name] is columns[name]:
            out[name] = list(columns[name])
        out[name][i] = value

    for i, snapshot in enumerate(snapshot_s):
        start = _value(window, i)
        if snapshot is None or start is None or start < snapshot:
            continue
        sessions = _value(realtime.get("realtime_sessions"), i) or 0.0
        opened = _value(realtime.get("realtime_tickets_opened"), i) or 0.0
        resolved = _value(realtime.get("realtime_tickets_resolved"), i) or 0.0
        if sessions:
            for name in SESSION_WINDOWS:
                update(name, i, (_value(columns.get(name), i) or 0.0) + sessions)
        if opened:
            for name in TICKET_WINDOWS:
                update(name, i, (_value(columns.get(name), i) or 0.0) + opened)
        if opened or resolved:
            update(UNRESOLVED, i, max(0.0, (_value(columns.get(UNRESOLVED), i) or 0.0) + opened - resolved))
        surveys = _value(realtime.get("realtime_surveys"), i) or 0.0
        if surveys:
            update(SURVEYS, i, (_value(columns.get(SURVEYS), i) or 0.0) + surveys)
        for kind in ("nps", "csat"):
            score = _value(realtime.get(f"realtime_last_{kind}"), i)
            if score is None:
                continue
            before = _value(columns.get(f"voice_last_{kind}"), i)
            update(f"voice_last_{kind}", i, score)
            if before is not None:
                update(f"voice_{kind}_change", i, score - before)
            if kind == "nps":
                update("voice_nps_category", i, nps_band(score))
        stamps = (
            ("realtime_last_visit_ts", VISIT_AGES),
            ("realtime_last_ticket_ts", TICKET_AGES),
            ("realtime_last_survey_ts", SURVEY_AGES),
        )
        for stamp_name, ages in stamps:
            stamp = _value(realtime.get(stamp_name), i)
            if stamp is None or stamp < start:
                continue
            age = max(0.0, (request_s - stamp) / DAY_S)
            for name in ages:
                current = _value(columns.get(name), i)
                update(name, i, age if current is None else min(current, age))
    return out
