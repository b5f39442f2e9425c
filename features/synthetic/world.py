"""Latent customers and the laws that turn them into daily intensities.

The simulation and the oracle both call the intensity functions here, so the oracle's
probabilities are computed from exactly the intensities the world was drawn from. Days are
window-relative integers (day 0 = first day of the window); grids are (customers × days).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
import pandas as pd

from features.synthetic.calendar import (
    PROMO_REFERENCE_DEPTH,
    Promotion,
    promo_depth,
    purchase_season,
    session_season,
)
from features.synthetic.config import CATEGORIES, Dynamics, WorldConfig

DAYS_PER_YEAR = 365.25
NO_DECLINE = 10**9
ACQUISITION_CHANNELS = ("organic", "paid_search", "social", "referral", "store")
ACQUISITION_FRAILTY = np.array([0.0, 0.15, 0.3, -0.15, -0.1])
PURCHASE_CHANNELS = ("online", "store", "app")
N_CATEGORIES = len(CATEGORIES)


@dataclass
class Latents:
    """Latent parameters of a block of customers (one entry or row per customer)."""

    index: np.ndarray  # global 0-based customer number
    signup_day: np.ndarray  # window-relative day of signup (negative: before the window)
    signup_second: np.ndarray  # second of that day
    acquisition: np.ndarray  # index into ACQUISITION_CHANNELS
    purchase_rate: np.ndarray  # base purchases per day, before needs, season, promos
    basket_value: np.ndarray
    price_sensitivity: np.ndarray  # 0..1: lift in promotions
    preference: np.ndarray  # (n, categories), rows sum to 1
    engagement_level: np.ndarray  # browsing sessions per day at the reference day
    engagement_drift: np.ndarray  # log-change of engagement per year
    need: np.ndarray  # (n, categories) latent need intensity, 0 = no need
    need_served: np.ndarray  # (n, categories) bool: the assortment serves that need
    satisfaction_base: np.ndarray  # 0..1 before any incident
    incident_rate: np.ndarray  # service incidents per day
    bad_incident_share: np.ndarray  # share of incidents left unresolved or badly resolved
    frailty: np.ndarray  # customer log-hazard offset (includes the acquisition channel)
    has_app: np.ndarray
    app_share: np.ndarray  # share of sessions in the app
    channel_mix: np.ndarray  # (n, 3) purchase channel probabilities online/store/app

    def __len__(self) -> int:
        return int(self.index.size)

    @property
    def unmet(self) -> np.ndarray:
        """(n, categories) bool: a need the assortment does not serve."""
        return (self.need > 0) & ~self.need_served

    @property
    def unmet_count(self) -> np.ndarray:
        return self.unmet.sum(axis=1)

    def purchase_rates(self, dyn: Dynamics) -> np.ndarray:
        """(n, categories) purchases per day by category: tastes, except where a need goes unmet
        (nothing there fits), plus the extra purchases of served needs."""
        tastes = self.purchase_rate[:, None] * np.where(self.unmet, 0.0, self.preference)
        served = np.where(self.need_served, self.need, 0.0) * dyn.need_purchase_rate_per_year / DAYS_PER_YEAR
        return tastes + served

    def total_purchase_rate(self, dyn: Dynamics) -> np.ndarray:
        return self.purchase_rates(dyn).sum(axis=1)

    def purchase_mix(self, dyn: Dynamics) -> np.ndarray:
        """(n, categories) category probabilities of any purchase (constant in time)."""
        rates = self.purchase_rates(dyn)
        return rates / rates.sum(axis=1, keepdims=True)

    def browse_mix(self, dyn: Dynamics) -> np.ndarray:
        """(n, categories) focus-category probabilities of a browsing session."""
        weight = self.preference + dyn.need_browse_weight * self.need
        return weight / weight.sum(axis=1, keepdims=True)

    def hazard_constant(self, dyn: Dynamics) -> np.ndarray:
        """Time-invariant part of the log decline-onset hazard."""
        median_engagement = dyn.sessions_per_year / DAYS_PER_YEAR
        return (
            np.log(dyn.churn_per_year / DAYS_PER_YEAR)
            + self.frailty
            + dyn.satisfaction_effect * (dyn.satisfaction_mean - self.satisfaction_base)
            + dyn.unmet_need_effect * self.unmet_count
            - dyn.engagement_effect * np.log(self.engagement_level / median_engagement)
        )

    def to_frame(self) -> pd.DataFrame:
        """One column per scalar latent, ``<name>_<category>`` / ``channel_<channel>`` for matrices."""
        columns: dict[str, np.ndarray] = {}
        for spec in fields(self):
            value = getattr(self, spec.name)
            if value.ndim == 1:
                columns[spec.name] = value
            elif spec.name == "channel_mix":
                for j, channel in enumerate(PURCHASE_CHANNELS):
                    columns[f"channel_{channel}"] = value[:, j]
            else:
                for j, category in enumerate(CATEGORIES):
                    columns[f"{spec.name}_{category}"] = value[:, j]
        return pd.DataFrame(columns)

    @classmethod
    def from_frame(cls, frame: pd.DataFrame) -> Latents:
        values: dict[str, np.ndarray] = {}
        for spec in fields(cls):
            if spec.name in frame.columns:
                values[spec.name] = frame[spec.name].to_numpy()
            elif spec.name == "channel_mix":
                values[spec.name] = frame[[f"channel_{c}" for c in PURCHASE_CHANNELS]].to_numpy(np.float64)
            else:
                values[spec.name] = frame[[f"{spec.name}_{c}" for c in CATEGORIES]].to_numpy()
        return cls(**values)


def sample_latents(config: WorldConfig, rng: np.random.Generator, first_index: int, n: int) -> Latents:
    """Draw ``n`` customers: heterogeneous rates, tastes, needs, service luck and churn proneness."""
    dyn = config.dynamics
    k = N_CATEGORIES
    shared = rng.standard_normal(n)  # general activity propensity: buyers also browse
    rate_mean = dyn.purchases_per_year / DAYS_PER_YEAR
    purchase_rate = rng.gamma(dyn.purchase_rate_shape, rate_mean / dyn.purchase_rate_shape, n)
    purchase_rate *= np.exp(0.35 * shared - 0.35**2 / 2)
    engagement = (
        dyn.sessions_per_year
        / DAYS_PER_YEAR
        * np.exp(dyn.engagement_log_sd * (0.6 * shared + 0.8 * rng.standard_normal(n)))
    )
    drift = np.clip(
        rng.normal(dyn.engagement_drift_mean, dyn.engagement_drift_sd, n),
        -dyn.engagement_drift_cap,
        dyn.engagement_drift_cap,
    )
    popularity = np.asarray(dyn.category_popularity)
    preference = rng.dirichlet(dyn.preference_concentration * popularity / popularity.sum(), n)
    preference = np.clip(preference, 1e-4, None)
    preference /= preference.sum(axis=1, keepdims=True)

    need_count = rng.choice(len(dyn.need_count_probabilities), size=n, p=dyn.need_count_probabilities)
    gumbel = -np.log(-np.log(rng.random((n, k))))
    score = np.log(1.0 - preference + 1e-9) + gumbel  # needs arise where the customer does not already buy
    rank = np.argsort(np.argsort(-score, axis=1), axis=1)
    has_need = rank < need_count[:, None]
    need = np.where(has_need, rng.gamma(2.0, 0.5, (n, k)), 0.0)
    need_served = has_need & (rng.random((n, k)) < np.asarray(dyn.assortment_coverage)[None, :])

    acquisition = rng.choice(len(ACQUISITION_CHANNELS), size=n, p=[0.35, 0.25, 0.15, 0.1, 0.15])
    frailty = rng.normal(0.0, dyn.frailty_sd, n) + ACQUISITION_FRAILTY[acquisition]
    has_app = rng.random(n) < dyn.app_user_share
    app_share = np.where(has_app, rng.beta(2.0, 2.0, n), 0.0)
    channel_mix = rng.dirichlet([2.0, 1.5, 1.0], n)
    channel_mix[:, 2] = np.where(has_app, channel_mix[:, 2], 0.0)
    channel_mix /= channel_mix.sum(axis=1, keepdims=True)

    before = rng.random(n) < dyn.pre_window_signup_share
    back = rng.integers(1, int(dyn.pre_window_signup_years * DAYS_PER_YEAR) + 1, n)
    growth = config.days * (np.sqrt(1.0 + 3.0 * rng.random(n)) - 1.0)  # sign-ups grow over the window
    signup_day = np.where(before, -back, np.minimum(growth.astype(np.int64), config.days - 1))
    signup_second = rng.integers(7 * 3600, 23 * 3600, n)

    incident_mean = dyn.incidents_per_year / DAYS_PER_YEAR
    return Latents(
        index=np.arange(first_index, first_index + n, dtype=np.int64),
        signup_day=signup_day.astype(np.int64),
        signup_second=signup_second.astype(np.int64),
        acquisition=acquisition.astype(np.int64),
        purchase_rate=purchase_rate,
        basket_value=np.exp(rng.normal(dyn.basket_log_mean, dyn.basket_log_sd, n)),
        price_sensitivity=rng.beta(2.0, 3.0, n),
        preference=preference,
        engagement_level=engagement,
        engagement_drift=drift,
        need=need,
        need_served=need_served,
        satisfaction_base=np.clip(rng.normal(dyn.satisfaction_mean, dyn.satisfaction_sd, n), 0.05, 1.0),
        incident_rate=rng.gamma(dyn.incident_rate_shape, incident_mean / dyn.incident_rate_shape, n),
        bad_incident_share=rng.beta(dyn.bad_incident_alpha, dyn.bad_incident_beta, n),
        frailty=frailty,
        has_app=has_app,
        app_share=app_share,
        channel_mix=channel_mix,
    )


# --- intensities (customers × days) --------------------------------------------------------------


def signed_up(lat: Latents, days: np.ndarray) -> np.ndarray:
    """Activity starts the day after sign-up."""
    return np.asarray(days)[None, :] > lat.signup_day[:, None]


def _since(start: np.ndarray, days: np.ndarray, dtype) -> np.ndarray:
    """(customers × days) days elapsed since ``start`` (negative before it)."""
    return np.asarray(days).astype(dtype)[None, :] - np.asarray(start).astype(dtype)[:, None]


def years_since_reference(lat: Latents, days: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Years since sign-up or window start, whichever is later: the clock of engagement drift."""
    elapsed = _since(np.maximum(lat.signup_day, 0), days, dtype)
    np.maximum(elapsed, 0, out=elapsed)
    elapsed *= dtype(1.0 / DAYS_PER_YEAR)
    return elapsed


