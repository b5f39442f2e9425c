"""Turn one simulated block of customers into clean raw rows for every source.

Every fact of a customer lies strictly before its churn time and before the end of the window;
the daily counts come from :mod:`features.synthetic.world`, everything here only dresses them
(time of day, channel, category, amounts, sessions, tickets, surveys, campaigns, consents).
Times are ISO-8601 strings with ``Z``; each table is sorted by time.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Sequence

import numpy as np
import pyarrow as pa

from features.synthetic.calendar import Campaigns, Promotion, promo_depth
from features.synthetic.config import CATEGORIES, WorldConfig
from features.synthetic.identities import BlockIds
from features.synthetic.world import (
    ACQUISITION_CHANNELS,
    DAYS_PER_YEAR,
    PURCHASE_CHANNELS,
    BlockHistory,
    Latents,
    engagement,
)

DAY = 86_400
HOUR_WEIGHTS = np.array(
    [
        0.5,
        0.3,
        0.2,
        0.2,
        0.2,
        0.3,
        0.6,
        1.0,
        1.3,
        1.4,
        1.5,
        1.6,
        1.8,
        1.6,
        1.5,
        1.5,
        1.6,
        1.8,
        2.2,
        2.6,
        2.8,
        2.5,
        1.8,
        1.0,
    ]
)
EVENT_TYPES = (
    "session_start",
    "page_view",
    "search",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "wishlist_add",
    "checkout_start",
    "checkout_complete",
    "app_open",
    "login",
)
DEMAND_SIGNALS = ("search", "product_view", "wishlist_add")
CATEGORY_EVENTS = (
    "search",
    "product_view",
    "add_to_cart",
    "remove_from_cart",
    "wishlist_add",
    "checkout_start",
    "checkout_complete",
)
BROWSE_ORDER = (
    "session_start",
    "app_open",
    "login",
    "page_view",
    "search",
    "product_view",
    "wishlist_add",
    "add_to_cart",
    "remove_from_cart",
    "checkout_start",
)
PURCHASE_SESSION = ("product_view", "add_to_cart", "checkout_start", "checkout_complete")
INCIDENT_TOPICS = ("delivery", "product_quality", "billing", "returns", "account")
TICKET_TOPICS = (*INCIDENT_TOPICS, "availability")
TICKET_CHANNELS = ("phone", "email", "chat", "store", "app")
SURVEY_KINDS = ("nps", "csat")
MARKETING_ACTIONS = ("sent", "opened", "clicked", "unsubscribed")
MARKETING_CHANNELS = ("email", "sms", "push")
PURPOSES = ("profiling", "marketing")
REGIONS = ("north", "south", "east", "west", "central")
TIERS = ("bronze", "silver", "gold")
COMMENTS_LOW = (
    "delivery was late",
    "nobody answered my complaint",
    "could not find what i was looking for",
    "too expensive",
)
COMMENTS_MID = ("ok", "fine overall", "average experience")
COMMENTS_HIGH = ("great service", "fast delivery", "love the app")


# --- column builders -------------------------------------------------------------------------------


@dataclass
class Coded:
    """A string column ``values[codes]``, null where ``null`` is true."""

    values: Sequence[str] | pa.Array
    codes: np.ndarray
    null: np.ndarray | None = None


@dataclass
class Time:
    """An ISO-8601 ``Z`` time column from epoch seconds, null where ``null`` is true."""

    seconds: np.ndarray
    null: np.ndarray | None = None


@dataclass
class Numbered:
    """An identifier column ``prefix`` + 10-digit zero-padded number."""

    prefix: str
    number: np.ndarray


@dataclass
class Value:
    """A numeric or boolean column, null where ``null`` is true."""

    values: np.ndarray
    null: np.ndarray | None = None


Column = Coded | Time | Numbered | Value


@cache
def _tables() -> tuple[np.ndarray, np.ndarray]:
    """Byte tables of every ``HH:MM:SSZ`` and every 5-digit string, built on first use."""
    text = "".join(f"{x // 3600:02d}:{x // 60 % 60:02d}:{x % 60:02d}Z" for x in range(DAY))
    five = "".join(f"{x:05d}" for x in range(100_000))
    return np.frombuffer(text.encode(), dtype="V9"), np.frombuffer(five.encode(), dtype="V5")


def _fixed_width(records: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """An Arrow string array over a contiguous array of equal-width byte records (no copy)."""
    n, width = records.size, records.dtype.itemsize
    offsets = np.arange(0, (n + 1) * width, width, dtype=np.int32)
    validity = None if null is None else pa.array(~np.asarray(null, bool)).buffers()[1]
    return pa.StringArray.from_buffers(n, pa.py_buffer(offsets), pa.py_buffer(records), validity)


def iso(seconds: np.ndarray, null: np.ndarray | None = None) -> pa.Array:
    """Epoch seconds → ``YYYY-MM-DDTHH:MM:SSZ`` (table look-ups: ~10× faster than a cast)."""
    time_of_day, _ = _tables()
    days, second = np.divmod(np.asarray(seconds, dtype=np.int64), DAY)
    if days.size == 0:
        return pa.array([], pa.string())
    first = int(days.min())
    labels = np.arange(first, int(days.max()) + 1).astype("datetime64[D]").astype(str)
    dates = np.frombuffer(("T".join(labels) + "T").encode(), dtype="V11")
    records = np.empty(days.size, dtype=[("date", "V11"), ("time", "V9")])
    records["date"] = dates[days - first]
    records["time"] = time_of_day[second]
    return _fixed_width(records, null)


def numbered(prefix: str, number: np.ndarray) -> pa.Array:
    """``prefix`` + the number as 10 zero-padded digits."""
    _, five = _tables()
    number = np.asarray(number, dtype=np.int64)
    if number.size and (number.min() < 0 or number.max() >= 10**10):
        raise ValueError("identifier numbers must fit in 10 digits")
    records = np.empty(number.size, dtype=[("prefix", f"V{len(prefix)}"), ("high", "V5"), ("low", "V5")])
    records["prefix"] = np.frombuffer(prefix.encode(), dtype=f"V{len(prefix)}")[0]
    records["high"] = five[number // 100_000]
    records["low"] = five[number % 100_000]
    return _fixed_width(records)


def _mask(null: np.ndarray | None, order: np.ndarray) -> np.ndarray | None:
    return None if null is None else np.asarray(null)[order]


def _to_arrow(column: Column, order: np.ndarray) -> pa.Array:
    if isinstance(column, Coded):
        values = (
            column.values if isinstance(column.values, pa.Array) else pa.array(column.values, pa.string())
        )
        return values.take(pa.array(np.asarray(column.codes)[order], mask=_mask(column.null, order)))
    if isinstance(column, Time):
        return iso(np.asarray(column.seconds)[order], _mask(column.null, order))
    if isinstance(column, Numbered):
        return numbered(column.prefix, np.asarray(column.number)[order])
    return pa.array(np.asarray(column.values)[order], mask=_mask(column.null, order))


def table(columns: dict[str, Column], sort_seconds: np.ndarray, order: np.ndarray | None = None) -> pa.Table:
    """Build an Arrow table sorted by ``sort_seconds`` (stable), or in a precomputed ``order``."""
    order = np.argsort(sort_seconds, kind="stable") if order is None else order
    return pa.table({name: _to_arrow(column, order) for name, column in columns.items()})


def pick(rng: np.random.Generator, probabilities: np.ndarray) -> np.ndarray:
    """One categorical draw per row of a (rows × options) probability matrix."""
    cumulative = np.cumsum(probabilities, axis=1)
    u = rng.random(len(probabilities))[:, None] * cumulative[:, -1:]
    return np.minimum((u > cumulative).sum(axis=1), probabilities.shape[1] - 1)


def expand(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(customer, day) of every unit in a daily count grid, sorted by customer then day."""
    customer, day = np.nonzero(counts)
    times = counts[customer, day]
    return np.repeat(customer, times), np.repeat(day, times)


