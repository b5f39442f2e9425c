"""The action catalogue and the decision rules, as pure functions (no server)."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from serving.actions import DEFAULT_CATALOGUE, CatalogueError, parse_catalogue
from serving.decisions import Contact, CustomerView, decide, in_holdout

NOW = datetime(2026, 12, 1, 12, tzinfo=UTC)
CATALOGUE = parse_catalogue(DEFAULT_CATALOGUE.read_text())


def _view(
    customer_id: str = "C1", churn: float = 0.6, marketing: float | None = 1.0, **features
) -> CustomerView:
    base = {"profile_consent_profiling": 1.0, "profile_consent_marketing": marketing, "service_tickets_unresolved": 2.0,
            "days_since_last_purchase": 200.0, "marketing_open_rate_90d": 0.4, "engagement_app_share_90d": 0.1}  # fmt: skip
    outputs = {"churn.probability": churn, "next_purchase.probability": 0.2, "unmet_needs.top": 0.5}
    return CustomerView(customer_id, outputs, base | features, top_need="home")


def _not_held_out(n: int = 1) -> list[str]:
    ids = (f"C{i:06d}" for i in range(10_000))
    return [c for c in ids if not in_holdout(c, CATALOGUE.holdout_share)][:n]


def _line_of(text: str) -> int:
    return DEFAULT_CATALOGUE.read_text().splitlines().index(f"    {text}") + 1


def test_given_the_default_catalogue_then_it_loads_with_one_no_action():
    assert [a.name for a in CATALOGUE.actions if a.kind == "none"] == ["no_action"]


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        (("cost: 8.0", "cost: -8.0"), f"line {_line_of('cost: 8.0')}: actions.1.cost"),
        (("churn.probability >= 0.15", "churn.probability >> 0.15"), "actions.1.eligible"),
        (("channels: [phone]", "channels: [pigeon]"), "actions.1.channels"),
        (("consent: profiling\n", "consent: profiling\n    colour: red\n"), "actions.1.colour"),
        (("name: win_back", "name: cross_sell"), "unique: cross_sell"),
        (
            (
                "  - name: no_action\n    kind: none",
                "  - name: nothing\n    kind: win_back\n    channels: [web]",
            ),
            "kind 'none'",
        ),
    ],
)
def test_given_an_invalid_catalogue_then_it_is_refused_naming_the_line_and_field(change, expected):
    text = DEFAULT_CATALOGUE.read_text()
    assert change[0] in text

    with pytest.raises(CatalogueError, match="actions.yaml") as refused:
        parse_catalogue(text.replace(change[0], change[1], 1))

    assert expected in str(refused.value)


def test_given_a_marketing_channel_without_marketing_consent_purpose_then_the_catalogue_is_refused():
    text = DEFAULT_CATALOGUE.read_text().replace("channels: [phone]", "channels: [phone, email]", 1)

    with pytest.raises(CatalogueError, match="set consent: marketing"):
        parse_catalogue(text)


def test_given_20000_customers_then_the_holdout_is_five_percent_and_stable():
    ids = [f"C{i:07d}" for i in range(20_000)]

    first = [in_holdout(c, 0.05) for c in ids]
    again = [in_holdout(c, 0.05) for c in ids]

    assert abs(sum(first) / len(ids) - 0.05) <= 0.01
    assert first == again


def test_given_a_holdout_customer_then_no_action_whatever_their_risk():
    held = next(f"C{i:06d}" for i in range(10_000) if in_holdout(f"C{i:06d}", CATALOGUE.holdout_share))

    decision = decide(_view(held, churn=0.99), CATALOGUE, [], NOW, seed="s")

    assert decision.holdout is True and decision.actions == []


def test_given_a_holdout_customer_then_the_actions_withheld_are_those_the_policy_would_have_chosen():
    held = next(f"C{i:06d}" for i in range(10_000) if in_holdout(f"C{i:06d}", CATALOGUE.holdout_share))
    no_holdout = CATALOGUE.model_copy(update={"holdout_share": 0.0})

    decision = decide(_view(held, churn=0.9), CATALOGUE, [], NOW, seed="s")
    would = decide(_view(held, churn=0.9), no_holdout, [], NOW, seed="s")

    assert decision.actions == [] and would.actions
    assert decision.withheld == would.actions


def test_given_no_profiling_consent_then_no_decision_at_all():
    decision = decide(_view(_not_held_out()[0], profile_consent_profiling=0.0), CATALOGUE, [], NOW, seed="s")

    assert decision.scored is False and decision.actions == [] and decision.reason == "no profiling consent"


def test_given_no_marketing_consent_then_only_non_marketing_actions_remain():
    decision = decide(_view(_not_held_out()[0], marketing=None), CATALOGUE, [], NOW, seed="s")

    assert [a["action"] for a in decision.actions] == ["service_recovery_callback"]
    assert {s["action"] for s in decision.suppressed if s["rule"] == "no_marketing_consent"} == {
        "retention_offer", "cross_sell", "win_back"
    }  # fmt: skip


def test_given_higher_risk_then_the_retention_priority_rises_and_low_risk_is_not_eligible():
    customer = _not_held_out()[0]

    high = decide(_view(customer, churn=0.9), CATALOGUE, [], NOW, seed="s", max_actions=4)
    low = decide(_view(customer, churn=0.1), CATALOGUE, [], NOW, seed="s", max_actions=4)

    priority = {a["action"]: a["priority"] for a in high.actions}
    assert priority["retention_offer"] > 0
    assert {"action": "retention_offer", "rule": "not_eligible: churn.probability >= 0.3"} in low.suppressed


def test_given_recent_contacts_then_the_cap_and_the_cooldown_suppress_actions():
    customer = _not_held_out()[0]
    yesterday = [Contact("retention_offer", NOW - timedelta(days=1))]

    once = decide(_view(customer), CATALOGUE, yesterday, NOW, seed="s")
    full = decide(
        _view(customer),
        CATALOGUE,
        yesterday + [Contact("cross_sell", NOW - timedelta(days=2))],
        NOW,
        seed="s",
    )

    assert {"action": "retention_offer", "rule": "cooldown_30d"} in once.suppressed
    assert len(once.actions) == 1
    assert full.actions == [] and any(s["rule"] == "contact_cap_7d" for s in full.suppressed)


def test_given_many_decisions_then_logged_propensities_match_how_often_each_action_is_chosen():
    customer = _not_held_out()[0]
    runs = [decide(_view(customer), CATALOGUE, [], NOW, seed=f"d-{i}", max_actions=1) for i in range(20_000)]

    chosen = Counter(run.actions[0]["action"] for run in runs)
    logged = {run.actions[0]["action"]: run.actions[0]["propensity"] for run in runs}

    assert abs(sum(logged.values()) - 1.0) < 1e-5
    for action, propensity in logged.items():
        assert abs(chosen[action] / len(runs) - propensity) < 0.01, action


def test_given_the_same_seed_then_the_decision_is_replayed_exactly():
    customer = _not_held_out()[0]

    assert decide(_view(customer), CATALOGUE, [], NOW, seed="x") == decide(
        _view(customer), CATALOGUE, [], NOW, seed="x"
    )


def test_given_an_answered_prediction_then_the_view_has_every_block_as_dotted_outputs():
    from serving.decisions import view_from

    prediction = {"customer_id": "C1", "scored": True, "churn": {"probability": 0.4, "risk_band": "medium"},
                  "unmet_needs": [{"need": "home", "probability": 0.3}, {"need": "garden", "probability": 0.6}]}  # fmt: skip

    view = view_from(prediction, {"days_since_last_purchase": [10.0, 200.0]}, row=1)

    assert view.outputs == {"churn.probability": 0.4, "unmet_needs.home": 0.3, "unmet_needs.garden": 0.6,
                            "unmet_needs.top": 0.6}  # fmt: skip
    assert view.top_need == "garden" and view.features == {"days_since_last_purchase": 200.0}


def test_given_a_value_model_then_retention_is_priced_by_value_at_risk_else_by_the_catalogue():
    customer = _not_held_out()[0]
    rich, poor, unknown = (_view(customer, churn=0.8) for _ in range(3))
    rich.outputs["value.value_at_risk"], poor.outputs["value.value_at_risk"] = 900.0, 10.0

    def retention(view):
        decision = decide(view, CATALOGUE, [], NOW, seed="s", max_actions=4)
        return next((a for a in decision.actions if a["action"] == "retention_offer"), None), decision

    (high, _), (low, low_decision), (fallback, _) = retention(rich), retention(poor), retention(unknown)

    offer = next(a for a in CATALOGUE.actions if a.name == "retention_offer")
    assert high["priority"] == pytest.approx(offer.prior_uplift * 0.8 * 900.0 - offer.cost, abs=1e-3)
    assert "value.value_at_risk 900" in high["reasons"]
    assert fallback["priority"] == pytest.approx(
        offer.prior_uplift * 0.8 * offer.success_value - offer.cost, abs=1e-3
    )
    assert (
        low is None
        and {"action": "retention_offer", "rule": "priority_not_positive"} in low_decision.suppressed
    )


def test_given_a_value_block_then_the_view_has_its_numbers_as_dotted_outputs():
    from serving.decisions import view_from

    prediction = {"customer_id": "C1", "scored": True,
                  "value": {"expected_spend": 120.0, "interval": [0.0, 300.0], "value_at_risk": 45.5}}  # fmt: skip

    view = view_from(prediction, {}, row=None)

    assert view.outputs == {"value.expected_spend": 120.0, "value.value_at_risk": 45.5}


def test_given_an_uplift_block_then_its_estimates_become_dotted_outputs_per_action():
    from serving.decisions import view_from

    prediction = {"customer_id": "C1", "churn": {"probability": 0.4, "risk_band": "medium", "drivers": []},
                  "uplift": {"expected_uplift": {"retention_offer": 0.12, "win_back": -0.02},
                             "best_action": "retention_offer", "horizon_days": 28}}  # fmt: skip

    view = view_from(prediction, {}, row=None)

    assert view.outputs["uplift.expected_uplift.retention_offer"] == 0.12
    assert view.outputs["uplift.expected_uplift.win_back"] == -0.02


def test_given_an_uplift_estimate_then_it_replaces_the_prior_and_the_answer_says_so():
    customer = _not_held_out()[0]
    learned, prior_only, harmful = (_view(customer, churn=0.8) for _ in range(3))
    learned.outputs["uplift.expected_uplift.retention_offer"] = 0.3
    harmful.outputs["uplift.expected_uplift.retention_offer"] = -0.05
    offer = next(a for a in CATALOGUE.actions if a.name == "retention_offer")

    def retention(view):
        decision = decide(view, CATALOGUE, [], NOW, seed="s", max_actions=4)
        return next((a for a in decision.actions if a["action"] == "retention_offer"), None), decision

    (by_model, _), (by_prior, _), (dropped, decision) = (
        retention(learned),
        retention(prior_only),
        retention(harmful),
    )

    assert by_model["uplift_source"] == "model" and by_model["expected_uplift"] == pytest.approx(0.3)
    assert by_model["priority"] == pytest.approx(0.3 * offer.success_value - offer.cost, abs=1e-3)
    assert by_prior["uplift_source"] == "prior"
    assert by_prior["expected_uplift"] == pytest.approx(offer.prior_uplift * 0.8)
    # an action the model expects to put the customer off is not taken, whatever the prior says
    assert dropped is None
    assert {"action": "retention_offer", "rule": "priority_not_positive"} in decision.suppressed