def engagement(lat: Latents, days: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Browsing sessions per day before seasonality, fade-out and sign-up masking."""
    drift = years_since_reference(lat, days, dtype)
    drift *= lat.engagement_drift.astype(dtype)[:, None]
    return lat.engagement_level.astype(dtype)[:, None] * np.exp(drift, out=drift)


def _apply_shift(config: WorldConfig, lat: Latents, days: np.ndarray, rate: np.ndarray, factor: str) -> None:
    """Multiply, in place, the shifted customers' rates from the shift's first day on."""
    shift = config.shift
    if shift is None:
        return
    first = (shift.start - config.end).days + config.days
    later = np.asarray(days) >= first
    channels = [ACQUISITION_CHANNELS.index(c) for c in shift.channels]
    rows = np.flatnonzero(np.isin(lat.acquisition, channels))
    if rows.size and later.any():
        rate[np.ix_(rows, np.flatnonzero(later))] *= rate.dtype.type(getattr(shift, factor))


def session_intensity(config: WorldConfig, lat: Latents, days: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Expected browsing sessions per day of a customer who is not fading out."""
    rate = engagement(lat, days, dtype)
    rate *= session_season(config, days).astype(dtype)[None, :]
    rate *= signed_up(lat, days)
    _apply_shift(config, lat, days, rate, "sessions")
    return rate


def purchase_intensity(
    config: WorldConfig, lat: Latents, promos: list[Promotion], days: np.ndarray, dtype=np.float64
) -> np.ndarray:
    """Expected purchases per day of a customer who is not fading out: rate × season × promo lift."""
    dyn = config.dynamics
    depth = (promo_depth(promos, days) / PROMO_REFERENCE_DEPTH).astype(dtype)[None, :]
    rate = (dyn.promo_lift * lat.price_sensitivity).astype(dtype)[:, None] * depth
    rate += dtype(1.0)
    rate *= lat.total_purchase_rate(dyn).astype(dtype)[:, None]
    rate *= purchase_season(config, days).astype(dtype)[None, :]
    rate *= signed_up(lat, days)
    _apply_shift(config, lat, days, rate, "purchase")
    return rate


def base_log_hazard(config: WorldConfig, lat: Latents, days: np.ndarray, dtype=np.float64) -> np.ndarray:
    """Log decline-onset hazard per day before incidents: baseline, frailty, satisfaction base,
    unmet needs, engagement (with its drift) and the excess risk of new customers."""
    dyn = config.dynamics
    newness = _since(lat.signup_day, days, dtype)
    np.maximum(newness, 0, out=newness)
    newness *= dtype(-1.0 / dyn.new_customer_days)
    np.exp(newness, out=newness)
    newness *= dtype(dyn.new_customer_excess)
    np.log1p(newness, out=newness)
    drift = years_since_reference(lat, days, dtype)
    drift *= (-dyn.engagement_effect * lat.engagement_drift).astype(dtype)[:, None]
    newness += drift
    newness += lat.hazard_constant(dyn).astype(dtype)[:, None]
    return newness


def incident_probability(lat: Latents) -> np.ndarray:
    """Probability of a service incident on a given day (at most one a day)."""
    return -np.expm1(-lat.incident_rate)


def activity_multiplier(
    dyn: Dynamics, decline_day: np.ndarray, days: np.ndarray, dtype=np.float64
) -> np.ndarray:
    """1 before the fade-out, falling linearly to ``decline_floor`` over ``decline_days``, then 0."""
    days = np.asarray(days)
    multiplier = np.ones((len(decline_day), days.size), dtype=dtype)
    rows = np.flatnonzero(np.asarray(decline_day) <= days.max()) if days.size else np.array([], int)
    if rows.size:
        age = _since(np.asarray(decline_day)[rows], days, dtype)
        fading = 1.0 - (1.0 - dyn.decline_floor) * (age + 1) / dyn.decline_days
        multiplier[rows] = np.where(age < 0, 1.0, np.where(age < dyn.decline_days, fading, 0.0))
    return multiplier


# --- the simulation of one block of customers ------------------------------------------------------


@dataclass
class BlockHistory:
    """What happened to a block of customers over the window (daily grid, sparse where possible)."""

    decline_day: np.ndarray  # NO_DECLINE when the fade-out did not start in the window
    churn_day: np.ndarray  # first silent day: decline_day + decline_days (≥ NO_DECLINE if none)
    incident_customer: np.ndarray  # incidents, sorted by customer then day
    incident_day: np.ndarray
    incident_bad: np.ndarray
    satisfaction_drop: np.ndarray  # (n, days + 1): drop from incidents strictly before each day
    activity: np.ndarray  # (n, days) activity multiplier × signed-up mask
    purchase_counts: np.ndarray  # (n, days) purchases per day
    session_counts: np.ndarray  # (n, days) browsing sessions per day


def poisson_grid(rng: np.random.Generator, rate: np.ndarray) -> np.ndarray:
    """Poisson counts for a grid of small rates by inversion: one uniform per cell, and extra work
    only for the few cells with a count (several times faster than ``rng.poisson`` here)."""
    u = rng.random(rate.shape, dtype=np.float32).ravel()
    counts = np.zeros(u.size, dtype=np.int32)
    cells = np.flatnonzero(u > np.exp(-rate, dtype=np.float32).ravel())  # coarse first pass
    lam = rate.ravel()[cells].astype(np.float64)
    term = np.exp(-lam)
    cdf = term.copy()
    left = u[cells].astype(np.float64)  # ≤ 1 - 2**-24, so the float64 cdf always catches up
    k = 0
    while cells.size:
        more = left > cdf
        cells, lam, term, cdf, left = cells[more], lam[more], term[more], cdf[more], left[more]
        counts[cells] += 1
        k += 1
        term *= lam / k
        cdf += term
    return counts.reshape(rate.shape)


def counted_incidents(customer: np.ndarray, memory: int) -> np.ndarray:
    """Only each customer's first ``memory`` incidents lower satisfaction (input sorted by customer)."""
    first = np.searchsorted(customer, customer, side="left")
    return (np.arange(customer.size) - first) < memory


def simulate_block(
    config: WorldConfig, lat: Latents, promos: list[Promotion], rng: np.random.Generator
) -> BlockHistory:
    """Incidents → satisfaction → decline onset → activity → daily purchase and session counts."""
    dyn = config.dynamics
    n, days = len(lat), np.arange(config.days)
    active = signed_up(lat, days)

    hit = (rng.random((n, config.days), dtype=np.float32) < incident_probability(lat)[:, None]) & active
    inc_customer, inc_day = np.nonzero(hit)
    del hit
    inc_bad = rng.random(inc_customer.size) < lat.bad_incident_share[inc_customer]
    counted = counted_incidents(inc_customer, dyn.incident_memory)
    drop = np.where(inc_bad, dyn.bad_drop, dyn.handled_drop) * counted
    flat = inc_customer * (config.days + 1) + inc_day + 1
    drops = np.bincount(flat, weights=drop, minlength=n * (config.days + 1)).astype(np.float32)
    satisfaction_drop = np.cumsum(drops.reshape(n, config.days + 1), axis=1, dtype=np.float32)
    del drops

    log_hazard = base_log_hazard(config, lat, days, np.float32)
    log_hazard += np.float32(dyn.satisfaction_effect) * satisfaction_drop[:, : config.days]
    hazard = np.exp(log_hazard, out=log_hazard)
    hazard *= active
    cumulative = np.cumsum(hazard, axis=1, out=hazard)
    threshold = rng.exponential(1.0, n).astype(np.float32)
    reached = cumulative >= threshold[:, None]
    del cumulative, log_hazard
    decline_day = np.where(reached[:, -1], np.argmax(reached, axis=1), NO_DECLINE).astype(np.int64)
    del reached

    activity = activity_multiplier(dyn, decline_day, days, np.float32)
    activity *= active
    purchases = purchase_intensity(config, lat, promos, days, np.float32)
    purchases *= activity
    purchase_counts = poisson_grid(rng, purchases)
    del purchases
    sessions = session_intensity(config, lat, days, np.float32)
    sessions *= activity
    session_counts = poisson_grid(rng, sessions)
    del sessions

    return BlockHistory(
        decline_day=decline_day,
        churn_day=decline_day + dyn.decline_days,
        incident_customer=inc_customer.astype(np.int64),
        incident_day=inc_day.astype(np.int64),
        incident_bad=inc_bad,
        satisfaction_drop=satisfaction_drop,
        activity=activity,
        purchase_counts=purchase_counts,
        session_counts=session_counts,
    )
