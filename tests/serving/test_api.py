"""The prediction API over real HTTP: response contract, auth, validation, cold start, consent, metrics."""

from __future__ import annotations

import math
from datetime import UTC, datetime

import pytest

from serving.settings import MAX_CUSTOMERS
from tests.serving.server_fixtures import API_KEY, bundle_of, ensure_champions

pytestmark = pytest.mark.slow


def _predict(api, ids, path="/predict", key=API_KEY):
    with api.client(key) as client:
        return client.post(path, json={"customer_ids": ids})


def test_predict_answers_every_block_in_the_design_shape(api, known_ids):
    # given known, consenting customers; when /predict is called
    ids = known_ids[:20]
    answer = _predict(api, ids)
    # then every customer has all three blocks, consistent with themselves and with the registry
    assert answer.status_code == 200
    body = answer.json()
    versions = ensure_champions(api.ws)
    assert {task: ref["version"] for task, ref in body["models"].items()} == versions
    assert {ref["name"] for ref in body["models"].values()} == {
        "cx-churn",
        "cx-next-purchase",
        "cx-unmet-needs",
        "cx-value",
    }
    assert [p["customer_id"] for p in body["predictions"]] == ids
    bands = bundle_of(api.ws, "churn").spec["risk_bands"]
    churn_features = set(bundle_of(api.ws, "churn").feature_names)
    for prediction in body["predictions"]:
        assert prediction["scored"] and not prediction["cold_start"] and prediction["reason"] is None
        assert prediction["features_as_of"] == "2026-11-01T00:00:00Z"
        churn = prediction["churn"]
        assert 0 <= churn["probability"] <= 1
        expected_band = (
            "high"
            if churn["probability"] >= bands[1]
            else "medium"
            if churn["probability"] >= bands[0]
            else "low"
        )
        assert churn["risk_band"] == expected_band
        assert 1 <= len(churn["drivers"]) <= 5
        assert {d["feature"] for d in churn["drivers"]} <= churn_features
        impacts = [abs(d["impact"]) for d in churn["drivers"]]
        assert impacts == sorted(impacts, reverse=True)
        purchase = prediction["next_purchase"]
        low, high = purchase["interval_days"]
        assert low <= purchase["expected_days"] <= high and purchase["horizon_days"] == 30
        shares = [c["probability"] for c in purchase["categories"]]
        assert shares == sorted(shares, reverse=True) and sum(shares) <= 1 + 1e-6
        needs = [n["probability"] for n in prediction["unmet_needs"]]
        assert needs == sorted(needs, reverse=True) and all(0 <= p <= 1 for p in needs)
        spend = prediction["value"]
        low, high = spend["interval"]
        assert 0 <= low <= high and spend["expected_spend"] >= 0 and spend["value_at_risk"] >= 0
        assert spend["horizon_days"] == 90 and len(spend["drivers"]) >= 1


def test_scores_equal_the_registered_model_on_the_same_features(api, known_ids):
    # given the champion pyfunc models and Feast's own online retrieval for the same customers
    from features.store import open_store

    ids = known_ids[20:60]
    body = _predict(api, ids).json()
    moment = datetime.fromisoformat(body["request_time"].replace("Z", "+00:00"))
    store = open_store(api.ws)
    service = store.get_feature_service("churn")
    rows = [{"customer_id": c, "request_time": moment} for c in ids]
    import pandas as pd

    features = pd.DataFrame(store.get_online_features(features=service, entity_rows=rows).to_dict())
    expected = bundle_of(api.ws, "churn").predict(features)["churn_probability"].to_numpy()
    # then the API's probabilities are those of the registered model (rounded to 6 digits)
    served = [p["churn"]["probability"] for p in body["predictions"]]
    assert served == pytest.approx(expected.tolist(), abs=2e-6)

    # and a customer asked for alone (the single-row fast path) gets the same probability
    alone = [_predict(api, [c]).json()["predictions"][0]["churn"]["probability"] for c in ids[:3]]
    assert alone == pytest.approx(expected[:3].tolist(), abs=2e-6)


def test_single_task_endpoints_answer_only_their_block(api, known_ids):
    ids = known_ids[:3]
    for path, block in (
        ("/churn", "churn"),
        ("/next-purchase", "next_purchase"),
        ("/unmet-needs", "unmet_needs"),
        ("/value", "value"),
    ):
        body = _predict(api, ids, path).json()
        assert list(body["models"]) == [block]
        for prediction in body["predictions"]:
            assert prediction[block] is not None
            assert not ({"churn", "next_purchase", "unmet_needs", "value"} - {block}) & set(prediction)


