"""The serving fast path agrees with the registered models; the event overlay and the key file behave."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest

from serving.attributions import PathAttributions
from serving.realtime import overlay
from serving.settings import ServeSettings, digest
from training.model_bundle import feature_matrix
from tests.serving.server_fixtures import bundle_of

REQUEST_TIME = datetime(2026, 11, 20, 12, tzinfo=UTC)


@pytest.fixture(scope="module")
def online_columns(served_workspace, known_ids):
    from features.online import OnlineReader
    from features.store import open_store

    reader = OnlineReader(open_store(served_workspace))
    ids = known_ids[:150] + ["NEVER-SEEN"]
    return ids, reader.read(ids, ("churn", "next_purchase", "unmet_needs"), REQUEST_TIME)


@pytest.mark.slow
@pytest.mark.parametrize("task", ["churn", "next_purchase", "unmet_needs"])
def test_matrix_path_gives_the_pandas_path_outputs(served_workspace, online_columns, task):
    # given one read of all services and a category level the model never saw
    ids, columns = online_columns
    columns = dict(columns)
    columns["profile_region"] = ["atlantis", *columns["profile_region"][1:]]
    bundle = bundle_of(served_workspace, task)
    # when the fast path and the pandas path score the same rows
    matrix = bundle.prepare_matrix(columns, len(ids))
    fast = bundle.outputs(matrix)
    slow = bundle.predict(pd.DataFrame(columns))
    # then the prepared frame as a matrix (what array-only learners train on) is the fast path's
    np.testing.assert_array_equal(feature_matrix(bundle.prepare(pd.DataFrame(columns))), matrix)
    # then every output column is the same
    for name, values in fast.items():
        expected = slow[name].to_numpy()
        if values.dtype == object:
            assert list(values) == list(expected), name
        else:
            np.testing.assert_allclose(values, expected, rtol=0, atol=1e-12, err_msg=name)


@pytest.mark.slow
def test_union_read_equals_one_read_per_service(served_workspace, known_ids):
    from features.online import OnlineReader
    from features.store import open_store

    reader = OnlineReader(open_store(served_workspace))
    ids = known_ids[:30]
    union = reader.read(ids, ("churn", "unmet_needs"), REQUEST_TIME)
    for service in ("churn", "unmet_needs"):
        alone = reader.read(ids, service, REQUEST_TIME)
        assert {name: union[name] for name in alone} == alone


@pytest.mark.slow
def test_path_attributions_add_up_to_the_raw_score_and_track_shap(served_workspace, online_columns):
    ids, columns = online_columns
    bundle = bundle_of(served_workspace, "churn")
    X = bundle.prepare_matrix(columns, len(ids))
    booster = bundle.boosters["churn"]
    attributions = PathAttributions(booster)(X)
    # local accuracy: contributions + base value = the model's raw score, per customer
    np.testing.assert_allclose(attributions.sum(axis=1), booster.predict(X, raw_score=True), atol=1e-9)
    # and the strongest path driver is among SHAP's five strongest for most customers
    shap = booster.predict(X, pred_contrib=True)[:, :-1]
    top_path = np.argmax(np.abs(attributions[:, :-1]), axis=1)
    top_shap = np.argsort(-np.abs(shap), axis=1)[:, :5]
    agreement = np.mean([top_path[i] in top_shap[i] for i in range(len(X))])
    assert agreement >= 0.8


def test_overlay_folds_fresh_events_into_snapshot_features():
    snapshot, request = 1_000_000.0, 1_000_000.0 + 3 * 86400
    columns = {
        "engagement_sessions_7d": [1.0, 1.0, None],
        "engagement_sessions_90d": [5.0, 5.0, None],
        "days_since_last_visit": [40.0, 40.0, None],
        "days_since_last_visit_now": [43.0, 43.0, None],
        "service_tickets_unresolved": [0.0, 0.0, None],
        "service_tickets_30d": [None, 0.0, None],
    }
    realtime = {
        "realtime_window_start_ts": [snapshot, snapshot - 86400, snapshot],
        "realtime_sessions": [2.0, 2.0, 1.0],
        "realtime_tickets_opened": [1.0, 1.0, 0.0],
        "realtime_tickets_resolved": [3.0, 0.0, 0.0],
        "realtime_last_visit_ts": [request - 86400, request, request],
        "realtime_last_ticket_ts": [request - 86400, request, None],
    }
    out = overlay(columns, realtime, [snapshot, snapshot, None], request)
    # customer 0: fresh counters applied
    assert out["engagement_sessions_7d"][0] == 3.0 and out["engagement_sessions_90d"][0] == 7.0
    assert out["days_since_last_visit"][0] == pytest.approx(1.0) and out["days_since_last_visit_now"][
        0
    ] == pytest.approx(1.0)
    assert out["service_tickets_unresolved"][0] == 0.0 and out["service_tickets_30d"][0] == 1.0
    # customer 1: counters from before the snapshot are stale and ignored; customer 2: no snapshot, untouched
    for name in columns:
        assert out[name][1] == columns[name][1] and out[name][2] == columns[name][2]
    # inputs are not modified and absent features stay absent
    assert columns["engagement_sessions_7d"][0] == 1.0 and "days_since_last_ticket" not in out


def test_api_keys_come_from_the_variable_and_the_file(tmp_path, monkeypatch):
    keys = tmp_path / "keys"
    keys.write_text("# rotated 2026-11\nfile-key  # ops team\n\n")
    monkeypatch.setenv("CXPREDICT_API_KEYS", " env-key , other ")
    monkeypatch.setenv("CXPREDICT_API_KEYS_FILE", str(keys))
    digests = ServeSettings().key_digests()
    assert digests == {digest("env-key"), digest("other"), digest("file-key")}
    assert "env-key" not in repr(ServeSettings())


def test_overlay_applies_a_fresh_survey_answer_to_the_voice_features():
    snapshot, request = 1_000_000.0, 1_000_000.0 + 2 * 86400
    columns = {
        "voice_last_nps": [9.0, None],
        "voice_nps_change": [1.0, None],
        "voice_nps_category": ["promoter", None],
        "voice_last_csat": [4.0, 4.0],
        "voice_surveys_365d": [2.0, 0.0],
        "days_since_last_survey": [100.0, None],
    }
    realtime = {
        "realtime_window_start_ts": [snapshot, snapshot],
        "realtime_surveys": [1.0, 1.0],
        "realtime_last_nps": [0.0, 7.0],
        "realtime_last_csat": [None, None],
        "realtime_last_survey_ts": [request - 86400, request],
    }
    out = overlay(columns, realtime, [snapshot, snapshot], request)
    # an NPS of 0 is a detractor answer (not a missing value), changed by -9 from the snapshot's 9
    assert out["voice_last_nps"] == [0.0, 7.0] and out["voice_nps_category"] == ["detractor", "passive"]
    assert out["voice_nps_change"] == [-9.0, None]
    assert out["voice_surveys_365d"] == [3.0, 1.0]
    assert out["days_since_last_survey"][0] == pytest.approx(1.0) and out["days_since_last_survey"][1] == 0.0
    # no CSAT answered: the snapshot's stays
    assert out["voice_last_csat"] == [4.0, 4.0]
