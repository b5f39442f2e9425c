"""The synthetic world: determinism, contract, behaviour of customers, defects, and an honest oracle."""

from __future__ import annotations

import hashlib
import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from cxpredict.workspace import resolve_workspace
from features.synthetic import (
    CATEGORIES,
    SOURCES,
    WorldConfig,
    generate,
    load_truth,
    oracle_probabilities,
    realised_labels,
)

END = date(2025, 1, 1)
CONTRACT = {
    "customers": {
        "customer_id",
        "signup_at",
        "birth_year",
        "region",
        "acquisition_channel",
        "loyalty_tier",
        "email",
        "phone",
        "loyalty_card",
    },
    "transactions": {
        "customer_id",
        "timestamp",
        "amount",
        "order_id",
        "channel",
        "category",
        "quantity",
        "discount",
        "returned",
    },
    "events": {"customer_id", "timestamp", "event_type", "session_id", "channel", "category", "device_id"},
    "support_tickets": {
        "customer_id",
        "opened_at",
        "topic",
        "channel",
        "resolved_at",
        "satisfaction",
        "sentiment",
    },
    "surveys": {"customer_id", "timestamp", "kind", "score", "comment"},
    "marketing": {"customer_id", "timestamp", "campaign_id", "channel", "action"},
    "consents": {"customer_id", "timestamp", "purpose", "granted"},
}
ENUMS = {
    "transactions": {"channel": {"online", "store", "app"}, "category": set(CATEGORIES)},
    "events": {
        "event_type": {
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
        },
        "channel": {"web", "app"},
    },
    "support_tickets": {"channel": {"phone", "email", "chat", "store", "app"}},
    "surveys": {"kind": {"nps", "csat"}},
    "marketing": {
        "channel": {"email", "sms", "push"},
        "action": {"sent", "opened", "clicked", "unsubscribed"},
    },
    "consents": {"purpose": {"profiling", "marketing"}},
}
ALTERNATE_ID = {
    "customers": ["email", "phone", "loyalty_card"],
    "transactions": ["loyalty_card"],
    "events": ["device_id"],
    "marketing": ["email"],
}
TIME = {"customers": "signup_at", "support_tickets": "opened_at"}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """A two-year world of 3,000 customers (shared by the behavioural tests: ~2 s)."""
    ws = resolve_workspace(tmp_path_factory.mktemp("world"))
    calls: list[tuple[int, int]] = []
    summary = generate(
        ws,
        WorldConfig(customers=3000, seed=11, days=730, end=END),
        progress=lambda stage, done, total, note="": calls.append((done, total)),
    )
    return ws, summary, calls


@pytest.fixture(scope="module")
def raw(world):
    ws, _, _ = world
    return {source: pd.read_parquet(ws.raw_dir / f"{source}.parquet") for source in SOURCES}


@pytest.fixture(scope="module")
def truth(world):
    return load_truth(world[0])


def parse(times: pd.Series) -> pd.Series:
    return pd.to_datetime(times, format="%Y-%m-%dT%H:%M:%SZ", errors="coerce", utc=True)


def clean(frame: pd.DataFrame, source: str, end: pd.Timestamp) -> pd.DataFrame:
    """Rows a careful reader keeps: parsable past times, known enums, a customer id."""
    when = parse(frame[TIME.get(source, "timestamp")])
    keep = when.notna() & (when < end) & frame["customer_id"].notna()
    for column, allowed in ENUMS.get(source, {}).items():
        keep &= frame[column].isin(allowed) | frame[column].isna()
    if source == "transactions":
        keep &= (frame["amount"] > 0) | frame["returned"]
    out = frame[keep].copy()
    out["ts"] = when[keep]
    return out


def activity(raw, truth) -> pd.DataFrame:
    """Purchases and web/app events per customer and time (events keyed by device resolved)."""
    end = pd.Timestamp(truth.config.end_at)
    devices = pd.concat(
        [
            truth.customers[["customer_id", "web_device_id"]].rename(columns={"web_device_id": "device_id"}),
            truth.customers[["customer_id", "app_device_id"]].rename(columns={"app_device_id": "device_id"}),
        ]
    ).dropna()
    events = raw["events"].copy()
    resolved = events["device_id"].map(devices.set_index("device_id")["customer_id"])
    events["customer_id"] = events["customer_id"].fillna(resolved)
    buys = clean(raw["transactions"], "transactions", end)
    buys = buys[~buys["returned"]]
    looks = clean(events, "events", end)
    return pd.concat(
        [
            buys[["customer_id", "ts"]].assign(kind="purchase"),
            looks[["customer_id", "ts", "event_type", "category"]].assign(kind="event"),
        ]
    )


