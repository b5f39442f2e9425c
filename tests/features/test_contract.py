"""Contract rules: each broken rule sends its row to quarantine under its own name, with a clean reason."""

from __future__ import annotations

import pandas as pd
import pytest

from features.catalog import read_canonical, read_quarantine
from features.contract import RULES, normalise_identifiers, parse_source
from features.ingest import ingest

AT = {"customer_id": "C9", "timestamp": "2025-01-01T00:00:00Z"}
GOOD = {
    "customers": {"customer_id": "C9", "signup_at": "2024-05-01", "birth_year": "1985"},
    "transactions": {**AT, "amount": "10", "quantity": "2", "discount": "0.2", "channel": "online",
                     "returned": "false"},
    "events": {**AT, "event_type": "page_view", "channel": "web"},
    "support_tickets": {"customer_id": "C9", "opened_at": "2025-01-01T00:00:00Z",
                        "resolved_at": "2025-01-02T00:00:00Z", "satisfaction": "4", "sentiment": "0.5",
                        "channel": "chat"},
    "surveys": {**AT, "kind": "csat", "score": "5"},
    "marketing": {**AT, "channel": "email", "action": "opened"},
    "consents": {**AT, "purpose": "profiling", "granted": "true"},
}  # fmt: skip

CASES = [
    ("customers", {"customer_id": ""}, "missing_customer_id"),
    ("customers", {"birth_year": "1850"}, "birth_year_out_of_range"),
    ("transactions", {"customer_id": ""}, "missing_identity"),
    ("transactions", {"amount": ""}, "missing_required_value"),
    ("transactions", {"timestamp": "31/12/2024"}, "unparsable_timestamp"),
    ("transactions", {"timestamp": "2025-06-01T13:00:00Z"}, "future_timestamp"),
    ("transactions", {"amount": "ten"}, "unparsable_number"),
    ("transactions", {"quantity": "1.5"}, "unparsable_number"),
    ("transactions", {"returned": "maybe"}, "unparsable_flag"),
    ("transactions", {"amount": "-3"}, "negative_amount"),
    ("transactions", {"channel": "telepathy"}, "unknown_channel"),
    ("transactions", {"quantity": "0"}, "quantity_out_of_range"),
    ("transactions", {"discount": "1.5"}, "discount_out_of_range"),
    ("events", {"event_type": "teleport"}, "unknown_event_type"),
    ("events", {"channel": "fax"}, "unknown_channel"),
    ("support_tickets", {"resolved_at": "2024-12-31T00:00:00Z"}, "resolved_before_opened"),
    ("support_tickets", {"satisfaction": "9"}, "satisfaction_out_of_range"),
    ("support_tickets", {"sentiment": "-2"}, "sentiment_out_of_range"),
    ("support_tickets", {"resolved_at": ""}, "satisfaction_without_resolution"),
    ("surveys", {"score": "7"}, "score_out_of_range"),
    ("surveys", {"kind": "poll"}, "unknown_kind"),
    ("marketing", {"action": "liked"}, "unknown_action"),
    ("consents", {"purpose": "resale"}, "unknown_purpose"),
    ("consents", {"granted": "perhaps"}, "unparsable_flag"),
]


@pytest.mark.parametrize(("source", "change", "rule"), CASES, ids=[f"{s}-{r}" for s, _, r in CASES])
def test_given_a_row_breaking_a_rule_when_ingested_then_it_is_quarantined_under_that_rule(
    ws, write_raw, transactions, now, source, change, rule
):
    write_raw("transactions", transactions)
    good = GOOD[source]
    others = transactions if source == "transactions" else [good]
    write_raw(source, [*others, {**good, **change}])

    report = ingest(ws, now=now)

    quarantine = read_quarantine(ws, source)
    assert quarantine["_rule"].tolist() == [rule]
    assert report.sources[source].rules == {rule: 1}
    assert quarantine["_reason"].iloc[0] and "{" not in quarantine["_reason"].iloc[0]
    assert quarantine["_row_number"].iloc[0] == len(others) + 1
    accepted = read_canonical(ws, source)["customer_id"].tolist()
    assert accepted.count("C9") == (0 if source == "transactions" else 1)


def test_given_every_rule_named_in_the_contract_then_every_one_has_a_case_or_is_an_identity_rule():
    covered = {rule for _, _, rule in CASES} | {"unresolved_identity", "ambiguous_identity"}
    assert covered == set(RULES)


def test_given_times_near_now_when_parsed_then_only_those_beyond_the_tolerance_are_future(now):
    times = ["2025-06-01T12:03:00Z", "2025-06-01T12:10:00Z"]
    raw = pd.DataFrame({"customer_id": ["A", "B"], "amount": ["1", "1"], "timestamp": times}, dtype="string")

    parsed = parse_source("transactions", raw, now)

    assert pd.isna(parsed.rule.iloc[0])
    assert parsed.rule.iloc[1] == "future_timestamp"


def test_given_mixed_case_vocabulary_and_offsets_when_parsed_then_values_are_canonical(now):
    raw = pd.DataFrame({"customer_id": [" C1 "], "timestamp": ["2025-01-01T12:00:00+02:00"], "amount": ["5"],
                        "channel": [" Online "]}, dtype="string")  # fmt: skip

    parsed = parse_source("transactions", raw, now)

    row = parsed.canonical.iloc[0]
    assert parsed.rule.isna().all()
    assert row["customer_id"] == "C1"
    assert row["channel"] == "online"
    assert row["timestamp"] == pd.Timestamp("2025-01-01T10:00:00Z")


def test_given_identifiers_in_different_spellings_when_normalised_then_they_match():
    raw = pd.DataFrame({
        "email": [" Ann.Lee@Example.COM ", "ann.lee@example.com"],
        "phone": ["+44 (20) 7946-0001", "0044 20 7946 0001"],
        "loyalty_card": ["lc-0001", "LC 0001"],
        "device_id": [" dev-1 ", "dev-1"],
    }, dtype="string")  # fmt: skip

    normalised = normalise_identifiers(raw)

    for kind in ("email", "phone", "loyalty_card", "device_id"):
        assert normalised[kind].iloc[0] == normalised[kind].iloc[1], kind
    assert normalised["phone"].iloc[0] == "442079460001"
    assert normalised["loyalty_card"].iloc[0] == "LC0001"


def test_given_a_rejected_row_with_an_email_then_no_reason_repeats_the_raw_value(ws, write_raw, now):
    # the last row is accepted: an ingest with no accepted transaction is refused
    write_raw("transactions", [
        {"customer_id": "", "email": "secret.person@example.com", "timestamp": "2025-01-01", "amount": "1"},
        {"customer_id": "C1", "email": "secret.person@example.com", "timestamp": "nope", "amount": "1"},
        {"customer_id": "C2", "email": "", "timestamp": "2025-01-01", "amount": "1"},
    ])  # fmt: skip

    report = ingest(ws, now=now)

    reasons = " ".join(read_quarantine(ws, "transactions")["_reason"])
    assert report.sources["transactions"].quarantined == 2
    assert "secret.person" not in reasons
    assert "secret.person" not in report.model_dump_json()
