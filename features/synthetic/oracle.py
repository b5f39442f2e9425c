"""The oracle: best-possible label probabilities from the latent truth and the state at a cutoff.

State at cutoff ``t`` (UTC midnight): sign-up, latents, incidents so far, and whether the
fade-out towards churn has begun (and when). Everything after ``t`` is integrated out exactly:
future incidents (a Markov chain over the counted incidents), the day the fade-out starts, and
the Poisson purchases and sessions whose daily intensities the world was drawn from.

Labels over the horizon (t, t+H] (facts at ``ts`` with t < ts ≤ t+H):
``churn`` no purchase and no web/app event; ``churn_txn_only`` no purchase; ``purchase`` at
least one purchase; ``need_<k>`` a search / product view / wishlist add in category k and no
purchase in k. A purchase is a transaction row that is not a return. ``next_category_<k>`` is the
probability that the next purchase is in k (given there is one), ``expected_days_to_purchase``
is E[min(T, cap)] with T the days from t to the next purchase (cap 365 by default; a customer who
will never buy again counts as ``cap``).
"""

from __future__ import annotations

from datetime import date, datetime
from pathlib import Path

import duckdb
import numpy as np
import pandas as pd

from cxpredict.workspace import Workspace
from features.synthetic.calendar import promotions
from features.synthetic.config import CATEGORIES, WorldConfig
from features.synthetic.rows import DEMAND_SIGNALS, EVENT_TYPES, PURCHASE_CHANNELS
from features.synthetic.truth import Truth, load_truth
from features.synthetic.world import (
    Latents,
    base_log_hazard,
    counted_incidents,
    incident_probability,
    purchase_intensity,
    session_intensity,
)

DAY = 86_400


def cutoff_day(config: WorldConfig, cutoff: date | datetime | str) -> int:
    """Window-relative day of a cutoff, which must be a UTC midnight inside the window."""
    stamp = pd.Timestamp(cutoff)
    stamp = stamp.tz_localize("UTC") if stamp.tzinfo is None else stamp.tz_convert("UTC")
    if stamp != stamp.normalize():
        raise ValueError("the cutoff must be a UTC midnight")
    day = (stamp.date() - config.start_at.date()).days
    if not 0 < day <= config.days:
        raise ValueError(
            f"cutoff {stamp.date()} is outside the window {config.start_at.date()}..{config.end}"
        )
    return day


def _incident_states(memory: int) -> tuple[np.ndarray, np.ndarray]:
    """All (handled, bad) counts of counted incidents with handled + bad ≤ memory."""
    pairs = [(a, b) for a in range(memory + 1) for b in range(memory + 1 - a)]
    return np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])


def onset_distribution(
    config: WorldConfig, lat: Latents, handled: np.ndarray, bad: np.ndarray, first_day: int, days: int
) -> np.ndarray:
    """(customers × days) probability that the fade-out starts on each day after the cutoff, for
    customers not fading yet, given the counted incidents (handled, bad) so far."""
    dyn = config.dynamics
    state_a, state_b = _incident_states(dyn.incident_memory)
    index = {(a, b): s for s, (a, b) in enumerate(zip(state_a, state_b))}
    drop = dyn.satisfaction_effect * (state_a * dyn.handled_drop + state_b * dyn.bad_drop)
    mass = np.zeros((len(lat), state_a.size))
    mass[np.arange(len(lat)), [index[(a, b)] for a, b in zip(handled, bad)]] = 1.0
    base = base_log_hazard(config, lat, np.arange(first_day, first_day + days))
    p = incident_probability(lat)[:, None]
    q = lat.bad_incident_share[:, None]
    open_states = np.flatnonzero(state_a + state_b < dyn.incident_memory)
    to_handled = np.array([index[(state_a[s] + 1, state_b[s])] for s in open_states])
    to_bad = np.array([index[(state_a[s], state_b[s] + 1)] for s in open_states])
    onset = np.empty((len(lat), days))
    for j in range(days):
        survive = np.exp(-np.exp(base[:, j : j + 1] + drop[None, :]))
        onset[:, j] = (mass * (1.0 - survive)).sum(axis=1)
        mass *= survive
        moving = mass[:, open_states] * p
        mass[:, open_states] -= moving
        mass[:, to_handled] += moving * (1.0 - q)  # targets are distinct within each assignment
        mass[:, to_bad] += moving * q
    return onset


