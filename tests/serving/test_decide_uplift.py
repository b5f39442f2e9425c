"""/decide with an uplift champion, over HTTP: the learned uplift replaces the catalogue's prior, per
customer and action, and the answer says so (tests/conftest.py: campaign_world)."""

from __future__ import annotations

import pytest

from tests.serving.server_fixtures import start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def uplift_api(campaign_world, tmp_path_factory, copy_workspace):
    import mlflow

    from features.store import materialize_latest
    from tests.conftest import CAMPAIGN_AS_OF
    from training.data import known_customers, withheld_consent
    from training.tracking import CHAMPION, resolve_tracking, tracking_session, version_info

    source, results = campaign_world
    ws = copy_workspace(source, tmp_path_factory.mktemp("decide-uplift") / "ws")
    materialize_latest(ws, end=CAMPAIGN_AS_OF)
    target = resolve_tracking(ws)
    with tracking_session(target):
        client = mlflow.MlflowClient()
        for task in ("churn", "uplift"):
            if version_info(target, task, CHAMPION) is None:
                client.set_registered_model_alias(f"cx-{task}", CHAMPION, results[task].model_version)
    refused = withheld_consent(ws, CAMPAIGN_AS_OF)
    ids = [c for c in known_customers(ws, CAMPAIGN_AS_OF).tolist() if c not in refused][:300]
    # next purchase, unmet needs and value have no model here: /readyz says so, the rest answers
    server = start_server(ws, tmp_path_factory.mktemp("logs") / "api.log", wait_ready=False,
                          env={"CXPREDICT_TASKS_OPT_IN": "uplift"})  # fmt: skip
    yield server, ids
    server.stop()


def test_given_an_uplift_champion_then_predict_answers_its_estimates_per_action(uplift_api):
    server, ids = uplift_api
    with server.client() as client:
        answer = client.post("/predict", json={"customer_ids": ids[:20]})
    assert answer.status_code == 200, answer.text
    blocks = [p["uplift"] for p in answer.json()["predictions"] if p.get("uplift")]
    assert len(blocks) == 20
    assert set(blocks[0]["expected_uplift"]) == {
        "cross_sell",
        "retention_offer",
        "service_recovery_callback",
        "win_back",
    }
    assert answer.json()["models"]["uplift"]["name"] == "cx-uplift"


def test_given_an_uplift_champion_then_decide_prices_actions_by_the_learned_uplift(uplift_api):
    server, ids = uplift_api
    with server.client() as client:
        predicted = client.post("/predict", json={"customer_ids": ids}).json()["predictions"]
        decided = client.post("/decide", json={"customer_ids": ids, "max_actions": 3})
    assert decided.status_code == 200, decided.text
    estimate = {p["customer_id"]: p["uplift"]["expected_uplift"] for p in predicted if p.get("uplift")}
    chosen = [(d["customer_id"], a) for d in decided.json()["decisions"] for a in d["actions"]]
    assert chosen, "no action was decided for 300 customers"
    by_model = [(c, a) for c, a in chosen if a["uplift_source"] == "model"]
    assert by_model and len(by_model) == len(chosen)
    for customer, action in by_model:
        assert action["expected_uplift"] == pytest.approx(estimate[customer][action["action"]], abs=1e-6)
        assert action["priority"] > 0
