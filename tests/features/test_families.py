"""Feature families on small hand-made canonical worlds with hand-computed answers."""

from __future__ import annotations

import json

import pandas as pd
import pytest
from feature_fixtures import read_snapshot, rich_world, utc, write_canonical

from cxpredict.workspace import Workspace, resolve_workspace
from features.snapshots import FeatureBuildConfig, build_features

CUTOFF = "2026-03-01"
ONE_SNAPSHOT = FeatureBuildConfig(lookback_months=0)


@pytest.fixture
def ws(tmp_path) -> Workspace:
    return resolve_workspace(tmp_path / "ws")


def build_at(ws: Workspace, world, as_of: str = CUTOFF, supplied=None):
    write_canonical(ws, world, supplied)
    return build_features(ws, utc(as_of), ONE_SNAPSHOT)


def all_frames(ws: Workspace, day: str) -> dict[str, pd.DataFrame]:
    manifest = json.loads((ws.features_dir / "manifest.json").read_text())
    return {f: read_snapshot(ws, f, day).drop(columns="created_timestamp") for f in manifest["families"]}


def test_given_known_purchases_when_building_then_purchase_features_equal_hand_computed_values(ws):
    # given C1 bought on Jan 1 10:00 (100), Feb 1 10:00 (50 + 30, one order), Feb 15 12:00 (20), returned on Feb 20
    build_at(ws, rich_world())
    # when
    c1 = read_snapshot(ws, "purchase", CUTOFF).loc["C1"]
    # then
    assert c1["purchase_count_30d"] == 3  # the two lines of Feb 1 and the line of Feb 15
    assert c1["purchase_amount_90d"] == pytest.approx(200.0)
    assert c1["purchase_orders_90d"] == 3
    assert c1["days_since_last_purchase"] == pytest.approx(13.5)
    assert c1["purchase_gap_mean_days"] == pytest.approx((45 + 2 / 24) / 2)
    assert c1["purchase_gap_last_days"] == pytest.approx(14 + 2 / 24)
    assert c1["purchase_return_rate_365d"] == pytest.approx(0.25)
    assert c1["purchase_discount_share_365d"] == pytest.approx(0.25)
    assert c1["purchase_channel_share_store_365d"] == pytest.approx(0.5)
    assert c1["purchase_category_share_home_365d"] == pytest.approx(0.75)
    assert c1["purchase_basket_value_365d"] == pytest.approx(200 / 3)


def test_given_a_customer_without_purchases_when_building_then_counts_are_zero_and_recency_is_null(ws):
    build_at(ws, rich_world())
    c2 = read_snapshot(ws, "purchase", CUTOFF).loc["C2"]
    assert c2["purchase_count_30d"] == 0
    assert pd.isna(c2["days_since_last_purchase"])
    assert pd.isna(c2["purchase_gap_mean_days"])
    assert pd.isna(c2["purchase_basket_value_365d"])


def test_given_facts_at_or_after_the_cutoff_when_building_then_every_feature_at_the_cutoff_is_unchanged(
    ws, tmp_path
):
    # given the world, and the same world with late facts in every source (one exactly at the cutoff)
    build_at(ws, rich_world())
    before = all_frames(ws, CUTOFF)
    late = rich_world()
    late["transactions"] += [
        {
            "customer_id": "C1",
            "timestamp": "2026-03-01 00:00",
            "amount": 500.0,
            "order_id": "O7",
            "channel": "app",
            "category": "home",
            "quantity": 9,
            "discount": 0.5,
            "returned": False,
        },
        {
            "customer_id": "C2",
            "timestamp": "2026-03-02",
            "amount": 70.0,
            "order_id": "O8",
            "channel": "online",
            "category": "books",
            "quantity": 1,
            "discount": 0.0,
            "returned": False,
        },
    ]
    late["events"] += [
        {
            "customer_id": "C1",
            "timestamp": "2026-03-01 00:00",
            "event_type": "search",
            "session_id": "S9",
            "channel": "app",
            "category": "home",
        },
        {
            "customer_id": "C1",
            "timestamp": "2026-03-01 01:00",
            "event_type": "checkout_complete",
            "session_id": "S1",
            "channel": "web",
            "category": "home",
        },
        {
            "customer_id": "C2",
            "timestamp": "2026-03-03",
            "event_type": "add_to_cart",
            "session_id": "S8",
            "channel": "web",
            "category": "books",
        },
    ]
    late["support_tickets"].append(
        {
            "customer_id": "C2",
            "opened_at": "2026-03-01 00:00",
            "topic": "availability",
            "resolved_at": "2026-03-02",
            "satisfaction": 1,
            "sentiment": -1.0,
        }
    )
    late["surveys"].append({"customer_id": "C1", "timestamp": "2026-03-04", "kind": "nps", "score": 10})
    late["marketing"].append({"customer_id": "C1", "timestamp": "2026-03-01 00:00", "action": "unsubscribed"})
    late["consents"].append(
        {"customer_id": "C1", "timestamp": "2026-03-02", "purpose": "profiling", "granted": False}
    )
    other = resolve_workspace(tmp_path / "late")
    # when
    build_at(other, late)
    after = all_frames(other, CUTOFF)
    # then
    assert before.keys() == after.keys() and len(before) == 7
    for family, frame in before.items():
        pd.testing.assert_frame_equal(frame, after[family], check_like=False, obj=family)


