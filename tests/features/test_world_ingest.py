"""The generator and ingestion together: every defect the world injected is found, nothing else is lost."""

import json
from datetime import date

import pytest

from cxpredict.workspace import resolve_workspace
from features.catalog import read_canonical, read_profile
from features.ingest import ingest
from features.synthetic import WorldConfig, generate

# the generator's defect kinds and the contract rules that catch them
RULES_BY_KIND = {
    "future_time": {"future_timestamp"},
    "unparsable_time": {"unparsable_timestamp"},
    "missing_id": {"missing_identity", "missing_customer_id"},
    "negative_amount": {"negative_amount"},
    "unknown_enum": {
        "unknown_channel",
        "unknown_event_type",
        "unknown_kind",
        "unknown_action",
        "unknown_purpose",
    },
    "out_of_range_score": {"score_out_of_range", "satisfaction_out_of_range"},
}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    ws = resolve_workspace(tmp_path_factory.mktemp("world")).ensure()
    generate(ws, WorldConfig(customers=1500, seed=11, days=400, end=date(2026, 11, 1)))
    report = ingest(ws)
    truth = json.loads((ws.truth_dir / "world.json").read_text())
    return ws, report, truth


def test_every_injected_defect_is_quarantined_under_its_rule(world):
    _, report, truth = world
    for source, kinds in truth["malformed"].items():
        rules = report.sources[source].rules
        for kind, injected in kinds.items():
            caught = sum(rules.get(rule, 0) for rule in RULES_BY_KIND[kind])
            assert caught == injected, (source, kind, caught, injected)


def test_duplicates_found_and_the_books_balance_for_every_source(world):
    _, report, truth = world
    for source, rows in truth["rows"].items():
        s = report.sources[source]
        assert s.read == rows
        assert s.duplicates == truth["duplicates"][source]
        assert s.read == s.accepted + s.quarantined + s.duplicates + s.erased and s.erased == 0
        # only shared family inboxes may add quarantined rows beyond the injected defects
        extra = s.quarantined - sum(truth["malformed"][source].values())
        assert extra == s.rules.get("ambiguous_identity", 0)


def test_identifier_only_rows_reach_their_customer(world):
    ws, report, truth = world
    events = read_canonical(ws, "events")
    assert events["customer_id"].notna().all()
    assert sum(report.sources["events"].linked.values()) >= truth["identifier_only"]["events"] * 0.95
    profile = read_profile(ws)
    assert profile["customer_id"].is_unique
    assert len(profile) == truth["config"]["customers"]


def test_reingesting_the_world_adds_nothing(world):
    ws, _, _ = world
    before = {s: len(read_canonical(ws, s)) for s in ("transactions", "events", "marketing")}
    again = ingest(ws)
    assert all(s.accepted == 0 for s in again.sources.values())
    assert {s: len(read_canonical(ws, s)) for s in before} == before
