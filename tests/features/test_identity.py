"""Identity stitching: transitive links, ambiguous identifiers never merge, unknown ones are quarantined."""

from __future__ import annotations

import pyarrow.parquet as pq

from features.catalog import read_canonical, read_identity, read_profile, read_quarantine
from features.ingest import ingest


def event(timestamp: str, **ids: str) -> dict[str, str]:
    return {"customer_id": "", "timestamp": timestamp, "event_type": "page_view", **ids}


def test_given_a_device_seen_with_a_known_email_when_a_row_has_only_the_device_then_it_links_transitively(
    ws, write_raw, transactions, customers, now
):
    write_raw("transactions", transactions)
    write_raw("customers", customers)
    write_raw("events", [event("2025-01-01T00:00:00Z", email=" ANN.LEE@example.com", device_id="D-77")])
    first = ingest(ws, now=now)

    write_raw("events", [event("2025-01-02T00:00:00Z", device_id="D-77")])
    second = ingest(ws, now=now)

    events = read_canonical(ws, "events")
    assert events["customer_id"].tolist() == ["C1", "C1"]
    assert events["device_id"].tolist() == ["D-77", "D-77"]
    assert first.sources["events"].linked == {"email": 1}
    assert second.sources["events"].linked == {"device_id": 1}
    links = read_identity(ws, "links").set_index("identifier_kind")
    assert links.loc["device_id", "customer_id"] == "C1"
    assert links.loc["device_id", "via"] == "graph"
    assert links.loc["device_id", "learned_from"] == "events"


def test_given_identifier_rows_in_the_same_batch_then_links_are_transitive_over_several_hops(
    ws, write_raw, customers, now
):
    write_raw("customers", customers)
    write_raw("transactions", [
        {"customer_id": "", "phone": "0044 20 7946 0002", "loyalty_card": "X-9", "timestamp": "2025-01-01",
         "amount": "1"},
        {"customer_id": "", "loyalty_card": "x9", "device_id": "tab-3", "timestamp": "2025-01-02",
         "amount": "2"},
        {"customer_id": "", "device_id": "tab-3", "timestamp": "2025-01-03", "amount": "3"},
    ])  # fmt: skip

    report = ingest(ws, now=now)

    assert read_canonical(ws, "transactions")["customer_id"].tolist() == ["C2", "C2", "C2"]
    assert report.sources["transactions"].linked == {"phone": 1, "loyalty_card": 1, "device_id": 1}
    assert list(read_canonical(ws, "transactions").columns).count("phone") == 0


def test_given_an_email_shared_by_two_customers_then_it_is_reported_ambiguous_and_its_rows_are_quarantined(
    ws, write_raw, customers, now
):
    shared = "family@example.com"
    write_raw("customers", [{**customers[0], "email": shared}, {**customers[1], "email": shared}])
    write_raw("transactions", [
        {"customer_id": "", "email": "Family@Example.com", "timestamp": "2025-01-01", "amount": "1"},
        {"customer_id": "C1", "email": "", "timestamp": "2025-01-01", "amount": "2"},
    ])  # fmt: skip

    report = ingest(ws, now=now)

    quarantine = read_quarantine(ws, "transactions")
    assert quarantine["_rule"].tolist() == ["ambiguous_identity"]
    assert read_canonical(ws, "transactions")["customer_id"].tolist() == ["C1"]
    assert report.identity.ambiguous_identifiers == 1
    (flagged,) = report.identity.ambiguous
    assert (flagged.kind, flagged.n_customers) == ("email", 2)
    ambiguous = read_identity(ws, "ambiguous")
    assert ambiguous["identifier_hash"].tolist() == [flagged.identifier_hash]
    assert "email" not in read_identity(ws, "links")["identifier_kind"].tolist()
    assert sorted(read_profile(ws)["customer_id"]) == ["C1", "C2"]


def test_given_a_device_paired_with_two_customers_emails_then_the_device_is_ambiguous_not_a_merge(
    ws, write_raw, transactions, customers, now
):
    write_raw("transactions", transactions)
    write_raw("customers", customers)
    write_raw("events", [
        event("2025-01-01T00:00:00Z", email="ann.lee@example.com", device_id="shared-tv"),
        event("2025-01-02T00:00:00Z", email="bo.chen@example.com", device_id="shared-tv"),
        event("2025-01-03T00:00:00Z", device_id="shared-tv"),
    ])  # fmt: skip

    report = ingest(ws, now=now)

    assert read_quarantine(ws, "events")["_rule"].tolist() == ["ambiguous_identity"] * 3
    assert read_canonical(ws, "events").empty
    assert report.identity.ambiguous_identifiers == 3
    assert {a.kind for a in report.identity.ambiguous} == {"email", "device_id"}
    customers_table = read_canonical(ws, "customers")
    assert customers_table["customer_id"].tolist() == ["C1", "C2"]


def test_given_an_identifier_that_matches_nobody_then_the_row_is_quarantined_as_unresolved(
    ws, write_raw, customers, now
):
    write_raw("customers", customers)
    # the last row is accepted: an ingest with no accepted transaction is refused
    write_raw("transactions", [
        {"customer_id": "", "email": "stranger@example.com", "timestamp": "2025-01-01", "amount": "1"},
        {"customer_id": "", "email": "", "timestamp": "2025-01-01", "amount": "1"},
        {"customer_id": "C1", "email": "", "timestamp": "2025-01-01", "amount": "1"},
    ])  # fmt: skip

    report = ingest(ws, now=now)

    rules = read_quarantine(ws, "transactions")["_rule"].tolist()
    assert rules == ["unresolved_identity", "missing_identity"]
    assert report.sources["transactions"].accepted == 1
    assert report.reconciled


def test_given_stitching_outputs_then_no_raw_identifier_value_is_stored_or_reported(
    ws, write_raw, customers, now
):
    twin = "twin@example.com"
    write_raw("customers", [{**customers[0], "email": twin}, {**customers[1], "email": twin}])
    write_raw("transactions", [
        {"customer_id": "", "email": "twin@example.com", "timestamp": "2025-01-01", "amount": "1"},
        {"customer_id": "", "email": "ghost@example.com", "timestamp": "2025-01-01", "amount": "1"},
        {"customer_id": "", "phone": "+44 20 7946 0001", "timestamp": "2025-01-01", "amount": "1"},
    ])  # fmt: skip

    report = ingest(ws, now=now)

    texts = [report.model_dump_json(), " ".join(read_quarantine(ws, "transactions")["_reason"]),
             (ws.canonical_dir / "manifest.json").read_text()]  # fmt: skip
    for name in ("links", "ambiguous", "attachments", "pairs"):
        texts.append(pq.read_table(ws.canonical_dir / "identity" / f"{name}.parquet").to_pandas().to_csv())
    blob = "\n".join(texts)
    for raw in ("twin@", "ghost@", "7946", "example.com"):
        assert raw not in blob
    assert report.sources["transactions"].linked == {"phone": 1}