def test_given_a_ticket_resolved_after_the_cutoff_then_it_is_unresolved_at_the_cutoff_and_resolved_later(ws):
    # given C1's availability ticket opened Feb 10 and resolved Mar 5
    write_canonical(ws, rich_world())
    # when
    build_features(ws, utc("2026-03-10"), FeatureBuildConfig(lookback_months=1))
    # then
    at_cutoff = read_snapshot(ws, "service", CUTOFF).loc["C1"]
    later = read_snapshot(ws, "service", "2026-03-10").loc["C1"]
    assert at_cutoff["service_tickets_unresolved"] == 1
    assert later["service_tickets_unresolved"] == 0
    assert at_cutoff["service_last_satisfaction"] == 4  # the Mar 5 rating (2) is not known yet
    assert later["service_last_satisfaction"] == 2
    needs = read_snapshot(ws, "needs", CUTOFF).loc["C1"]
    assert needs["need_availability_tickets_open"] == 1


def test_given_an_as_of_within_a_day_when_building_then_only_events_before_that_moment_count(ws):
    # given sessions on the as_of day before and after 12:00, and around the 7-day window start
    world = rich_world()
    world["events"] = [
        {
            "customer_id": "C1",
            "timestamp": ts,
            "event_type": "session_start",
            "session_id": sid,
            "channel": "web",
        }
        for ts, sid in [
            ("2026-03-03 10:00", "A"),
            ("2026-03-03 13:00", "B"),
            ("2026-03-10 08:00", "C"),
            ("2026-03-10 14:00", "D"),
        ]
    ]
    # when
    build_at(ws, world, as_of="2026-03-10 12:00")
    c1 = read_snapshot(ws, "engagement", "2026-03-10").loc["C1"]
    # then: the 7-day window is [Mar 3 12:00, Mar 10 12:00)
    assert c1["engagement_sessions_7d"] == 2  # B and C
    assert c1["engagement_sessions_30d"] == 3
    assert c1["days_since_last_visit"] == pytest.approx(4 / 24)


def test_given_sessions_with_and_without_purchase_then_cart_abandonment_counts_only_unconverted_ones(ws):
    # given S1 (cart Feb 10, no purchase) and S2 (cart Feb 15 11:05, purchase 12:00 the same day)
    build_at(ws, rich_world())
    c1 = read_snapshot(ws, "engagement", CUTOFF).loc["C1"]
    assert c1["engagement_cart_sessions_90d"] == 2
    assert c1["engagement_cart_abandoned_90d"] == 1
    assert c1["engagement_cart_abandonment_rate_90d"] == pytest.approx(0.5)
    assert c1["engagement_sessions_30d"] == 3
    assert c1["engagement_app_share_90d"] == pytest.approx(3 / 8)
    assert c1["engagement_activity_trend"] == pytest.approx(9.0)


def test_given_tickets_surveys_and_marketing_then_their_families_hold_hand_computed_values(ws):
    build_at(ws, rich_world())
    service = read_snapshot(ws, "service", CUTOFF)
    voice = read_snapshot(ws, "voice", CUTOFF).loc["C1"]
    marketing = read_snapshot(ws, "marketing", CUTOFF)
    assert service.loc["C1", "service_repeat_contacts_90d"] == 1  # Feb 10 is 9 days after Feb 1
    assert service.loc["C1", "service_resolution_hours_mean"] == pytest.approx(24.0)
    assert service.loc["C1", "service_sentiment_mean_90d"] == pytest.approx(-0.7)
    assert service.loc["C2", "service_tickets_unresolved"] == 1
    assert voice["voice_last_nps"] == 5 and voice["voice_nps_change"] == -4
    assert voice["voice_nps_category"] == "detractor"
    assert pd.isna(voice["voice_csat_change"])
    assert marketing.loc["C1", "marketing_open_rate_90d"] == pytest.approx(0.5)
    assert marketing.loc["C1", "marketing_unsubscribed"] == 0
    assert marketing.loc["C2", "marketing_unsubscribed"] == 1


