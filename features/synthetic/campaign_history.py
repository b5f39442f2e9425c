"""Past campaigns of a generated world: randomised next best actions whose true effects are known.

Why: an uplift model can only be judged against the truth, and a churn score says who is at risk,
not who can be won. This history gives every kind of customer an uplift model must tell apart.

On the first day (00:00 UTC) of each of the last ``waves`` months whose horizon ends inside the
window, the retailer reaches a random ``reach`` share of the customers signed up by then and assigns
each at random to the control group or to one of :data:`ACTIONS`. An action acts on the purchase in
the next ``horizon_days``:

- a customer who would not have bought is *persuaded* with probability ``r_a`` (state at the wave):
  one extra online purchase in the horizon;
- a customer who would have bought is *put off* with probability ``s_a``: every purchase of the
  horizon disappears (with the returns of those orders).

So the true uplift of action ``a`` on "a purchase within the horizon" is ``(1 - p0) r_a - p0 s_a``,
``p0`` the oracle's probability of a purchase without any action. Rates, from the state at the wave:

- ``retention_offer``: ``retention_offer_rate`` × price sensitivity (the deal seekers);
- ``service_recovery_callback``: ``callback_rate_per_bad_incident`` × bad incidents so far (capped);
- ``cross_sell``: ``cross_sell_rate_per_unmet_need`` × unmet needs (capped);
- ``win_back``: ``win_back_rate_fading`` while the customer fades out (decline begun, not yet
  silent), ``win_back_rate_other`` otherwise;
- put off: customers with the hidden ``reacts_badly`` trait, by every marketing action.

Lost causes (already silent) have no rate at all, sure things (``p0`` near 1) leave little to gain,
and the features only partly reveal the traits (discount habits, service history, browsing without
buying, recency). The trait is drawn from the world's seed in customer-id order, so the oracle
recomputes it. Written: the decisions and their delivered / opened / converted outcomes into the
workspace's decision log, exactly as the service logs its own (the control group as holdout
decisions); the changed transactions into ``raw/``; per decision, the truth (arm, propensity,
probability of a purchase without action, true uplift of every action, persuaded / put off) in
``truth/campaigns.parquet``. Waves are a month apart and the horizon is at most 28 days, so the
horizons of two waves never overlap.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from cxpredict.workspace import Workspace
from features.synthetic.config import CATEGORIES, CampaignHistory, WorldConfig
from features.synthetic.raw import SCHEMAS
from features.synthetic.truth import Truth, load_truth
from features.synthetic.world import Latents

ACTIONS = ("retention_offer", "service_recovery_callback", "cross_sell", "win_back")
"""The default action catalogue's actions (``no_action`` is the control group)."""
MARKETING = frozenset({"retention_offer", "cross_sell", "win_back"})
CHANNEL = {"retention_offer": "email", "service_recovery_callback": "phone", "cross_sell": "email",
           "win_back": "email"}  # fmt: skip
CONTROL = "control"
POLICY = "randomised campaign"
CAMPAIGNS_FILE = "campaigns.parquet"
_TRAIT_STREAM = 0xCA4


def uplift_column(action: str) -> str:
    return f"uplift_{action}"


def wave_days(config: WorldConfig) -> list[pd.Timestamp]:
    """UTC midnights of the waves: month starts at least 60 days into the window whose horizon ends
    by the window's end (less its ``quiet_days``), the latest ``waves`` of them."""
    history = config.campaign_history
    assert history is not None
    start = pd.Timestamp(config.start_at)
    end = pd.Timestamp(config.end_at) - pd.Timedelta(days=history.quiet_days)
    first = (start + pd.Timedelta(days=60)).normalize()
    months = pd.date_range(first, end, freq="MS", tz="UTC")
    fitting = [t for t in months if t > first and t + pd.Timedelta(days=history.horizon_days) <= end]
    return [t.as_unit("us") for t in fitting[-history.waves :]]