# --- determinism and contract -------------------------------------------------------------------------


def _digests(ws) -> dict[str, str]:
    files = sorted(ws.raw_dir.glob("*.parquet")) + sorted(ws.truth_dir.glob("*.parquet"))
    return {f"{f.parent.name}/{f.name}": hashlib.sha256(f.read_bytes()).hexdigest() for f in files}


def test_given_a_seed_when_generating_twice_then_files_are_identical_and_another_seed_differs(tmp_path):
    small = dict(customers=400, days=120, end=END, chunk_size=150)
    first, second, other = (resolve_workspace(tmp_path / name) for name in ("a", "b", "c"))

    generate(first, WorldConfig(seed=5, **small))
    generate(second, WorldConfig(seed=5, **small))
    generate(other, WorldConfig(seed=6, **small))

    assert len(_digests(first)) == len(SOURCES) + 2
    assert _digests(first) == _digests(second)
    differing = {name for name, digest in _digests(first).items() if _digests(other)[name] != digest}
    assert differing == set(_digests(first))


def test_given_a_world_when_reading_raw_files_then_every_source_has_its_contract_columns(world, raw):
    ws, summary, _ = world

    for source in SOURCES:
        frame = raw[source]
        assert CONTRACT[source] <= set(frame.columns), source
        assert len(frame) == summary.rows[source] > 0
        times = frame[TIME.get(source, "timestamp")].dropna()
        assert (times.str.len().eq(20) & times.str.endswith("Z")).mean() > 0.99
    assert (ws.truth_dir / "world.json").exists()


def test_given_a_world_then_progress_was_reported_up_to_every_customer(world):
    _, _, calls = world

    assert calls and calls[-1] == (3000, 3000)


def test_given_a_world_then_customers_sign_up_before_and_during_the_window(truth):
    start = pd.Timestamp(truth.config.start_at)
    before = (truth.customers["signup_at"] < start).mean()

    assert 0.5 < before < 0.8
    assert truth.customers["churn_at"].notna().mean() > 0.15


# --- behaviour ---------------------------------------------------------------------------------------


def test_given_churned_customers_then_they_are_silent_after_churn_and_fading_before(raw, truth):
    facts = activity(raw, truth)
    churn = truth.customers.set_index("customer_id")["churn_at"].dropna()
    facts = facts[facts["customer_id"].isin(churn.index)].copy()
    facts["churn_at"] = facts["customer_id"].map(churn)
    end = pd.Timestamp(truth.config.end_at)

    after = facts[facts["ts"] >= facts["churn_at"]]
    others = {s: clean(raw[s], s, end) for s in ("surveys", "support_tickets", "marketing")}
    late_voice = sum(
        int((frame["ts"] >= frame["customer_id"].map(churn)).sum())
        for name, frame in others.items()
        if name != "marketing"
    )
    marketing = others["marketing"]
    after_marketing = marketing[marketing["ts"] >= marketing["customer_id"].map(churn)]

    assert after.empty
    assert late_voice == 0
    assert set(after_marketing["action"]) <= {"sent"} and len(after_marketing) > 0

    decline = pd.Timedelta(days=truth.config.dynamics.decline_days)
    start = pd.Timestamp(truth.config.start_at)
    eligible = churn[churn - 3 * decline > start]
    facts = facts[facts["customer_id"].isin(eligible.index)]
    before = facts["churn_at"] - facts["ts"]
    fading = (before <= decline).sum()
    earlier = ((before > decline) & (before <= 2 * decline)).sum()
    assert fading < 0.75 * earlier


def test_given_unmet_needs_and_bad_service_then_customers_churn_more(truth):
    customers = truth.customers
    bad = truth.incidents[truth.incidents["bad"]]["customer_id"].unique()
    troubled = (customers["unmet_need_count"] > 0) & customers["customer_id"].isin(bad)
    content = (customers["unmet_need_count"] == 0) & ~customers["customer_id"].isin(
        truth.incidents["customer_id"]
    )

    churned = customers["churn_at"].notna()

    assert troubled.sum() > 50 and content.sum() > 300
    assert churned[troubled].mean() > 1.5 * churned[content].mean()


