"""Rolling cutoffs: which past moments t a task learns from, validates on and is evaluated on.

Contract: for every cutoff t of a plan, ``t + H <= as_of`` (the label window (t, t+H] is complete
and ends by the moment of training). The latest cutoff is held out for evaluation, the one before
is for early stopping and calibration, the older ones are for training.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import pandas as pd

SPLITS = ("train", "valid", "test")


def utc_timestamp(value: datetime | str | pd.Timestamp) -> pd.Timestamp:
    """A tz-aware UTC timestamp at microsecond resolution (the canonical time type)."""
    stamp = pd.Timestamp(value)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    return stamp.as_unit("us")


@dataclass(frozen=True)
class CutoffPlan:
    """The cutoffs of one task, newest last within ``train``."""

    as_of: pd.Timestamp
    horizon_days: int
    train: tuple[pd.Timestamp, ...]
    valid: pd.Timestamp
    test: pd.Timestamp

    @property
    def all(self) -> tuple[pd.Timestamp, ...]:
        return (*self.train, self.valid, self.test)

    def split_of(self, cutoffs: pd.Series) -> pd.Series:
        """'train' / 'valid' / 'test' for each cutoff in ``cutoffs``."""
        stamps = pd.to_datetime(cutoffs, utc=True)
        split = pd.Series("train", index=cutoffs.index, dtype=object)
        split[stamps == self.valid] = "valid"
        split[stamps == self.test] = "test"
        return split

    def describe(self) -> dict[str, str]:
        """Flat strings for run parameters."""
        return {
            "as_of": self.as_of.isoformat(),
            "horizon_days": str(self.horizon_days),
            "cutoffs_train": ",".join(t.date().isoformat() for t in self.train),
            "cutoff_valid": self.valid.date().isoformat(),
            "cutoff_test": self.test.date().isoformat(),
        }


def plan_cutoffs(
    as_of: datetime | str | pd.Timestamp,
    horizon_days: int,
    n_cutoffs: int = 6,
    step_months: int = 1,
    align_to_month_start: bool = True,
) -> CutoffPlan:
    """Monthly steps back from ``as_of - H`` (floored to the 1st of the month when aligned).

    Aligning puts every cutoff on a feature snapshot date, so the features joined "as of t" are
    exactly those of the snapshot t and not of an older one.
    """
    if n_cutoffs < 3:
        raise ValueError("need at least 3 cutoffs: training, validation and evaluation")
    if horizon_days < 1:
        raise ValueError("horizon must be at least one day")
    moment = utc_timestamp(as_of)
    latest = moment - pd.Timedelta(days=horizon_days)
    if align_to_month_start:
        latest = latest.normalize().replace(day=1)
    cutoffs = [
        (latest - pd.DateOffset(months=step_months * back)).as_unit("us") for back in range(n_cutoffs)
    ][::-1]
    return CutoffPlan(
        as_of=moment,
        horizon_days=horizon_days,
        train=tuple(cutoffs[:-2]),
        valid=cutoffs[-2],
        test=cutoffs[-1],
    )
