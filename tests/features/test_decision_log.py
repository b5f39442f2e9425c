"""The decision and outcome log: outcomes validated against decisions, counted once."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from features.decision_log import ActionNotDecided, DecisionLog, UnknownDecision, offer_counts

NOW = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture()
def log(tmp_path) -> DecisionLog:
    log = DecisionLog(f"sqlite:///{tmp_path / 'decisions.db'}")
    log.record_decisions(
        [
            {"decision_id": "d-1", "customer_id": "C1", "at": NOW - timedelta(days=2), "holdout": False,
             "actions": [{"action": "retention_offer", "propensity": 0.9}], "models": {"churn": "1"}},
            {"decision_id": "d-2", "customer_id": "C2", "at": NOW, "holdout": True, "actions": [], "models": {},
             "withheld": [{"action": "retention_offer", "propensity": 0.95}]},
        ]
    )  # fmt: skip
    return log


def test_given_an_outcome_twice_then_it_is_recorded_once(log):
    first = log.record_outcome("d-1", "retention_offer", "opened", NOW)
    again = log.record_outcome("d-1", "retention_offer", "opened", NOW + timedelta(hours=1))
    other = log.record_outcome("d-1", "retention_offer", "converted", NOW, revenue=42.0)

    assert (first.duplicate, again.duplicate, other.duplicate) == (False, True, False)
    assert log.counts() == {"decisions": 2, "holdout_decisions": 1, "outcomes": 2}


def test_given_an_unknown_decision_or_an_action_not_decided_then_the_outcome_is_refused(log):
    with pytest.raises(UnknownDecision):
        log.record_outcome("d-404", "retention_offer", "opened", NOW)
    with pytest.raises(ActionNotDecided):
        log.record_outcome("d-2", "retention_offer", "opened", NOW)
    assert log.counts()["outcomes"] == 0


def test_given_past_decisions_then_contacts_are_what_caps_and_cooldowns_count(log):
    contacts = log.contacts(["C1", "C2", "C3"], since=NOW - timedelta(days=7))

    assert [(c.action, c.at) for c in contacts["C1"]] == [("retention_offer", NOW - timedelta(days=2))]
    assert "C2" not in contacts and log.contacts(["C1"], since=NOW - timedelta(days=1)) == {}


def test_given_a_holdout_decision_then_its_withheld_actions_are_kept_but_are_no_contact(log):
    decisions = {d["decision_id"]: d for d in log.decisions()}
    contacts = log.contacts(["C1", "C2"], since=NOW - timedelta(days=30))

    assert decisions["d-2"]["actions"] == [] and decisions["d-2"]["withheld"] == ["retention_offer"]
    assert decisions["d-1"]["actions"] == ["retention_offer"] and decisions["d-1"]["withheld"] == []
    assert "C2" not in contacts and [c.action for c in contacts["C1"]] == ["retention_offer"]
    assert [d["decision_id"] for d in log.decisions(since=NOW - timedelta(hours=1))] == ["d-2"]


def _outcomes(log: DecisionLog, reported: list[tuple[str, str, datetime]]) -> list:
    for decision_id, outcome, at in reported:
        log.record_outcome(decision_id, "retention_offer", outcome, at)
    return log.outcomes_of(["C1", "C2"]).get("C1", [])


def test_given_outcomes_of_one_action_then_offer_features_count_the_action_once_per_kind(log):
    reported = _outcomes(
        log,
        [("d-1", "delivered", NOW - timedelta(days=2)), ("d-1", "opened", NOW - timedelta(days=1)),
         ("d-1", "accepted", NOW - timedelta(hours=20)), ("d-1", "converted", NOW - timedelta(hours=10))],
    )  # fmt: skip

    counts = offer_counts(reported, NOW)

    assert (counts["offers_received_30d"], counts["offers_accepted_30d"], counts["offers_rejected_30d"]) == (
        1,
        1,
        0,
    )
    assert counts["offers_last_outcome_ts"] == (NOW - timedelta(hours=10)).timestamp()
    assert counts["offers_counted_at_ts"] == NOW.timestamp()


def test_given_outcomes_older_than_30_days_or_after_the_moment_then_they_do_not_count(log):
    log.record_decisions(
        [{"decision_id": "d-3", "customer_id": "C1", "at": NOW - timedelta(days=40), "holdout": False,
          "actions": [{"action": "retention_offer", "propensity": 1.0}], "models": {}}]
    )  # fmt: skip
    reported = _outcomes(
        log,
        [("d-3", "delivered", NOW - timedelta(days=39)), ("d-3", "unsubscribed", NOW - timedelta(days=5)),
         ("d-1", "rejected", NOW + timedelta(hours=1))],
    )  # fmt: skip

    now = offer_counts(reported, NOW)
    later = offer_counts(reported, NOW + timedelta(days=2))

    assert (now["offers_received_30d"], now["offers_rejected_30d"]) == (0, 1)
    assert now["offers_last_outcome_ts"] == (NOW - timedelta(days=5)).timestamp()
    assert (later["offers_received_30d"], later["offers_rejected_30d"]) == (1, 2)
    assert offer_counts([], NOW)["offers_last_outcome_ts"] is None


def test_given_outcomes_then_the_customers_with_outcomes_since_a_moment_are_listed(log):
    log.record_outcome("d-1", "retention_offer", "opened", NOW - timedelta(days=1))

    assert log.customers_with_outcomes(NOW - timedelta(days=2)) == ["C1"]
    assert log.customers_with_outcomes(NOW) == []
    assert [o.customer_id for o in log.outcomes_of(["C1"])["C1"]] == ["C1"]