def reacts_badly(config: WorldConfig, customer_ids: np.ndarray) -> np.ndarray:
    """The hidden trait, drawn once per customer in id order from the world's seed."""
    history = config.campaign_history
    assert history is not None
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _TRAIT_STREAM]))
    order = np.argsort(customer_ids, kind="stable")
    drawn = rng.random(len(customer_ids)) < history.reacts_badly_share
    out = np.empty(len(customer_ids), dtype=bool)
    out[order] = drawn
    return out


def response_rates(
    truth: Truth, customers: pd.DataFrame, moment: pd.Timestamp, bad_trait: np.ndarray
) -> dict:
    """Per action, (persuade rate, put-off rate) arrays for ``customers`` (truth rows) at ``moment``."""
    history = truth.config.campaign_history
    assert history is not None
    churn_at = pd.to_datetime(customers["churn_at"], utc=True)
    decline_at = pd.to_datetime(customers["decline_start_at"], utc=True)
    alive = (churn_at.isna() | (churn_at > moment)).to_numpy()
    fading = (decline_at.notna() & (decline_at <= moment)).to_numpy() & alive
    incidents = truth.incidents
    before = incidents[pd.to_datetime(incidents["day_at"], utc=True) < moment]
    bad = before.loc[before["bad"]].groupby("customer_id").size()
    bad_count = customers["customer_id"].map(bad).fillna(0).to_numpy(dtype=float)
    unmet = customers["unmet_need_count"].to_numpy(dtype=float)
    price = customers["price_sensitivity"].to_numpy(dtype=float)
    persuade = {
        "retention_offer": history.retention_offer_rate * price,
        "service_recovery_callback": np.minimum(
            history.callback_rate_per_bad_incident * bad_count, history.callback_rate_cap
        ),
        "cross_sell": np.minimum(history.cross_sell_rate_per_unmet_need * unmet, history.cross_sell_rate_cap),
        "win_back": np.where(fading, history.win_back_rate_fading, history.win_back_rate_other),
    }
    put_off = history.put_off_rate * bad_trait
    return {
        action: (
            np.where(alive, persuade[action], 0.0),
            np.where(alive & (action in MARKETING), put_off, 0.0),
        )
        for action in ACTIONS
    }


def true_uplift(rates: dict, purchase_probability: np.ndarray) -> dict[str, np.ndarray]:
    """Exact uplift of each action on a purchase within the horizon: (1 - p0) r - p0 s."""
    p0 = np.asarray(purchase_probability, dtype=float)
    return {uplift_column(a): (1.0 - p0) * r - p0 * s for a, (r, s) in rates.items()}


def oracle_uplift(truth: Truth, cutoff: pd.Timestamp, exact: pd.DataFrame) -> pd.DataFrame:
    """The true uplift of every action for the customers of an oracle frame at ``cutoff`` (its
    ``purchase`` column is the probability without action)."""
    customers = truth.customers.set_index("customer_id").loc[exact["customer_id"]].reset_index()
    bad_trait = reacts_badly(truth.config, truth.customers["customer_id"].to_numpy(dtype=object))
    trait_of = pd.Series(bad_trait, index=truth.customers["customer_id"].to_numpy(dtype=object))
    rates = response_rates(truth, customers, cutoff, trait_of.loc[customers["customer_id"]].to_numpy())
    return pd.DataFrame(true_uplift(rates, exact["purchase"].to_numpy()), index=exact.index)


def extra_purchase(
    rng: np.random.Generator,
    config: WorldConfig,
    customer_id: str,
    action: str,
    moment: pd.Timestamp,
    end: pd.Timestamp,
    mix: np.ndarray,
    basket_value: float,
    order_id: str,
) -> dict:
    """The raw transaction row of a persuaded customer's extra online purchase: at a random time
    between two hours after ``moment`` and ``end``, in a category of the customer's ``mix``, at
    their basket value (discounted for an offer)."""
    history, dyn = config.campaign_history, config.dynamics
    assert history is not None
    span = max(int((end - moment).total_seconds()) - 7200, 1)
    at = moment + pd.Timedelta(seconds=7200 + int(rng.integers(0, span)))
    k = int(rng.choice(len(CATEGORIES), p=mix))
    price = basket_value * dyn.category_price[k] * float(np.exp(rng.normal(0.0, 0.45)))
    discount = history.offer_discount if action in ("retention_offer", "win_back") else 0.0
    return {"customer_id": customer_id, "timestamp": at.strftime("%Y-%m-%dT%H:%M:%SZ"),
            "amount": max(round(price * (1.0 - discount), 2), 0.5), "order_id": order_id, "channel": "online",
            "category": CATEGORIES[k], "quantity": 1, "discount": discount, "returned": False,
            "loyalty_card": None}  # fmt: skip


