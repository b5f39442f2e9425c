"""The retailer's calendar: seasonality, promotions and marketing campaigns.

Days are counted from the window's first day (day 0); the calendar is a pure function of the
configuration, so the oracle can extend it past the end of the window.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from features.synthetic.config import WorldConfig

PURCHASE_MONTH = np.array([0.85, 0.8, 0.9, 0.95, 0.95, 0.95, 1.0, 0.95, 0.95, 1.0, 1.2, 1.6])
SESSION_MONTH = np.array([0.95, 0.9, 0.95, 1.0, 1.0, 0.95, 0.95, 0.95, 1.0, 1.0, 1.1, 1.3])
PURCHASE_WEEKDAY = np.array([0.9, 0.9, 0.95, 1.0, 1.1, 1.25, 0.9])  # Monday first
SESSION_WEEKDAY = np.array([1.05, 1.0, 1.0, 0.95, 0.9, 0.95, 1.15])
PROMO_REFERENCE_DEPTH = 0.25
CAMPAIGN_CHANNELS = ("email", "email", "push", "sms")
EXTRA_CALENDAR_DAYS = 800


@dataclass(frozen=True)
class Promotion:
    """A sale: every product discounted by ``depth`` on days ``start`` … ``stop - 1``."""

    name: str
    start: int
    stop: int
    depth: float


def epoch_days(config: WorldConfig, days: np.ndarray) -> np.ndarray:
    """Days since 1970-01-01 of window-relative days."""
    return np.asarray(days, dtype=np.int64) + config.start_epoch_day


def month_index(config: WorldConfig, days: np.ndarray) -> np.ndarray:
    """Month 0..11 of window-relative days."""
    return epoch_days(config, days).astype("datetime64[D]").astype("datetime64[M]").astype(np.int64) % 12


def weekday_index(config: WorldConfig, days: np.ndarray) -> np.ndarray:
    """Weekday 0 (Monday) … 6 (Sunday); 1970-01-01 was a Thursday."""
    return (epoch_days(config, days) + 3) % 7


def promotions(config: WorldConfig) -> list[Promotion]:
    """Seasonal sales every year (spring, summer, Black Friday week, after Christmas) plus a few
    random flash sales, over the window and ``EXTRA_CALENDAR_DAYS`` after it."""
    rng = np.random.default_rng([config.seed, 0x50_52_4F_4D])
    first_year = int(np.datetime64(config.start_epoch_day, "D").astype("datetime64[Y]").astype(int)) + 1970
    last_day = config.days + EXTRA_CALENDAR_DAYS
    last_year = int(np.datetime64(config.start_epoch_day + last_day, "D").astype("datetime64[Y]").astype(int))
    last_year += 1970
    found: list[Promotion] = []
    seasonal = (
        ("spring_sale", "04-01", 7, 0.15),
        ("summer_sale", "07-01", 14, 0.3),
        ("black_friday", "11-24", 8, 0.3),
        ("winter_sale", "12-26", 11, 0.35),
    )
    for year in range(first_year - 1, last_year + 1):
        for name, month_day, length, depth in seasonal:
            start = int(np.datetime64(f"{year}-{month_day}", "D").astype(np.int64)) - config.start_epoch_day
            found.append(Promotion(f"{name}_{year}", start, start + length, depth))
        for k, start_doy in enumerate(np.sort(rng.integers(20, 330, size=3))):
            start = int(np.datetime64(f"{year}-01-01", "D").astype(np.int64)) + int(start_doy)
            start -= config.start_epoch_day
            found.append(Promotion(f"flash_{year}_{k + 1}", start, start + 3, float(rng.choice([0.1, 0.2]))))
    return [p for p in found if p.stop > -400 and p.start < last_day]


def promo_depth(promos: list[Promotion], days: np.ndarray) -> np.ndarray:
    """Deepest discount running on each day (0 when no sale)."""
    days = np.asarray(days, dtype=np.int64)
    depth = np.zeros(days.shape, dtype=np.float64)
    for promo in promos:
        depth = np.where((days >= promo.start) & (days < promo.stop), np.maximum(depth, promo.depth), depth)
    return depth


def purchase_season(config: WorldConfig, days: np.ndarray) -> np.ndarray:
    """Yearly × weekly multiplier of purchase intensity (December peak, Saturday peak)."""
    return PURCHASE_MONTH[month_index(config, days)] * PURCHASE_WEEKDAY[weekday_index(config, days)]


def session_season(config: WorldConfig, days: np.ndarray) -> np.ndarray:
    """Yearly × weekly multiplier of browsing intensity."""
    return SESSION_MONTH[month_index(config, days)] * SESSION_WEEKDAY[weekday_index(config, days)]


@dataclass(frozen=True)
class Campaigns:
    """Marketing campaigns in the window: one every ``campaign_every_days`` days."""

    day: np.ndarray
    channel: np.ndarray
    campaign_id: np.ndarray
    send_second: np.ndarray


def campaigns(config: WorldConfig) -> Campaigns:
    """Campaign calendar; channels cycle email, email, push, sms; sends go out in the morning."""
    every = config.dynamics.campaign_every_days
    day = np.arange(1, config.days, every, dtype=np.int64)
    index = np.arange(day.size)
    channel = np.asarray(CAMPAIGN_CHANNELS, dtype=object)[index % len(CAMPAIGN_CHANNELS)]
    campaign_id = np.asarray([f"CMP{i + 1:05d}" for i in index], dtype=object)
    rng = np.random.default_rng([config.seed, 0x43_41_4D])
    send_second = rng.integers(8 * 3600, 11 * 3600, size=day.size)
    return Campaigns(day=day, channel=channel, campaign_id=campaign_id, send_second=send_second)