def test_given_unmet_needs_then_they_show_as_demand_without_purchases(raw, truth):
    facts = activity(raw, truth)
    customers = truth.customers.set_index("customer_id")
    start = pd.Timestamp(truth.config.start_at)
    customers = customers[customers["churn_at"].isna() & (customers["signup_at"] < start)]
    unmet = [
        (cid, c)
        for c in CATEGORIES
        for cid in customers.index[customers[f"need_{c}"].gt(0) & ~customers[f"need_served_{c}"]]
    ]
    pairs = pd.DataFrame(unmet, columns=["customer_id", "category"])
    signals = facts[facts["event_type"].isin(["search", "product_view", "wishlist_add"])]
    wished = facts[facts["event_type"].eq("wishlist_add")]
    buys = raw["transactions"].dropna(subset=["customer_id"])

    looked = pairs.merge(signals[["customer_id", "category"]].drop_duplicates(), how="inner")
    bought = pairs.merge(buys[["customer_id", "category"]].drop_duplicates(), how="inner")
    wishes = wished.merge(pairs, how="inner")

    assert len(pairs) > 200
    assert len(looked) > 0.8 * len(pairs)
    assert len(bought) == 0
    assert len(wishes) > 0.2 * len(wished)
    topics = raw["support_tickets"]["topic"]
    assert (topics == "availability").sum() > 20


def test_given_two_years_then_december_and_saturdays_are_busier(raw, truth):
    end = pd.Timestamp(truth.config.end_at)
    buys = clean(raw["transactions"], "transactions", end)
    buys = buys[~buys["returned"]]

    per_month = buys.groupby(buys["ts"].dt.tz_localize(None).dt.to_period("M")).size()
    december = per_month[per_month.index.month == 12].mean()
    per_weekday = buys.groupby(buys["ts"].dt.dayofweek).size()

    assert december > 1.25 * per_month.mean()
    assert per_weekday[5] > 1.1 * per_weekday.mean()


def test_given_promotions_then_price_sensitive_customers_buy_on_discount(raw, truth):
    end = pd.Timestamp(truth.config.end_at)
    buys = clean(raw["transactions"], "transactions", end)
    buys = buys[~buys["returned"]]
    sensitivity = truth.customers.set_index("customer_id")["price_sensitivity"]

    buys["sensitive"] = buys["customer_id"].map(sensitivity) > 0.6
    share = buys.groupby("sensitive")["discount"].apply(lambda d: (d >= 0.15).mean())

    assert share[True] > 1.5 * share[False]


# --- defects and identities ---------------------------------------------------------------------------


def observed_defects(source: str, frame: pd.DataFrame, end: pd.Timestamp) -> dict[str, int]:
    """Count defects with an independent reading of the contract."""
    text = frame[TIME.get(source, "timestamp")]
    when = parse(text)
    ids = ["customer_id", *ALTERNATE_ID.get(source, [])]
    found = {
        "unparsable_time": int((when.isna() & text.notna()).sum()),
        "future_time": int((when >= end).sum()),
        "missing_id": int(frame[ids].isna().all(axis=1).sum()),
    }
    if source == "transactions":
        found["negative_amount"] = int(((frame["amount"] < 0) & ~frame["returned"]).sum())
    if source in ENUMS and source != "transactions":
        column = {
            "events": "event_type",
            "support_tickets": "channel",
            "surveys": "kind",
            "marketing": "action",
            "consents": "purpose",
        }[source]
        found["unknown_enum"] = int((~frame[column].isin(ENUMS[source][column])).sum())
    if source == "transactions":
        found["unknown_enum"] = int((~frame["channel"].isin(ENUMS[source]["channel"])).sum())
    if source == "surveys":
        limit = np.where(frame["kind"].eq("nps"), 10, 5)
        low = np.where(frame["kind"].eq("nps"), 0, 1)
        known = frame["kind"].isin(["nps", "csat"])
        found["out_of_range_score"] = int((known & ((frame["score"] > limit) | (frame["score"] < low))).sum())
    if source == "support_tickets":
        found["out_of_range_score"] = int(((frame["satisfaction"] > 5) | (frame["satisfaction"] < 1)).sum())
    return found


def test_given_a_world_then_defects_match_the_truth_and_their_share(world, raw, truth):
    ws, _, _ = world
    recorded = json.loads((ws.truth_dir / "world.json").read_text())
    end = pd.Timestamp(truth.config.end_at)

    for source in SOURCES:
        frame = raw[source]
        observed = observed_defects(source, frame, end)
        assert observed == recorded["malformed"][source], source
        assert int(frame.duplicated().sum()) == recorded["duplicates"][source], source
        if len(frame) > 20_000:
            assert 0.002 < sum(observed.values()) / len(frame) < 0.006, source
    assert sum(recorded["duplicates"].values()) > 0