def seconds_of_day(rng: np.random.Generator, n: int, first_hour: int = 0, last_hour: int = 24) -> np.ndarray:
    """Times of day following the online hour profile, within [first_hour, last_hour)."""
    weights = HOUR_WEIGHTS[first_hour:last_hour] / HOUR_WEIGHTS[first_hour:last_hour].sum()
    hour = first_hour + rng.choice(last_hour - first_hour, size=n, p=weights)
    return hour * 3600 + rng.integers(1, 3600, n)


# --- the block ---------------------------------------------------------------------------------------


@dataclass
class Block:
    """One simulated block and what every source builder needs from it."""

    config: WorldConfig
    lat: Latents
    hist: BlockHistory
    promos: list[Promotion]
    camps: Campaigns
    ids: BlockIds
    rng: np.random.Generator

    @property
    def day0(self) -> int:
        return self.config.start_epoch_day * DAY

    @property
    def end(self) -> int:
        return self.day0 + self.config.days * DAY

    @property
    def churn_second(self) -> np.ndarray:
        """First silent instant of each customer (past the end when not churned in the window)."""
        return self.day0 + np.minimum(self.hist.churn_day, self.config.days + 10_000) * DAY

    def live(self, customer: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Facts that happen before churn and before the end of the window."""
        return (seconds < self.churn_second[customer]) & (seconds < self.end)

    def satisfaction(self, customer: np.ndarray, seconds: np.ndarray) -> np.ndarray:
        """Satisfaction at the start of the day of each fact (incidents of that day not yet felt)."""
        day = np.clip((seconds - self.day0) // DAY, 0, self.config.days)
        return self.lat.satisfaction_base[customer] - self.hist.satisfaction_drop[customer, day]


@dataclass
class Purchases:
    customer: np.ndarray
    seconds: np.ndarray
    category: np.ndarray
    channel: np.ndarray


@dataclass
class Sessions:
    customer: np.ndarray
    seconds: np.ndarray
    unmet: np.ndarray


def transactions(block: Block, order_counter: int) -> tuple[pa.Table, Purchases]:
    """Purchases (with channel, category, amount, promo discount) and later returns."""
    cfg, lat, rng = block.config, block.lat, block.rng
    dyn = cfg.dynamics
    customer, day = expand(block.hist.purchase_counts)
    n = customer.size
    category = pick(rng, lat.purchase_mix(dyn)[customer])
    channel = pick(rng, lat.channel_mix[customer])
    store = channel == PURCHASE_CHANNELS.index("store")
    second = np.where(store, rng.integers(9 * 3600, 20 * 3600, n), seconds_of_day(rng, n, 0, 24))
    second = np.maximum(second, 600)  # keeps the checkout session on the same day
    seconds = block.day0 + day * DAY + second
    quantity = 1 + rng.poisson(0.5, n)
    list_price = (
        lat.basket_value[customer]
        * np.asarray(dyn.category_price)[category]
        * np.exp(rng.normal(0.0, 0.45, n))
        * (1.0 + 0.3 * (quantity - 1))
    )
    depth = promo_depth(block.promos, day)
    in_promo = (depth > 0) & (rng.random(n) < 0.3 + 0.7 * lat.price_sensitivity[customer])
    coupon = ~in_promo & (rng.random(n) < 0.06)
    discount = np.where(in_promo, depth, np.where(coupon, 0.1, 0.0))
    amount = np.maximum(np.round(list_price * (1.0 - discount), 2), 0.5)
    order = order_counter + np.arange(n)

    returned = rng.random(n) < np.asarray(dyn.return_rate)[category]
    back = seconds + rng.integers(2 * DAY, 28 * DAY, n)
    returned &= block.live(customer, back)
    r = np.flatnonzero(returned)
    all_customer = np.concatenate([customer, customer[r]])
    all_seconds = np.concatenate([seconds, back[r]])
    is_return = np.concatenate([np.zeros(n, bool), np.ones(r.size, bool)])
    cat = np.concatenate([category, category[r]])
    chan = np.concatenate([channel, channel[r]])
    card_row = np.concatenate([store, store[r]])
    anonymous = card_row & (rng.random(all_customer.size) < dyn.anonymous_store_share)
    anonymous &= np.asarray(block.ids.loyalty_card.is_valid())[all_customer]
    columns: dict[str, Column] = {
        "customer_id": Coded(block.ids.customer_id, all_customer, anonymous),
        "timestamp": Time(all_seconds),
        "amount": Value(np.concatenate([amount, -amount[r]])),
        "order_id": Numbered("O", np.concatenate([order, order[r]]) + 1),
        "channel": Coded(PURCHASE_CHANNELS, chan),
        "category": Coded(CATEGORIES, cat),
        "quantity": Value(np.concatenate([quantity, quantity[r]]).astype(np.int64)),
        "discount": Value(np.concatenate([discount, discount[r]])),
        "returned": Value(is_return),
        "loyalty_card": Coded(block.ids.loyalty_card, all_customer, ~card_row),
    }
    return table(columns, all_seconds), Purchases(customer, seconds, category, channel)


def events(block: Block, purchases: Purchases, session_counter: int) -> tuple[pa.Table, Sessions, int]:
    """Browsing sessions (focus category from tastes and needs) and the checkout sessions of online
    and app purchases. Every browsing session shows at least one product view of its focus."""
    cfg, lat, rng = block.config, block.lat, block.rng
    dyn = cfg.dynamics
    customer, day = expand(block.hist.session_counts)
    s = customer.size
    app = rng.random(s) < lat.app_share[customer]
    focus = pick(rng, lat.browse_mix(dyn)[customer])
    unmet = lat.unmet[customer, focus]
    start = block.day0 + day * DAY + seconds_of_day(rng, s, 0, 23)
    add = rng.random(s) < np.where(unmet, 0.02, 0.12)
    remove = add & (rng.random(s) < 0.35)
    counts = np.column_stack(
        [
            ~app,
            app,
            rng.random(s) < 0.2,
            rng.poisson(0.4, s),
            rng.random(s) < np.where(unmet, 0.65, 0.3),
            1 + rng.poisson(0.6, s),
            rng.random(s) < np.where(unmet, 0.3, 0.04),
            add,
            remove,
            add & ~remove & (rng.random(s) < 0.3),
        ]
    ).astype(np.int64)
    per_session = counts.sum(axis=1)
    row_session = np.repeat(np.arange(s), per_session)
    type_code = np.repeat(np.tile([EVENT_TYPES.index(t) for t in BROWSE_ORDER], s), counts.ravel())
    rank = np.arange(row_session.size) - np.repeat(np.cumsum(per_session) - per_session, per_session)
    b_seconds = start[row_session] + rank * 45 + rng.integers(0, 40, row_session.size)

    online = purchases.channel != PURCHASE_CHANNELS.index("store")
    p_customer, p_seconds = purchases.customer[online], purchases.seconds[online]
    p_app = purchases.channel[online] == PURCHASE_CHANNELS.index("app")
    m = p_customer.size
    gaps = rng.integers(20, 90, (m, len(PURCHASE_SESSION)))
    before = np.cumsum(gaps[:, ::-1], axis=1)[:, ::-1]  # seconds before the purchase, per step
    steps = len(PURCHASE_SESSION) + 1
    offsets = np.column_stack([before, np.zeros(m, np.int64)])
    first_type = np.where(p_app, EVENT_TYPES.index("app_open"), EVENT_TYPES.index("session_start"))
    p_types = np.column_stack([first_type] + [np.full(m, EVENT_TYPES.index(t)) for t in PURCHASE_SESSION])

    all_session = np.concatenate([row_session, s + np.repeat(np.arange(m), steps)])
    session_customer = np.concatenate([customer, p_customer])
    session_app = np.concatenate([app, p_app])
    session_category = np.concatenate([focus, purchases.category[online]])
    row_customer = session_customer[all_session]
    row_app = session_app[all_session]
    seconds = np.concatenate([b_seconds, (p_seconds[:, None] - offsets).ravel()])
    types = np.concatenate([type_code, p_types.ravel()])
    has_category = np.isin(types, [EVENT_TYPES.index(t) for t in CATEGORY_EVENTS])

    order = np.argsort(seconds, kind="stable")
    device_key = (row_customer * 2 + row_app)[order]
    _, first_seen = np.unique(device_key, return_index=True)
    first_row = np.zeros(order.size, bool)
    first_row[order[first_seen]] = True
    identified = np.isin(
        types, [EVENT_TYPES.index(t) for t in ("login", "checkout_start", "checkout_complete")]
    )
    anonymous = ~first_row & ~identified & (rng.random(order.size) < dyn.anonymous_event_share)
    device_pool = pa.concat_arrays([block.ids.web_device, block.ids.app_device])
    columns: dict[str, Column] = {
        "customer_id": Coded(block.ids.customer_id, row_customer, anonymous),
        "timestamp": Time(seconds),
        "event_type": Coded(EVENT_TYPES, types),
        "session_id": Numbered("S", session_counter + all_session + 1),
        "channel": Coded(("web", "app"), row_app.astype(np.int64)),
        "category": Coded(CATEGORIES, session_category[all_session], ~has_category),
        "device_id": Coded(device_pool, row_customer + row_app * len(lat)),
    }
    return table(columns, seconds, order), Sessions(customer, start, unmet), session_counter + s + m


def support_tickets(block: Block, sessions: Sessions) -> pa.Table:
    """Incident tickets (well handled, badly resolved or unresolved, with repeat contacts for some
    unresolved ones) and availability tickets from sessions that look for an unmet need."""
    cfg, hist, rng = block.config, block.hist, block.rng
    live = hist.incident_day < hist.churn_day[hist.incident_customer]
    customer, bad = hist.incident_customer[live], hist.incident_bad[live]
    opened = block.day0 + hist.incident_day[live] * DAY + rng.integers(8 * 3600, 20 * 3600, customer.size)
    satisfaction = block.satisfaction(customer, opened)
    n = customer.size
    unresolved = bad & (rng.random(n) < 0.5)
    delay = np.where(bad, rng.integers(5 * DAY, 30 * DAY, n), np.exp(rng.normal(np.log(0.8 * DAY), 0.8, n)))
    score = np.where(bad, rng.integers(1, 3, n), np.round(1.5 + 4.0 * satisfaction + rng.normal(0.0, 0.7, n)))
    sentiment = np.where(
        bad, rng.normal(-0.55, 0.25, n), rng.normal(0.2 + 0.5 * (satisfaction - 0.5), 0.3, n)
    )
    topic = rng.choice(len(INCIDENT_TOPICS), size=n, p=[0.35, 0.2, 0.15, 0.15, 0.15])

    repeat = unresolved & (rng.random(n) < 0.4)
    again = opened[repeat] + rng.integers(2 * DAY, 10 * DAY, int(repeat.sum()))
    keep = block.live(customer[repeat], again)
    r = np.flatnonzero(repeat)[keep]
    again = again[keep]

    asks = sessions.unmet & (
        rng.random(sessions.unmet.size) < cfg.dynamics.availability_ticket_per_need_session
    )
    a_customer = sessions.customer[asks]
    a_opened = sessions.seconds[asks] + rng.integers(600, 7200, a_customer.size)
    keep = block.live(a_customer, a_opened)
    a_customer, a_opened = a_customer[keep], a_opened[keep]
    k = a_customer.size

    all_customer = np.concatenate([customer, customer[r], a_customer])
    all_opened = np.concatenate([opened, again, a_opened])
    all_unresolved = np.concatenate([unresolved, np.ones(r.size, bool), np.zeros(k, bool)])
    resolved = all_opened + np.concatenate([delay, np.zeros(r.size), rng.integers(2 * 3600, 3 * DAY, k)])
    resolved = resolved.astype(np.int64)
    all_unresolved |= resolved >= block.end
    felt = ~all_unresolved & (resolved < block.churn_second[all_customer])
    all_score = np.concatenate([score, np.ones(r.size), rng.integers(2, 4, k)])
    all_sentiment = np.concatenate([sentiment, rng.normal(-0.7, 0.2, r.size), rng.normal(-0.2, 0.3, k)])
    columns: dict[str, Column] = {
        "customer_id": Coded(block.ids.customer_id, all_customer),
        "opened_at": Time(all_opened),
        "topic": Coded(TICKET_TOPICS, np.concatenate([topic, topic[r], np.full(k, len(INCIDENT_TOPICS))])),
        "channel": Coded(
            TICKET_CHANNELS,
            rng.choice(len(TICKET_CHANNELS), size=all_customer.size, p=[0.3, 0.3, 0.25, 0.1, 0.05]),
        ),
        "resolved_at": Time(resolved, all_unresolved),
        "satisfaction": Value(np.clip(all_score, 1, 5).astype(np.int64), ~felt),
        "sentiment": Value(np.round(np.clip(all_sentiment, -1.0, 1.0), 3)),
    }
    return table(columns, all_opened)


def surveys(block: Block, purchases: Purchases, sessions: Sessions) -> pa.Table:
    """CSAT after some purchases and NPS after some visits, scored from current satisfaction."""
    dyn, rng = block.config.dynamics, block.rng
    c_pick = rng.random(purchases.customer.size) < dyn.csat_per_purchase
    c_customer = purchases.customer[c_pick]
    c_seconds = purchases.seconds[c_pick] + rng.integers(DAY, 3 * DAY, c_customer.size)
    n_pick = rng.random(sessions.customer.size) < dyn.nps_per_session
    n_customer = sessions.customer[n_pick]
    n_seconds = sessions.seconds[n_pick] + rng.integers(1800, 30 * 3600, n_customer.size)
    customer = np.concatenate([c_customer, n_customer])
    seconds = np.concatenate([c_seconds, n_seconds])
    kind = np.concatenate([np.ones(c_customer.size, np.int64), np.zeros(n_customer.size, np.int64)])
    keep = block.live(customer, seconds)
    customer, seconds, kind = customer[keep], seconds[keep], kind[keep]
    n = customer.size
    satisfaction = block.satisfaction(customer, seconds)
    nps = np.clip(np.round(10.0 * satisfaction + rng.normal(0.0, 1.3, n)), 0, 10)
    csat = np.clip(np.round(1.0 + 4.0 * satisfaction + rng.normal(0.0, 0.7, n)), 1, 5)
    score = np.where(kind == 0, nps, csat).astype(np.int64)
    band = np.where(kind == 0, np.digitize(score, [7, 9]), np.digitize(score, [3, 5]))
    wants = block.lat.unmet_count[customer] > 0
    low = np.where(wants & (rng.random(n) < 0.6), 2, rng.integers(0, len(COMMENTS_LOW), n))
    code = np.select(
        [band == 0, band == 1],
        [low, len(COMMENTS_LOW) + rng.integers(0, len(COMMENTS_MID), n)],
        len(COMMENTS_LOW) + len(COMMENTS_MID) + rng.integers(0, len(COMMENTS_HIGH), n),
    )
    columns: dict[str, Column] = {
        "customer_id": Coded(block.ids.customer_id, customer),
        "timestamp": Time(seconds),
        "kind": Coded(SURVEY_KINDS, kind),
        "score": Value(score),
        "comment": Coded(COMMENTS_LOW + COMMENTS_MID + COMMENTS_HIGH, code, rng.random(n) >= 0.3),
    }
    return table(columns, seconds)


@dataclass
class MarketingConsent:
    initially_granted: np.ndarray
    late_grant_second: np.ndarray  # huge when never
    unsubscribe_customer: np.ndarray
    unsubscribe_second: np.ndarray


def marketing(block: Block) -> tuple[pa.Table, MarketingConsent]:
    """Campaign sends to consenting customers, opens and clicks that follow engagement (none once
    churned: sends continue, nobody opens), and unsubscribes that grow with dissatisfaction."""
    cfg, lat, hist, rng, camps = block.config, block.lat, block.hist, block.rng, block.camps
    dyn = cfg.dynamics
    n, k = len(lat), camps.day.size
    never = np.iinfo(np.int64).max // 4
    granted = rng.random(n) < dyn.marketing_consent_share
    late = ~granted & (rng.random(n) < dyn.late_marketing_grant_share)
    late_day = np.maximum(lat.signup_day, 0) + 1 + (rng.random(n) * cfg.days).astype(np.int64)
    late &= late_day < cfg.days
    late_second = np.where(late, block.day0 + late_day * DAY + rng.integers(3600, DAY, n), never)
    send = block.day0 + camps.day * DAY + camps.send_second
    consent = granted[:, None] | (late_second[:, None] < send[None, :])
    send = send[None, :] + rng.integers(0, 3600, (n, k))  # a campaign goes out over an hour
    reachable = np.where(camps.channel == "push", lat.has_app[:, None], True)
    after_signup = camps.day[None, :] > lat.signup_day[:, None]
    targeting = rng.beta(2.0, 5.0, n)
    sent = consent & reachable & after_signup & (rng.random((n, k)) < targeting[:, None])

    activity = hist.activity[:, camps.day]
    level = np.minimum(engagement(lat, camps.day) / (dyn.sessions_per_year / DAYS_PER_YEAR), 3.0)
    is_sms = (camps.channel == "sms")[None, :]
    opened = sent & ~is_sms & (rng.random((n, k)) < dyn.open_probability * np.sqrt(level) * activity)
    clicked = np.where(
        is_sms,
        sent & (rng.random((n, k)) < 0.05 * activity),
        opened & (rng.random((n, k)) < dyn.click_probability),
    )
    satisfaction = lat.satisfaction_base[:, None] - hist.satisfaction_drop[:, camps.day]
    p_unsub = dyn.unsubscribe_probability * (1.0 + 4.0 * np.maximum(dyn.satisfaction_mean - satisfaction, 0))
    unsub = sent & (camps.channel != "push")[None, :] & (activity > 0) & (rng.random((n, k)) < p_unsub)
    first = np.where(unsub.any(axis=1), np.argmax(unsub, axis=1), k)
    still = np.arange(k)[None, :] <= first[:, None]
    sent &= still
    opened &= still
    clicked &= still
    unsub &= np.arange(k)[None, :] == first[:, None]

    base = send
    open_at = base + rng.exponential(5 * 3600, (n, k)).astype(np.int64) + 1
    click_at = open_at + rng.integers(10, 600, (n, k))
    unsub_at = np.where(opened, open_at, base) + rng.integers(60, 3600, (n, k))
    parts = []
    for action, mask, at in (
        (0, sent, base),
        (1, opened, open_at),
        (2, clicked, click_at),
        (3, unsub, unsub_at),
    ):
        c, j = np.nonzero(mask)
        seconds = at[c, j]
        keep = (seconds < block.end) & ((action == 0) | (seconds < block.churn_second[c]))
        parts.append((c[keep], j[keep], seconds[keep], np.full(int(keep.sum()), action)))
    customer, campaign, seconds, action = (np.concatenate(x) for x in zip(*parts))
    channel = np.asarray([MARKETING_CHANNELS.index(c) for c in camps.channel])[campaign]
    is_email = channel == MARKETING_CHANNELS.index("email")
    email_only = is_email & (rng.random(customer.size) < dyn.email_only_marketing_share)
    columns: dict[str, Column] = {
        "customer_id": Coded(block.ids.customer_id, customer, email_only),
        "timestamp": Time(seconds),
        "campaign_id": Coded(list(camps.campaign_id), campaign),
        "channel": Coded(MARKETING_CHANNELS, channel),
        "action": Coded(MARKETING_ACTIONS, action),
        "email": Coded(block.ids.email, customer, ~is_email),
    }
    done = action == 3
    consent = MarketingConsent(granted, late_second, customer[done], seconds[done])
    return table(columns, seconds), consent


def consents(block: Block, marketing_consent: MarketingConsent) -> pa.Table:
    """Consents at sign-up (profiling and marketing), later grants, withdrawals and unsubscribes."""
    cfg, lat, rng = block.config, block.lat, block.rng
    dyn = cfg.dynamics
    n = len(lat)
    signup = block.day0 + lat.signup_day * DAY + lat.signup_second
    profiling = rng.random(n) >= dyn.profiling_denied_share
    withdraw = profiling & (
        rng.random(n) < dyn.profiling_withdrawn_share / max(1e-9, 1 - dyn.profiling_denied_share)
    )
    latest = np.minimum(block.churn_second, block.end)
    earliest = np.maximum(signup, block.day0) + 3600
    withdraw &= latest > earliest + 1
    withdraw_at = earliest + (rng.random(n) * np.maximum(latest - earliest - 1, 1)).astype(np.int64)
    w = np.flatnonzero(withdraw)
    late = np.flatnonzero(marketing_consent.late_grant_second < block.end)
    u = marketing_consent.unsubscribe_customer
    customer = np.concatenate([np.arange(n), np.arange(n), w, late, u])
    seconds = np.concatenate(
        [
            signup,
            signup + 1,
            withdraw_at[w],
            marketing_consent.late_grant_second[late],
            marketing_consent.unsubscribe_second + 1,
        ]
    )
    purpose = np.concatenate(
        [
            np.zeros(n, np.int64),
            np.ones(n, np.int64),
            np.zeros(w.size, np.int64),
            np.ones(late.size, np.int64),
            np.ones(u.size, np.int64),
        ]
    )
    granted = np.concatenate(
        [
            profiling,
            marketing_consent.initially_granted,
            np.zeros(w.size, bool),
            np.ones(late.size, bool),
            np.zeros(u.size, bool),
        ]
    )
    keep = seconds < block.end
    columns: dict[str, Column] = {
        "customer_id": Coded(block.ids.customer_id, customer[keep]),
        "timestamp": Time(seconds[keep]),
        "purpose": Coded(PURPOSES, purpose[keep]),
        "granted": Value(granted[keep]),
    }
    return table(columns, seconds[keep])


def customers(block: Block) -> pa.Table:
    """One row per customer: sign-up, profile and the identifiers identity stitching links on."""
    lat, rng = block.lat, block.rng
    n = len(lat)
    signup = block.day0 + lat.signup_day * DAY + lat.signup_second
    yearly = lat.total_purchase_rate(block.config.dynamics) * DAYS_PER_YEAR
    tier = np.digitize(yearly, [5.0, 10.0])
    birth = np.clip(np.round(rng.normal(1980, 14, n)), 1935, 2007).astype(np.int64)
    columns: dict[str, Column] = {
        "customer_id": Coded(block.ids.customer_id, np.arange(n)),
        "signup_at": Time(signup),
        "birth_year": Value(birth),
        "region": Coded(REGIONS, rng.choice(len(REGIONS), size=n, p=[0.25, 0.25, 0.15, 0.15, 0.2])),
        "acquisition_channel": Coded(ACQUISITION_CHANNELS, lat.acquisition),
        "loyalty_tier": Coded(TIERS, tier),
        "email": Coded(block.ids.email, np.arange(n)),
        "phone": Coded(block.ids.phone, np.arange(n)),
        "loyalty_card": Coded(block.ids.loyalty_card, np.arange(n)),
    }
    return table(columns, signup)