def stable_decision_id(seed: int, moment: pd.Timestamp, customer_id: str, namespace: str = "") -> str:
    """A stable decision id for a generated decision: the same world (or simulation, told apart by
    ``namespace``) gives the same ids, so reruns are comparable and outcomes find their decision."""
    scope = f"{namespace}|" if namespace else ""
    digest = hashlib.sha256(f"{scope}{seed}|{moment.isoformat()}|{customer_id}".encode()).hexdigest()
    return f"d-{digest[:24]}"


@dataclass(frozen=True)
class HistorySummary:
    """What the campaign pass wrote (counts only)."""

    waves: int
    decisions: int
    control: int
    persuaded: int
    put_off: int
    transactions: int
    """Raw transaction rows after the waves (added purchases, removed orders)."""

    def as_dict(self) -> dict[str, int]:
        return dict(vars(self))


def write_campaign_history(ws: Workspace, config: WorldConfig) -> HistorySummary:
    """Run the waves over a generated workspace (raw files and truth written): see the module doc."""
    from features.decision_log import DecisionLog
    from features.synthetic.oracle import oracle_probabilities

    history = config.campaign_history
    assert history is not None
    truth = load_truth(ws)
    customers = truth.customers
    ids = customers["customer_id"].to_numpy(dtype=object)
    trait_of = pd.Series(reacts_badly(config, ids), index=ids)
    raw_path = ws.raw_dir / "transactions.parquet"
    tx = pq.read_table(raw_path).to_pandas()
    card_owner = customers.dropna(subset=["loyalty_card"]).set_index("loyalty_card")["customer_id"]
    owner = tx["customer_id"].where(tx["customer_id"].notna(), tx["loyalty_card"].map(card_owner))
    stamp = pd.to_datetime(tx["timestamp"], utc=True, errors="coerce", format="ISO8601")
    is_purchase = (tx["amount"] > 0) & ~tx["returned"].fillna(False).astype(bool)
    rng = np.random.default_rng(np.random.SeedSequence([config.seed, _TRAIT_STREAM, 1]))
    horizon = pd.Timedelta(days=history.horizon_days)
    arms = (CONTROL, *ACTIONS)
    share = (1.0 - history.control_share) / len(ACTIONS)
    propensity = dict(zip(arms, (history.control_share, *([share] * len(ACTIONS)))))
    dyn = config.dynamics
    decisions, outcomes, truths, added = [], [], [], []
    dropped_orders: set[str] = set()
    persuaded_total = put_off_total = control_total = 0
    for wave, moment in enumerate(wave_days(config)):
        known = customers.loc[pd.to_datetime(customers["signup_at"], utc=True) < moment]
        reached = known.loc[rng.random(len(known)) < history.reach].sort_values("customer_id")
        if reached.empty:
            continue
        sub = Truth(truth.config, reached.reset_index(drop=True), truth.incidents, truth.world)
        p0 = oracle_probabilities(sub, moment.to_pydatetime(), history.horizon_days)
        reached = reached.set_index("customer_id").loc[p0["customer_id"]].reset_index()
        bad_trait = trait_of.loc[reached["customer_id"]].to_numpy()
        rates = response_rates(truth, reached, moment, bad_trait)
        uplift = true_uplift(rates, p0["purchase"].to_numpy())
        arm = np.asarray(arms, dtype=object)[rng.choice(len(arms), len(reached), p=list(propensity.values()))]
        window = (stamp > moment) & (stamp <= moment + horizon) & is_purchase
        orders_of = tx.loc[window].groupby(owner[window])["order_id"].agg(list)
        lat = Latents.from_frame(reached)
        mix = lat.purchase_mix(dyn)
        draw = rng.random(len(reached))
        churn_at = pd.to_datetime(reached["churn_at"], utc=True)
        campaign = f"W{moment:%Y-%m}"
        for i, row in enumerate(reached.itertuples(index=False)):
            cid, chosen = row.customer_id, arm[i]
            decision_id = stable_decision_id(config.seed, moment, cid)
            base = {"decision_id": decision_id, "customer_id": cid, "at": moment.to_pydatetime(),
                    "models": {"policy": POLICY, "campaign": campaign, "arms": propensity}}  # fmt: skip
            persuaded = put_off = False
            if chosen == CONTROL:
                control_total += 1
                decisions.append({**base, "holdout": True, "actions": []})
            else:
                decisions.append({**base, "holdout": False, "actions": [
                    {"action": chosen, "channel": CHANNEL[chosen], "propensity": propensity[chosen]}]})  # fmt: skip
                delivered_at = (moment + pd.Timedelta(hours=1)).to_pydatetime()
                outcomes.append({"decision_id": decision_id, "action": chosen, "outcome": "delivered",
                                 "at": delivered_at})  # fmt: skip
                if CHANNEL[chosen] == "email" and draw[i] < dyn.open_probability:
                    outcomes.append({"decision_id": decision_id, "action": chosen, "outcome": "opened",
                                     "at": delivered_at + pd.Timedelta(hours=3)})  # fmt: skip
                r, s = rates[chosen][0][i], rates[chosen][1][i]
                if cid not in orders_of.index:
                    persuaded = bool(rng.random() < r)
                else:
                    put_off = bool(rng.random() < s)
                if persuaded:
                    end = moment + horizon
                    if pd.notna(churn_at.iloc[i]):
                        end = min(end, churn_at.iloc[i])
                    purchase = extra_purchase(rng, config, cid, chosen, moment, end, mix[i], lat.basket_value[i],
                                              f"OC{len(added) + 1:09d}")  # fmt: skip
                    added.append(purchase)
                    outcomes.append({"decision_id": decision_id, "action": chosen, "outcome": "converted",
                                     "at": pd.Timestamp(purchase["timestamp"]).to_pydatetime(),
                                     "revenue": purchase["amount"]})  # fmt: skip
                    persuaded_total += 1
                if put_off:
                    dropped_orders |= {o for o in orders_of.loc[cid] if o is not None}
                    put_off_total += 1
            truths.append(
                {
                    "decision_id": decision_id,
                    "customer_id": cid,
                    "decided_at": moment,
                    "arm": chosen,
                    "propensity": propensity[chosen],
                    "purchase_without_action": float(p0["purchase"].iloc[i]),
                    **{column: float(values[i]) for column, values in uplift.items()},
                    "persuaded": persuaded,
                    "put_off": put_off,
                }  # fmt: skip
            )
    kept = tx.loc[~tx["order_id"].isin(dropped_orders)]
    changed = pd.concat([kept, pd.DataFrame(added, columns=tx.columns)], ignore_index=True)
    scratch = raw_path.with_suffix(".parquet.tmp")
    pq.write_table(
        pa.Table.from_pandas(changed, schema=SCHEMAS["transactions"], preserve_index=False), scratch
    )
    scratch.replace(raw_path)
    frame = pd.DataFrame(truths)
    if len(frame):
        frame["decided_at"] = pd.to_datetime(frame["decided_at"], utc=True)
    frame.to_parquet(ws.truth_dir / CAMPAIGNS_FILE, index=False)
    log = DecisionLog.of(ws)
    try:
        log.import_history(decisions, outcomes)
    finally:
        log.close()
    return HistorySummary(
        waves=len(wave_days(config)),
        decisions=len(decisions),
        control=control_total,
        persuaded=persuaded_total,
        put_off=put_off_total,
        transactions=len(changed),
    )


__all__ = ["ACTIONS", "CONTROL", "CampaignHistory", "oracle_uplift", "wave_days", "write_campaign_history"]