def faded_totals(config: WorldConfig, intensity: np.ndarray, onset: np.ndarray) -> np.ndarray:
    """Σ over the horizon of intensity × activity multiplier, for a fade-out starting at ``onset``
    (horizon-relative day, any integer; ≥ horizon means no fade-out). Shapes broadcast."""
    dyn = config.dynamics
    horizon = intensity.shape[1]
    kappa = (1.0 - dyn.decline_floor) / dyn.decline_days
    p0 = np.concatenate([np.zeros((len(intensity), 1)), np.cumsum(intensity, axis=1)], axis=1)
    p1 = np.concatenate(
        [np.zeros((len(intensity), 1)), np.cumsum(intensity * np.arange(horizon), axis=1)], axis=1
    )
    onset = np.broadcast_to(onset, (len(intensity), np.shape(onset)[-1]))
    start = np.clip(onset, 0, horizon)
    stop = np.clip(onset + dyn.decline_days, start, horizon)
    rows = np.arange(len(intensity))[:, None]
    p0a, p0e = p0[rows, start], p0[rows, stop]
    p1a, p1e = p1[rows, start], p1[rows, stop]
    return p0a + (1.0 - kappa + kappa * onset) * (p0e - p0a) - kappa * (p1e - p1a)


def _expected_days(
    config: WorldConfig, intensity: np.ndarray, onset_probability: np.ndarray, age: np.ndarray
) -> np.ndarray:
    """E[min(T, cap)] by stepping day by day through fade-out ages (cap = intensity columns).

    ``age`` is the fade-out age at the cutoff for customers already fading (≥ decline_days:
    churned), −1 for the others, whose onsets follow ``onset_probability``."""
    dyn = config.dynamics
    n, cap = intensity.shape
    depth = dyn.decline_days
    multiplier = 1.0 - (1.0 - dyn.decline_floor) * (np.arange(depth) + 1) / depth
    fading = np.zeros((n, depth))
    rows = np.flatnonzero((age >= 0) & (age < depth))
    fading[rows, age[rows]] = 1.0
    silent = (age >= depth).astype(float)
    not_started = np.where(age < 0, 1.0, 0.0)
    no_purchase = np.zeros(n)  # log-survival of the not-yet-fading branch
    total = np.zeros(n)

    def average(x: np.ndarray) -> np.ndarray:
        return np.where(x > 1e-12, -np.expm1(-x) / np.maximum(x, 1e-12), 1.0)

    for i in range(cap):
        fading[:, 0] = onset_probability[:, i] * np.exp(-no_purchase)
        not_started = np.maximum(not_started - onset_probability[:, i], 0.0)
        lam = intensity[:, i]
        scaled = lam[:, None] * multiplier[None, :]
        total += not_started * np.exp(-no_purchase) * average(lam)
        total += (fading * average(scaled)).sum(axis=1) + silent
        survived = fading * np.exp(-scaled)
        silent += survived[:, -1]
        fading = np.zeros_like(fading)
        fading[:, 1:] = survived[:, :-1]
        no_purchase += lam
    return total


ORACLE_BLOCK = 50_000