def test_unknown_customer_gets_a_flagged_cold_start_from_population_priors(api, known_ids):
    body = _predict(api, ["NEVER-SEEN-1", known_ids[0]]).json()
    cold, known = body["predictions"]
    assert cold["cold_start"] is True and cold["scored"] is True and cold["features_as_of"] is None
    assert known["cold_start"] is False
    churn_prior = bundle_of(api.ws, "churn").spec["heads"][0]["prior"]
    assert cold["churn"]["probability"] == pytest.approx(churn_prior, abs=1e-6)
    assert cold["churn"]["drivers"] == []
    purchase_prior = next(
        h for h in bundle_of(api.ws, "next_purchase").spec["heads"] if h["kind"] == "binary"
    )["prior"]
    assert cold["next_purchase"]["probability"] == pytest.approx(purchase_prior, abs=1e-6)
    assert len(cold["unmet_needs"]) == len(bundle_of(api.ws, "unmet_needs").spec["needs"])


def test_customer_without_profiling_consent_gets_no_scores_and_a_reason(api, served_workspace):
    from training.data import withheld_consent
    from training.scoring import NO_CONSENT

    refused = sorted(withheld_consent(served_workspace, datetime(2026, 11, 1, tzinfo=UTC)))
    assert refused, "the generated world has customers who refused profiling"
    body = _predict(api, refused[:5]).json()
    for prediction in body["predictions"]:
        assert prediction["scored"] is False and prediction["reason"] == NO_CONSENT
        assert (
            prediction["churn"] is None
            and prediction["next_purchase"] is None
            and prediction["unmet_needs"] is None
        )


def test_prediction_endpoints_need_a_valid_api_key(api, known_ids):
    for key in (None, "wrong-key"):
        answer = _predict(api, known_ids[:1], key=key)
        assert answer.status_code == 401
        assert answer.json()["field"] == "Authorization"
        assert answer.headers["www-authenticate"].startswith("Bearer")
    with api.client(None) as client:
        assert client.post("/events", json={"customer_id": "C1", "event_type": "search"}).status_code == 401
        assert client.post("/admin/reload", json={}).status_code == 401
    assert _predict(api, known_ids[:1], key="other-key").status_code == 200


def test_health_metrics_and_docs_are_open(api):
    with api.client(None) as client:
        assert client.get("/livez").status_code == 200
        ready = client.get("/readyz")
        assert ready.status_code == 200 and ready.json()["ready"] is True and ready.json()["reasons"] == []
        assert client.get("/metrics").status_code == 200
        spec = client.get("/docs.json").json()
        assert {"/predict", "/churn", "/next-purchase", "/unmet-needs", "/events"} <= set(spec["paths"])


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"customer_ids": []}, "customer_ids"),
        ({"customer_ids": [f"C{i}" for i in range(MAX_CUSTOMERS + 1)]}, "customer_ids"),
        ({"customer_ids": ["jane.doe@example.com"]}, "customer_ids"),
        ({"customer_ids": [12]}, "customer_ids"),
        ({"customer_ids": "C1"}, "customer_ids"),
        ({"ids": ["C1"]}, "customer_ids"),
    ],
)
def test_bad_payloads_get_a_400_naming_the_field_without_echoing_it(api, body, field):
    with api.client() as client:
        answer = client.post("/predict", json=body)
    assert answer.status_code == 400
    located = {str(error["loc"][0]) for error in answer.json()["detail"] if error["loc"]}
    assert field in located
    assert "jane.doe" not in answer.text


def test_malformed_json_is_a_400(api):
    with api.client() as client:
        answer = client.post(
            "/predict", content=b'{"customer_ids": [', headers={"content-type": "application/json"}
        )
    assert answer.status_code == 400


def test_a_thousand_customers_are_answered(api, known_ids):
    ids = (known_ids * (MAX_CUSTOMERS // len(known_ids) + 1))[:MAX_CUSTOMERS]
    answer = _predict(api, ids)
    assert answer.status_code == 200 and len(answer.json()["predictions"]) == MAX_CUSTOMERS


def test_metrics_count_outcomes_and_show_served_versions(api, known_ids):
    _predict(api, [known_ids[0], "NEVER-SEEN-2"])
    with api.client(None) as client:
        text = client.get("/metrics").text
    samples = {}
    for line in text.splitlines():
        if line.startswith("cxpredict_") and " " in line:
            name, value = line.rsplit(" ", 1)
            samples[name] = float(value)
    assert samples['cxpredict_predictions_total{outcome="scored",task="churn"}'] >= 1
    assert samples['cxpredict_predictions_total{outcome="cold_start",task="churn"}'] >= 1
    versions = ensure_champions(api.ws)
    assert (
        samples[f'cxpredict_model_served{{name="cx-churn",task="churn",version="{versions["churn"]}"}}'] == 1
    )
    assert 'endpoint="/predict"' in text and "bentoml_service_request_duration_seconds" in text
    assert all(math.isfinite(v) for v in samples.values())
