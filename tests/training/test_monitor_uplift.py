"""``monitor`` on an uplift champion: its realised Qini per action on the decisions logged since its
as-of (an uplift estimate is tested only by a decision and what followed it), beside what it
recorded at promotion; a champion that now ranks an action's customers backwards raises the alarm
(tests/conftest.py: campaign_world)."""

from __future__ import annotations

from datetime import UTC, datetime

import pandas as pd
import pytest

pytestmark = pytest.mark.slow  # trains uplift once on the 5,000-customer campaign world

TRAINED = datetime(2026, 8, 1, tzinfo=UTC)
MONITORED = datetime(2026, 12, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def august_champion(campaign_world, copy_workspace, tmp_path_factory):
    """A copy of the campaign world whose uplift champion was trained as of 2026-08-01, so the waves
    of August to November are decisions it never saw (their windows end before December)."""
    import mlflow

    from training.run import train_workspace
    from training.tracking import CHAMPION, resolve_tracking, tracking_session

    source, _ = campaign_world
    ws = copy_workspace(source, tmp_path_factory.mktemp("uplift-monitor") / "ws")
    result = train_workspace(ws, tasks=["uplift"], as_of=TRAINED, shap_sample=300)["uplift"]
    assert result.status == "trained", result.reason
    with tracking_session(resolve_tracking(ws)):
        mlflow.MlflowClient().set_registered_model_alias("cx-uplift", CHAMPION, result.model_version)
    return ws, result


def _logged_since(ws, start: datetime, end: datetime) -> int:
    """Customer-months with a decision in [start, end) whose 28-day window ended by ``end``."""
    from training.data import logged_treatments

    logged = logged_treatments(ws, end)
    at = pd.to_datetime(logged["timestamp"], utc=True)
    kept = logged.loc[(at >= start) & (at + pd.Timedelta(days=28) <= end)].assign(
        month=at.dt.strftime("%Y-%m")
    )
    return int(kept.drop_duplicates(["customer_id", "month"]).shape[0])


def test_given_an_uplift_champion_then_monitor_measures_its_qini_on_the_decisions_it_never_saw(
    august_champion,
):
    from training.monitor import monitor_workspace

    # given an uplift champion trained in August, when the workspace is monitored in December
    ws, trained = august_champion
    result = monitor_workspace(ws, as_of=MONITORED, tasks=["uplift"], log=False)

    # then its realised uplift is measured on the decisions logged since August, every one of them
    report = result.tasks["uplift"]
    [row] = report.performance
    assert row["version"] == trained.model_version and row["decided_since"][:10] == "2026-08-01"
    assert row["rows"] == _logged_since(ws, TRAINED, MONITORED) > 1000
    actions = row["actions"]
    assert set(actions) | set(row["too_few_rows"]) == set(trained.fitted.bundle.spec["uplift_actions"])

    # and each action's Qini has an interval around it, beside the one recorded at promotion
    for measured in actions.values():
        assert measured["qini_low"] <= measured["qini"] <= measured["qini_high"]
        assert measured["treated_rows"] >= 100 and measured["control_rows"] >= 100
    assert set(row["at_promotion"]["actions"]) == set(trained.fitted.bundle.spec["uplift_actions"])

    # and the model still ranks some action's customers better than random targeting: no alarm
    assert max(m["qini_low"] for m in actions.values()) > 0
    assert not [r for r in report.reasons if "Qini" in r] and result.to_dict()["performance"]["uplift"]


def test_given_an_uplift_champion_that_ranks_backwards_then_monitor_raises_the_alarm(
    august_champion, monkeypatch
):
    import training.monitor as monitor

    # given the same champion with its uplift estimates negated (it now targets the wrong customers)
    ws, trained = august_champion
    found = monitor.champions

    class Backwards:
        def __init__(self, model) -> None:
            self.model = model

        def __getattr__(self, name):
            return getattr(self.model, name)

        def predict(self, frame, params=None):
            predicted = self.model.predict(frame, params=params)
            uplift = [c for c in predicted.columns if c.startswith("uplift_")]
            return predicted.assign(**{c: -predicted[c] for c in uplift})

    def backwards(target, tasks):
        champions = found(target, tasks)
        for champion in champions.values():
            champion.model = Backwards(champion.model)
        return champions

    monkeypatch.setattr(monitor, "champions", backwards)

    # when the workspace is monitored in December
    result = monitor.monitor_workspace(ws, as_of=MONITORED, tasks=["uplift"], log=False)

    # then every action it used to rank well is now below random targeting, and the status is alert
    [row] = result.tasks["uplift"].performance
    below = {a for a, m in row["actions"].items() if m["qini_high"] < 0}
    assert below and row["degraded"] and result.exit_code == monitor.EXIT_ALERT
    assert all(any(action in reason for reason in result.tasks["uplift"].reasons) for action in below)
    assert all("below random targeting" in reason for reason in row["degraded"])
