"""``cxpredict simulate``: the policy values it reports, and the loop itself (deterministic for a seed)."""

from __future__ import annotations

import json
from datetime import date

import numpy as np
import pandas as pd
import pytest
from typer.testing import CliRunner

from cxpredict import documents
from cxpredict.cli import app
from serving.simulate import POLICIES, policy_values

ACTIONS = ("retention_offer", "service_recovery_callback", "cross_sell", "win_back")
MARKETING = frozenset({"retention_offer", "cross_sell", "win_back"})


def _decided(n: int = 400, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({f"uplift_{a}": rng.normal(0.02, 0.05, n) for a in ACTIONS})
    frame["risk"] = rng.random(n)
    frame["marketing_consent"] = rng.random(n) < 0.8
    frame["chosen"] = None
    frame["p0"] = rng.random(n)
    return frame


def _values(decided: pd.DataFrame) -> dict:
    return {p.name: p for p in policy_values(decided, ACTIONS, MARKETING, seed=1, resamples=200)}


def test_a_policy_that_takes_each_best_action_for_the_best_decisions_is_the_oracle():
    # given decisions where ours treats the k decisions with the largest true uplift, each with its best
    # consented action
    decided = _decided()
    U = decided[[f"uplift_{a}" for a in ACTIONS]].to_numpy()
    allowed = decided["marketing_consent"].to_numpy()[:, None] | ~np.isin(ACTIONS, list(MARKETING))[None, :]
    best = np.where(allowed, U, -np.inf)
    top = np.argsort(-best.max(axis=1))[:50]
    decided.loc[top, "chosen"] = [ACTIONS[j] for j in best[top].argmax(axis=1)]
    # when the policies are valued
    values = _values(decided)
    # then ours equals the oracle, beats random, and every interval holds its value
    assert values["ours"].value == pytest.approx(values["oracle"].value)
    assert values["ours"].ci_low > values["random"].value
    assert all(p.ci_low <= p.value <= p.ci_high for p in values.values())
    assert [p.actions for p in values.values()] == [50, 50, 50, 50]


def test_random_is_the_expected_uplift_of_as_many_random_consented_actions():
    decided = _decided()
    decided.loc[:99, "chosen"] = "cross_sell"
    U = decided[[f"uplift_{a}" for a in ACTIONS]].to_numpy()
    consent = decided["marketing_consent"].to_numpy()
    per_row = np.where(consent, U.mean(axis=1), U[:, 1])  # without consent only the call-back
    assert _values(decided)["random"].value == pytest.approx(100 / len(decided) * per_row.mean(), abs=1e-5)


def test_risk_targeting_gives_retention_offers_to_the_highest_scores_with_marketing_consent():
    decided = _decided()
    decided.loc[:19, "chosen"] = "win_back"
    consenting = decided.loc[decided["marketing_consent"]]
    riskiest = consenting.sort_values("risk", ascending=False).head(20)
    expected = riskiest["uplift_retention_offer"].sum() / len(decided)
    assert _values(decided)["risk_targeting"].value == pytest.approx(expected, abs=1e-5)


def test_a_policy_that_never_acts_is_worth_nothing():
    values = _values(_decided())
    assert {name: values[name].value for name in POLICIES} == dict.fromkeys(POLICIES, 0.0)


def _simulate(workspace, *extra: str):
    return CliRunner().invoke(
        app,
        ["simulate", "--days", "8", "--customers", "500", "--seed", "5", "--end", "2026-11-01", "--json",
         "--workspace", str(workspace), *extra],
        catch_exceptions=False,
    )  # fmt: skip


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    """The same simulation twice, in two new workspaces."""
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        return tuple(_simulate(tmp_path_factory.mktemp(f"sim-{run}") / "ws") for run in "ab")


@pytest.mark.slow
def test_the_loop_decides_responds_and_reports_every_policy(two_runs):
    # given a small world simulated for 8 days (one feature refresh)
    first, _ = two_runs
    assert first.exit_code == 0, first.stdout[-2000:]
    document = json.loads(first.stdout)
    # then the document has its keys, the loop decided and posted outcomes, and every policy is valued
    assert list(document) == list(documents.SIMULATE_KEYS)
    assert document["decisions"] > 100 and document["holdout_decisions"] > 0
    assert document["refreshes"] == 1 and document["outcomes"] >= sum(document["actions"].values())
    assert [p["name"] for p in document["policies"]] == list(POLICIES)
    values = {p["name"]: p["value"] for p in document["policies"]}
    assert values["oracle"] >= max(values.values()) - 1e-9
    assert document["impact"]["decisions"] == document["decisions"]
    assert date.fromisoformat(document["start"]) == date(2026, 10, 24)


@pytest.mark.slow
def test_the_loop_is_deterministic_for_a_seed(two_runs):
    first, second = (json.loads(run.stdout) for run in two_runs)
    for document in (first, second):
        document.pop("seconds"), document.pop("report")
        document["impact"].pop("run_id"), document["impact"].pop("report")
    assert first == second


def test_simulate_refuses_a_workspace_that_holds_data(tmp_path):
    (tmp_path / "ws" / "raw").mkdir(parents=True)
    (tmp_path / "ws" / "raw" / "transactions.csv").write_text("customer_id\n")
    # a wide terminal: the usage panel would otherwise wrap the message around the (long) tmp path
    result = CliRunner().invoke(
        app, ["simulate", "--workspace", str(tmp_path / "ws")], env={"COLUMNS": "400"}
    )
    assert result.exit_code == 2 and "empty workspace" in result.output


def test_the_default_catalogue_of_the_loop_prices_actions_by_purchases_and_keeps_the_contact_rules():
    from serving.actions import DEFAULT_CATALOGUE, parse_catalogue
    from serving.simulate import purchase_catalogue

    shipped = parse_catalogue(DEFAULT_CATALOGUE.read_text())
    derived = purchase_catalogue(shipped)
    assert derived.contact_policy == shipped.contact_policy and derived.holdout_share == shipped.holdout_share
    for before, after in zip(shipped.actions, derived.actions, strict=True):
        assert (after.name, after.channels, after.consent, after.cooldown_days, after.uplift) == (
            before.name, before.channels, before.consent, before.cooldown_days, before.uplift)  # fmt: skip
        if after.kind != "none":
            assert (
                after.eligible == ()
                and after.cost == 0.0
                and after.value is None
                and after.success_value == 1.0
            )


def test_the_loop_trains_the_tasks_its_catalogue_reads():
    from serving.actions import DEFAULT_CATALOGUE, parse_catalogue
    from serving.simulate import decision_tasks, purchase_catalogue, risk_output

    shipped = parse_catalogue(DEFAULT_CATALOGUE.read_text())
    derived = purchase_catalogue(shipped)
    # the derived catalogue has no worth output and no rule: only the drivers' and uplift's tasks remain
    assert set(decision_tasks(derived)) < set(decision_tasks(shipped))
    assert "uplift" in decision_tasks(derived)
    assert risk_output(derived) == risk_output(shipped) and risk_output(shipped).endswith(".probability")