def test_given_customers_and_consents_then_profile_holds_tenure_attributes_and_consent_state(ws):
    build_at(ws, rich_world())
    profile = read_snapshot(ws, "profile", CUTOFF)
    assert profile.loc["C1", "profile_tenure_days"] == 273
    assert profile.loc["C1", "profile_age"] == 36
    assert profile.loc["C1", "profile_loyalty_tier"] == "gold"
    assert (
        profile.loc["C1", "profile_consent_profiling"] == 1
        and profile.loc["C1", "profile_consent_marketing"] == 0
    )
    assert profile.loc["C2", "profile_consent_profiling"] == 0 and pd.isna(
        profile.loc["C2", "profile_consent_marketing"]
    )


def test_given_events_and_purchases_by_category_then_needs_compare_signals_with_purchases(ws):
    world = rich_world()
    world["events"].append(
        {
            "customer_id": "C2",
            "timestamp": "2026-02-20",
            "event_type": "search",
            "session_id": "S7",
            "category": "home",
        }
    )
    build_at(ws, world)
    needs = read_snapshot(ws, "needs", CUTOFF)
    manifest = json.loads((ws.features_dir / "manifest.json").read_text())
    assert manifest["categories"] == ["home", "books"]  # by event volume
    assert needs.loc["C2", "need_home_searches_90d"] == 1
    assert needs.loc["C2", "need_home_gap_90d"] == 1
    assert needs.loc["C1", "need_home_purchases_90d"] == 3
    assert needs.loc["C1", "need_books_wishlist_90d"] == 1


def test_given_customers_known_only_later_when_building_then_they_are_absent_from_earlier_snapshots(ws):
    # given C3 signs up on Mar 15 and buys on Mar 20
    write_canonical(ws, rich_world())
    build_features(ws, utc("2026-03-25"), FeatureBuildConfig(lookback_months=1))
    # then
    for family in ("purchase", "profile"):
        assert "C3" not in read_snapshot(ws, family, CUTOFF).index
        assert "C3" in read_snapshot(ws, family, "2026-03-25").index
    assert set(read_snapshot(ws, "purchase", CUTOFF).index) == {"C1", "C2"}


def test_given_absent_sources_when_building_then_their_families_have_no_files_and_no_manifest_entry(ws):
    world = {k: v for k, v in rich_world().items() if k in ("transactions", "customers")}
    build_at(ws, world)
    manifest = json.loads((ws.features_dir / "manifest.json").read_text())
    assert set(manifest["families"]) == {"purchase", "profile"}
    for family in ("engagement", "service", "voice", "marketing", "needs"):
        assert not (ws.features_dir / family).exists()
    assert manifest["families"]["profile"]["sources"] == ["customers"]
    assert "profile_consent_profiling" not in read_snapshot(ws, "profile", CUTOFF).columns


def test_given_transactions_with_only_required_columns_then_purchase_leaves_out_unsupplied_inputs(ws):
    # given transactions with just customer_id, timestamp and amount
    rows = [{k: r[k] for k in ("customer_id", "timestamp", "amount")} for r in rich_world()["transactions"]]
    summary = build_at(ws, {"transactions": rows})
    columns = set(read_snapshot(ws, "purchase", CUTOFF).columns)
    assert summary.features == {"purchase": len(columns) - 2}
    assert {
        "purchase_count_30d",
        "purchase_amount_90d",
        "days_since_last_purchase",
        "purchase_gap_mean_days",
    } <= columns
    leaked = [
        c
        for c in columns
        if any(k in c for k in ("channel", "category", "discount", "return", "orders", "size"))
    ]
    assert leaked == []


def test_given_no_canonical_manifest_then_supplied_columns_are_inferred_from_non_null_values(ws):
    rows = [
        {k: r[k] for k in ("customer_id", "timestamp", "amount", "channel")}
        for r in rich_world()["transactions"]
    ]
    write_canonical(ws, {"transactions": rows})
    (ws.canonical_dir / "manifest.json").unlink()
    build_features(ws, utc(CUTOFF), ONE_SNAPSHOT)
    columns = set(read_snapshot(ws, "purchase", CUTOFF).columns)
    assert "purchase_channel_share_store_365d" in columns
    assert "purchase_discount_share_365d" not in columns
