"""The season a probability is calibrated in, and how a model carries it to the window it predicts.

A head is calibrated on one validation cutoff, so without more it predicts every later window at that
window's rate: calibrated on July's summer sale it over-predicts August, calibrated on October it
under-predicts November's peak. The data shows what the season did a year earlier. The model keeps a
profile of the store's daily activity (the facts its label counts: purchases, and for churn
engagement too). The *seasonal index* of a window is its activity a year earlier over the trend
then: the mean activity of the year centred on it, so that a customer base growing or ageing last
year does not pass for season. At prediction time the index of the predicted window over that of the
calibration window is the intensity ratio ``k`` (``model_bundle.seasonal_ratio``): an event that
occurs with probability ``p`` at the calibration window's intensity occurs with ``1 - (1 - p) ** k``;
an absence of events (churn) keeps ``p ** k``. This is the proportional-intensity view
buy-till-you-die models take.

Without the year centred on the calibration window's twin in the history (about a year and a half
before the calibration cutoff), or with too little activity to measure, no profile is made and the
heads stay as calibrated.
"""

from __future__ import annotations

from collections.abc import Iterable

import numpy as np
import pandas as pd

from training.cutoffs import utc_timestamp
from training.model_bundle import seasonal_index

YEAR_DAYS = 365
"""A year earlier by the calendar: sales and holidays come back on their dates."""
TREND_HALF_DAYS = 182
"""The trend of a window is the mean daily activity of the 365 days centred on it."""
MIN_WINDOW_EVENTS = 100
"""Fewest facts in a year-earlier window for its count to stand for the season (Poisson noise ~10 %)."""


def season_profile(
    timestamps: Iterable[pd.Series], as_of: pd.Timestamp, horizon_days: int, calibrated_at: pd.Timestamp
) -> dict[str, object] | None:
    """The spec's ``season``: daily counts (from ``origin``) of the facts in ``timestamps`` before
    ``as_of``, and the calibration window (``calibrated_at`` … + H) whose index is the reference;
    ``None`` when the history does not hold the trend around its twin a year earlier, or its activity
    is too low to measure."""
    end = utc_timestamp(as_of).normalize()
    calibrated = utc_timestamp(calibrated_at).normalize()
    twin = calibrated - pd.Timedelta(days=YEAR_DAYS)
    origin = twin + pd.Timedelta(days=horizon_days // 2 - TREND_HALF_DAYS)
    if origin >= end:
        return None
    moments = [pd.to_datetime(series, utc=True) for series in timestamps]
    stamps = pd.concat(moments, ignore_index=True) if moments else pd.Series(dtype="datetime64[us, UTC]")
    if stamps.empty or stamps.min() > origin:
        return None  # the history starts inside the year around the calibration window's twin
    days = (stamps.dt.normalize() - origin).dt.days.to_numpy()
    length = int((end - origin).days)
    daily = np.bincount(days[(days >= 0) & (days < length)], minlength=length)
    profile = {
        "origin": origin.date().isoformat(),
        "daily": daily.astype(int).tolist(),
        "calibrated_at": calibrated.date().isoformat(),
        "horizon_days": int(horizon_days),
        "year_days": YEAR_DAYS,
        "trend_half_days": TREND_HALF_DAYS,
        "min_window_events": MIN_WINDOW_EVENTS,
    }
    return profile if seasonal_index(profile, calibrated) is not None else None