def test_given_a_world_then_some_rows_carry_only_another_identifier(raw, truth):
    events, buys, mails = raw["events"], raw["transactions"], raw["marketing"]

    device_only = (events["customer_id"].isna() & events["device_id"].notna()).mean()
    card_only = (buys["customer_id"].isna() & buys["loyalty_card"].notna()).sum()
    email_only = mails["customer_id"].isna() & mails["email"].notna()
    emails = raw["customers"].dropna(subset=["customer_id"]).drop_duplicates("customer_id")["email"]
    shared = emails[emails.duplicated(keep=False)].unique()

    assert 0.02 < device_only < 0.08
    assert card_only > 100
    assert email_only.sum() > 100
    assert len(shared) >= 3
    assert mails.loc[email_only, "email"].isin(shared).any() or len(shared) < 10
    linked = events.dropna(subset=["customer_id", "device_id"])["device_id"].unique()
    assert events.loc[events["customer_id"].isna(), "device_id"].dropna().isin(linked).all()


def test_given_a_world_then_a_few_percent_lack_profiling_consent(raw, truth):
    end = pd.Timestamp(truth.config.end_at)
    consents = clean(raw["consents"], "consents", end)
    profiling = consents[consents["purpose"] == "profiling"].sort_values("ts")

    last = profiling.groupby("customer_id")["granted"].last()

    assert 0.01 < (~last).mean() < 0.08
    assert (consents["purpose"].eq("marketing") & ~consents["granted"]).sum() > 100


# --- the oracle -------------------------------------------------------------------------------------


def expected_calibration_error(probability: np.ndarray, outcome: np.ndarray, bins: int = 10) -> float:
    edges = np.quantile(probability, np.linspace(0, 1, bins + 1))
    which = np.clip(np.searchsorted(edges, probability, side="right") - 1, 0, bins - 1)
    error = 0.0
    for b in range(bins):
        inside = which == b
        if inside.any():
            error += inside.mean() * abs(probability[inside].mean() - outcome[inside].mean())
    return error


def recency_frequency(facts: pd.DataFrame, cutoff: pd.Timestamp, kind: str | None) -> pd.DataFrame:
    """Days since the last fact before the cutoff and count over the 90 days before it."""
    past = facts[facts["ts"] < cutoff]
    if kind:
        past = past[past["kind"] == kind]
    grouped = past.groupby("customer_id")["ts"]
    return pd.DataFrame(
        {
            "recency": (cutoff - grouped.max()).dt.days,
            "frequency": past[past["ts"] >= cutoff - pd.Timedelta(days=90)].groupby("customer_id").size(),
        }
    )


@pytest.fixture(scope="module")
def judged(world, raw, truth):
    """Oracle and realised labels at two cutoffs (horizon 90 days), plus the heuristic's inputs."""
    ws = world[0]
    facts = activity(raw, truth)
    frames = []
    for cutoff in ("2023-10-01", "2024-07-01"):
        stamp = pd.Timestamp(cutoff, tz="UTC")
        oracle = oracle_probabilities(truth, cutoff, 90)
        real = realised_labels(ws, cutoff, 90)
        merged = oracle.merge(real, on="customer_id", suffixes=("", "_real"), validate="one_to_one")
        any_fact = recency_frequency(facts, stamp, None).add_prefix("any_")
        purchase = recency_frequency(facts, stamp, "purchase").add_prefix("buy_")
        merged = merged.join(any_fact, on="customer_id").join(purchase, on="customer_id")
        frames.append(merged.assign(cutoff=cutoff))
        assert len(oracle) == len(real) == (truth.customers["signup_at"] < stamp).sum()
    return pd.concat(frames, ignore_index=True)


@pytest.mark.parametrize("label", ["churn", "purchase", "churn_txn_only"])
def test_given_the_oracle_then_it_is_calibrated_on_the_realised_labels(judged, label):
    probability = judged[label].to_numpy()
    outcome = judged[f"{label}_real"].astype(float).to_numpy()

    assert expected_calibration_error(probability, outcome) <= 0.03
    assert abs(probability.mean() - outcome.mean()) < 0.02