def oracle_probabilities(
    truth: Truth, cutoff: date | datetime | str, horizon_days: int, expected_days_cap: int = 365
) -> pd.DataFrame:
    """Exact label probabilities for every customer known at the cutoff (signed up before it).

    One row per customer (column ``customer_id``, sorted): ``churn``, ``churn_txn_only``,
    ``purchase``, ``expected_days_to_purchase``, ``next_category_<k>``, ``need_<k>``; in a world with
    a campaign history and at its horizon, also ``uplift_<action>``, the true uplift of each action
    on ``purchase`` (``features.synthetic.campaign_history``).
    Customers are processed in blocks, so memory stays bounded for large worlds.
    """
    config = truth.config
    day = cutoff_day(config, cutoff)
    stamp = config.start_at + pd.Timedelta(days=day)
    known = truth.customers[truth.customers["signup_at"] < stamp].sort_values("customer_id")
    n = len(known)

    incidents = truth.incidents.sort_values(["customer_id", "day"], kind="stable")
    incidents = incidents[incidents["customer_id"].isin(known["customer_id"])]
    codes = incidents["customer_id"].map(pd.Series(np.arange(n), index=known["customer_id"].to_numpy()))
    counted = counted_incidents(codes.to_numpy(), config.dynamics.incident_memory)
    counted &= incidents["day"].to_numpy() < day
    position = codes[counted].to_numpy()
    bad = np.bincount(position, weights=incidents["bad"][counted].to_numpy(float), minlength=n).astype(int)
    handled = np.bincount(position, minlength=n) - bad

    promos = promotions(config)
    blocks = [
        _block_probabilities(
            config,
            promos,
            known.iloc[i : i + ORACLE_BLOCK],
            handled[i : i + ORACLE_BLOCK],
            bad[i : i + ORACLE_BLOCK],
            day,
            horizon_days,
            expected_days_cap,
        )
        for i in range(0, n, ORACLE_BLOCK)
    ]
    frame = pd.concat(blocks, ignore_index=True) if blocks else pd.DataFrame()
    history = config.campaign_history
    if history is not None and horizon_days == history.horizon_days and len(frame):
        from features.synthetic.campaign_history import oracle_uplift

        frame = pd.concat([frame, oracle_uplift(truth, pd.Timestamp(stamp), frame)], axis=1)
    return frame


def _block_probabilities(
    config: WorldConfig,
    promos: list,
    known: pd.DataFrame,
    handled: np.ndarray,
    bad: np.ndarray,
    day: int,
    horizon_days: int,
    expected_days_cap: int,
) -> pd.DataFrame:
    dyn = config.dynamics
    lat = Latents.from_frame(known)
    decline = known["decline_day"].to_numpy()
    started = (decline >= 0) & (decline < day)
    age = np.where(started, day - decline, -1)
    days = max(horizon_days, expected_days_cap)
    onset = onset_distribution(config, lat, handled, bad, day, days)
    onset[started] = 0.0

    grid = np.arange(day, day + days)
    buy = purchase_intensity(config, lat, promos, grid)
    visit = session_intensity(config, lat, grid)

    horizon = np.arange(horizon_days + 1)[None, :]
    weights = np.concatenate(
        [onset[:, :horizon_days], 1.0 - onset[:, :horizon_days].sum(axis=1, keepdims=True)], axis=1
    )
    weights[started] = 0.0
    weights[started, 0] = 1.0
    starts = np.where(started[:, None], -age[:, None], horizon)
    buy_total = faded_totals(config, buy[:, :horizon_days], starts)
    visit_total = faded_totals(config, visit[:, :horizon_days], starts)

    def expect(values: np.ndarray) -> np.ndarray:
        return np.clip((weights * values).sum(axis=1), 0.0, 1.0)

    no_purchase = expect(np.exp(-buy_total))
    out = {
        "customer_id": known["customer_id"].to_numpy(),
        "churn": expect(np.exp(-buy_total - visit_total)),
        "churn_txn_only": no_purchase,
        "purchase": 1.0 - no_purchase,
        "expected_days_to_purchase": _expected_days(config, buy[:, :expected_days_cap], onset, age),
    }
    mix, browse = lat.purchase_mix(dyn), lat.browse_mix(dyn)
    for k, category in enumerate(CATEGORIES):
        out[f"next_category_{category}"] = mix[:, k]
    for k, category in enumerate(CATEGORIES):
        buy_k, look_k = mix[:, k : k + 1] * buy_total, browse[:, k : k + 1] * visit_total
        out[f"need_{category}"] = np.clip(expect(np.exp(-buy_k)) - expect(np.exp(-buy_k - look_k)), 0.0, 1.0)
    return pd.DataFrame(out)


