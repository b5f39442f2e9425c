"""Unified profile: one row per customer seen anywhere, latest consent per purpose, coverage per source."""

from __future__ import annotations

import pandas as pd
import pyarrow.parquet as pq

from features.catalog import read_profile
from features.contract import conform
from features.ingest import ingest
from features.profile import build_profile, profile_schema


def table(source: str, rows: list[dict[str, object]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows)
    for column in ("timestamp", "signup_at", "opened_at"):
        if column in frame:
            frame[column] = pd.to_datetime(frame[column], utc=True)
    return conform(frame, source)


def test_given_consents_over_time_then_the_profile_holds_the_latest_per_purpose():
    consents = table("consents", [
        {"customer_id": "C1", "timestamp": "2025-01-01", "purpose": "profiling", "granted": True},
        {"customer_id": "C1", "timestamp": "2025-03-01", "purpose": "profiling", "granted": False},
        {"customer_id": "C1", "timestamp": "2025-02-01", "purpose": "profiling", "granted": True},
        {"customer_id": "C1", "timestamp": "2025-02-01", "purpose": "marketing", "granted": True},
        {"customer_id": "C2", "timestamp": "2025-04-01", "purpose": "marketing", "granted": True},
        {"customer_id": "C2", "timestamp": "2025-04-01", "purpose": "marketing", "granted": False},
    ])  # fmt: skip
    transactions = table("transactions", [{"customer_id": "C3", "timestamp": "2025-01-01", "amount": 1.0}])

    profile = build_profile({"consents": consents, "transactions": transactions}).set_index("customer_id")

    assert bool(profile.loc["C1", "consent_profiling"]) is False
    assert profile.loc["C1", "consent_profiling_at"] == pd.Timestamp("2025-03-01", tz="UTC")
    assert bool(profile.loc["C1", "consent_marketing"]) is True
    assert bool(profile.loc["C2", "consent_marketing"]) is False, "a refusal at the same instant wins"
    assert pd.isna(profile.loc["C2", "consent_profiling"])
    assert pd.isna(profile.loc["C2", "consent_profiling_at"])
    assert pd.isna(profile.loc["C3", "consent_marketing"])


def test_given_customers_seen_in_different_sources_then_each_has_one_row_with_its_coverage():
    customers = table("customers", [
        {"customer_id": "C1", "region": "north", "signup_at": "2024-01-01", "email": "a@example.com"},
        {"customer_id": "C4", "region": "west", "signup_at": "2024-01-01"},
    ])  # fmt: skip
    transactions = table("transactions", [
        {"customer_id": "C1", "timestamp": "2025-01-01", "amount": 1.0},
        {"customer_id": "C1", "timestamp": "2025-02-01", "amount": 1.0},
        {"customer_id": "C2", "timestamp": "2025-01-15", "amount": 1.0},
    ])  # fmt: skip
    tickets = table("support_tickets", [{"customer_id": "C2", "opened_at": "2025-03-01"}])

    tables = {"customers": customers, "transactions": transactions, "support_tickets": tickets,
              "events": None}  # fmt: skip

    profile = build_profile(tables).set_index("customer_id")

    assert profile.index.tolist() == ["C1", "C2", "C4"]
    expected = ["customers,transactions", "support_tickets,transactions", "customers"]
    assert profile["sources"].tolist() == expected
    assert profile["n_sources"].tolist() == [2, 2, 1]
    assert profile.loc["C1", "first_seen_transactions"] == pd.Timestamp("2025-01-01", tz="UTC")
    assert profile.loc["C1", "last_seen_transactions"] == pd.Timestamp("2025-02-01", tz="UTC")
    assert profile.loc["C2", "first_seen_support_tickets"] == pd.Timestamp("2025-03-01", tz="UTC")
    assert profile.loc["C1", "region"] == "north" and pd.isna(profile.loc["C2", "region"])
    assert not {"email", "phone", "loyalty_card"} & set(profile.columns)


def test_given_an_ingest_then_the_profile_is_written_with_its_schema_and_latest_attributes(
    ws, write_raw, transactions, customers, now
):
    write_raw("transactions", transactions)
    write_raw("customers", customers)
    write_raw("consents", [
        {"customer_id": "C2", "timestamp": "2025-01-01", "purpose": "profiling", "granted": "yes"},
        {"customer_id": "C2", "timestamp": "2025-05-01", "purpose": "profiling", "granted": "no"},
    ])  # fmt: skip
    ingest(ws, now=now)
    write_raw("customers", [{"customer_id": "C2", "loyalty_tier": "platinum"}])

    ingest(ws, now=now)

    assert pq.read_schema(ws.canonical_dir / "profile.parquet") == profile_schema()
    profile = read_profile(ws).set_index("customer_id")
    assert profile.loc["C2", "loyalty_tier"] == "platinum"
    assert profile.loc["C2", "region"] == "south"
    assert bool(profile.loc["C2", "consent_profiling"]) is False
    assert profile.loc["C2", "sources"] == "consents,customers,transactions"