def test_given_the_oracle_then_needs_are_calibrated_and_ranked(judged):
    probability = np.concatenate([judged[f"need_{c}"].to_numpy() for c in CATEGORIES])
    outcome = np.concatenate([judged[f"need_{c}_real"].astype(float).to_numpy() for c in CATEGORIES])

    assert expected_calibration_error(probability, outcome) <= 0.03
    assert roc_auc_score(outcome, probability) > 0.85


def test_given_the_oracle_then_it_beats_a_recency_frequency_heuristic(judged):
    def heuristic(recency: pd.Series, frequency: pd.Series) -> np.ndarray:
        return (
            recency.fillna(10_000).rank(pct=True).to_numpy() - frequency.fillna(0).rank(pct=True).to_numpy()
        )

    churn_y = judged["churn_real"].astype(float)
    buy_y = judged["purchase_real"].astype(float)

    churn_oracle = roc_auc_score(churn_y, judged["churn"])
    churn_heuristic = roc_auc_score(churn_y, heuristic(judged["any_recency"], judged["any_frequency"]))
    buy_oracle = roc_auc_score(buy_y, judged["purchase"])
    buy_heuristic = roc_auc_score(buy_y, -heuristic(judged["buy_recency"], judged["buy_frequency"]))

    assert churn_oracle > churn_heuristic + 0.03
    assert buy_oracle > buy_heuristic + 0.05


def test_given_the_oracle_then_next_category_and_expected_days_match_what_happened(judged):
    early = judged[judged["cutoff"] == "2023-10-01"]
    categories = [f"next_category_{c}" for c in CATEGORIES]
    bought = early.dropna(subset=["next_category"])
    chosen = bought[categories].to_numpy()[
        np.arange(len(bought)), bought["next_category"].map({c: i for i, c in enumerate(CATEGORIES)})
    ]
    realised_days = early["days_to_purchase"].fillna(365).clip(upper=365)

    assert np.allclose(early[categories].sum(axis=1), 1.0)
    assert chosen.mean() > 2.0 / len(CATEGORIES)
    assert abs(early["expected_days_to_purchase"].mean() - realised_days.mean()) < 0.05 * realised_days.mean()


def test_given_a_cutoff_that_is_not_midnight_when_asking_the_oracle_then_it_refuses(truth):
    with pytest.raises(ValueError, match="midnight"):
        oracle_probabilities(truth, "2024-03-01T12:00:00Z", 30)


def test_given_a_shift_then_only_the_shifted_customers_act_less_and_only_after_its_start():
    from features.synthetic import Shift
    from features.synthetic.calendar import promotions
    from features.synthetic.world import ACQUISITION_CHANNELS, sample_latents, simulate_block

    # given one block of customers simulated with and without a shift, from the same random stream
    plain = WorldConfig(customers=3_000, seed=4, days=400, end=date(2026, 6, 1))
    shifted = plain.model_copy(update={"shift": Shift.parse("start=2026-03-01,channels=store,purchase=0.3")})
    runs = []
    for config in (plain, shifted):
        rng = np.random.default_rng(7)
        lat = sample_latents(config, rng, 0, config.customers)
        runs.append((lat, simulate_block(config, lat, promotions(config), rng)))
    (lat, before), (_, after) = runs
    first = (date(2026, 3, 1) - date(2026, 6, 1)).days + plain.days
    hit = lat.acquisition == ACQUISITION_CHANNELS.index("store")
    # then customers of other channels, and everyone before the start, act exactly as without it
    assert np.array_equal(before.purchase_counts[~hit], after.purchase_counts[~hit])
    assert np.array_equal(before.session_counts[:, :first], after.session_counts[:, :first])
    assert np.array_equal(before.purchase_counts[:, :first], after.purchase_counts[:, :first])
    # and the shifted customers buy about 30 % as often from the start on, and browse half as much
    ratio = after.purchase_counts[hit, first:].sum() / before.purchase_counts[hit, first:].sum()
    sessions = after.session_counts[hit, first:].sum() / before.session_counts[hit, first:].sum()
    assert 0.25 < ratio < 0.35 and 0.45 < sessions < 0.55


def test_given_a_shift_outside_the_window_or_an_unknown_channel_then_it_is_refused():
    from pydantic import ValidationError

    from features.synthetic import Shift

    with pytest.raises(ValidationError, match="inside the generated window"):
        WorldConfig(customers=100, end=date(2026, 6, 1), shift=Shift.parse("start=2026-07-01"))
    with pytest.raises(ValidationError, match="must be among"):
        Shift.parse("start=2026-03-01,channels=moon")
    with pytest.raises(ValueError, match="key=value"):
        Shift.parse("start")