def realised_labels(
    where: Workspace | Path | str, cutoff: date | datetime | str, horizon_days: int
) -> pd.DataFrame:
    """The labels that actually happened, read from ``<ws>/raw`` (defective rows dropped,
    identifier-only rows resolved through the truth's identifiers): for testing the oracle.

    One row per customer known at the cutoff: ``churn``, ``churn_txn_only``, ``purchase``,
    ``days_to_purchase`` (null when no purchase before the end of the window), ``next_category``,
    ``need_<k>``.
    """
    root = where.root if isinstance(where, Workspace) else Path(where)
    truth = load_truth(root / "truth")
    config = truth.config
    day = cutoff_day(config, cutoff)
    start = (config.start_at + pd.Timedelta(days=day)).replace(tzinfo=None)
    stop = start + pd.Timedelta(days=horizon_days)
    end = config.end_at.replace(tzinfo=None)
    raw, truth_dir = root / "raw", root / "truth"
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        params = {"start": start, "stop": stop, "end": end}
        con.execute(
            f"""
            CREATE TEMP TABLE known AS
            SELECT customer_id, loyalty_card, web_device_id, app_device_id
            FROM read_parquet('{truth_dir / "customers.parquet"}')
            WHERE signup_at < CAST($start AS TIMESTAMPTZ)""",
            {"start": start},
        )
        con.execute(f"""
            CREATE TEMP TABLE buys AS
            SELECT coalesce(t.customer_id, k.customer_id) AS customer_id, t.category,
                   try_strptime(t.timestamp, '%Y-%m-%dT%H:%M:%SZ') AS ts
            FROM read_parquet('{raw / "transactions.parquet"}') t
            LEFT JOIN known k ON t.customer_id IS NULL AND t.loyalty_card = k.loyalty_card
            WHERE NOT t.returned AND t.amount > 0 AND t.channel IN {tuple(PURCHASE_CHANNELS)}""")
        con.execute(f"""
            CREATE TEMP TABLE looks AS
            WITH devices AS (
                SELECT web_device_id AS device_id, customer_id FROM known
                UNION ALL SELECT app_device_id, customer_id FROM known WHERE app_device_id IS NOT NULL)
            SELECT coalesce(e.customer_id, d.customer_id) AS customer_id, e.category, e.event_type,
                   try_strptime(e.timestamp, '%Y-%m-%dT%H:%M:%SZ') AS ts
            FROM read_parquet('{raw / "events.parquet"}') e
            LEFT JOIN devices d ON e.customer_id IS NULL AND e.device_id = d.device_id
            WHERE e.event_type IN {tuple(EVENT_TYPES)}""")
        per_category = ", ".join(
            f"bool_or(category = '{c}' AND {{kind}}) AS {{prefix}}_{c}" for c in CATEGORIES
        )
        signal = f"event_type IN {tuple(DEMAND_SIGNALS)}"
        needs = ", ".join(
            f"coalesce(ll.look_{c}, false) AND NOT coalesce(bb.buy_{c}, false) AS need_{c}"
            for c in CATEGORIES
        )
        frame = con.execute(
            f"""
            WITH window_buys AS (
                SELECT customer_id, count(*) AS n FROM buys WHERE ts > $start AND ts <= $stop GROUP BY 1),
            window_looks AS (
                SELECT customer_id, count(*) AS n FROM looks WHERE ts > $start AND ts <= $stop GROUP BY 1),
            next_buy AS (
                SELECT customer_id, arg_min(category, ts) AS next_category, min(ts) AS next_ts
                FROM buys WHERE ts > $start AND ts < $end GROUP BY 1),
            buy_categories AS (
                SELECT customer_id, {per_category.format(kind="true", prefix="buy")}
                FROM buys WHERE ts > $start AND ts <= $stop GROUP BY 1),
            look_categories AS (
                SELECT customer_id, {per_category.format(kind=signal, prefix="look")}
                FROM looks WHERE ts > $start AND ts <= $stop GROUP BY 1),
            need AS (
                SELECT k.customer_id, {needs}
                FROM known k
                LEFT JOIN buy_categories bb USING (customer_id)
                LEFT JOIN look_categories ll USING (customer_id))
            SELECT k.customer_id,
                   wb.n IS NULL AND wl.n IS NULL AS churn,
                   wb.n IS NULL AS churn_txn_only,
                   wb.n IS NOT NULL AS purchase,
                   epoch(nb.next_ts - $start) / 86400.0 AS days_to_purchase,
                   nb.next_category,
                   need.* EXCLUDE (customer_id)
            FROM known k
            LEFT JOIN window_buys wb USING (customer_id)
            LEFT JOIN window_looks wl USING (customer_id)
            LEFT JOIN next_buy nb USING (customer_id)
            LEFT JOIN need USING (customer_id)
            ORDER BY k.customer_id""",
            params,
        ).df()
    finally:
        con.close()
    return frame
