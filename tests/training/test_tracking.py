"""MLflow runs, registry aliases, the pyfunc model and batch scoring, on a real SQLite tracking store."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import mlflow
import pandas as pd
import pytest

from cxpredict.workspace import resolve_workspace
from training.pipeline import train
from training.scoring import load_models, score
from training.tracking import alias_trained_version, resolve_tracking, tracking_session

CUSTOMER_ID = re.compile(r"C\d{7}")
TEXT_SUFFIXES = {".json", ".csv", ".txt", ".yaml", ".py", ""}

pytestmark = pytest.mark.slow  # end-to-end: trains on a generated world


@pytest.fixture(scope="module")
def registry(small_world, kit, tmp_path_factory):
    """Two training runs into one workspace: all tasks, then churn again with another seed."""
    ws = resolve_workspace(tmp_path_factory.mktemp("workspace"))
    cwd = tmp_path_factory.mktemp("cwd")
    features_for = kit.features_for(small_world.tables)
    oracle = kit.oracle(small_world, kit.HORIZONS)
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(cwd)
        patch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
        patch.delenv("MLFLOW_TRACKING_URI", raising=False)
        first = train(
            resolve_tracking(ws), small_world.tables, features_for, kit.config(), oracle, data_hash_="hash-1"
        )
        second = train(
            resolve_tracking(ws),
            small_world.tables,
            features_for,
            kit.config(seed=1, tasks=("churn",)),
            oracle,
        )
    return SimpleNamespace(ws=ws, cwd=cwd, first=first, second=second, target=resolve_tracking(ws))


def _client(registry) -> mlflow.MlflowClient:
    uri = registry.target.tracking_uri
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _as_caller_sends(X: pd.DataFrame) -> pd.DataFrame:
    """Feature frames as a caller sends them: categoricals as plain strings."""
    categorical = [name for name in X.columns if isinstance(X[name].dtype, pd.CategoricalDtype)]
    return X.astype({name: object for name in categorical})


def test_given_a_workspace_when_training_then_state_stays_inside_it(registry):
    assert registry.target.tracking_uri == f"sqlite:///{registry.ws.mlflow_dir / 'mlflow.db'}"
    client = _client(registry)
    for name in ("cx-churn", "cx-next-purchase", "cx-unmet-needs"):
        location = client.get_experiment_by_name(name).artifact_location
        assert location == (registry.ws.mlflow_dir / "artifacts" / name).as_uri()
    assert list(registry.cwd.iterdir()) == []  # no ./mlruns or ./mlflow.db next to the caller


def test_given_a_run_when_reading_it_back_then_params_metrics_and_plots_are_logged(registry):
    result = registry.first["churn"]
    run = _client(registry).get_run(result.run_id)

    params = run.data.params
    assert params["as_of"].startswith("2025-09-01") and params["horizon_days"] == "90"
    assert params["cutoff_test"] == "2025-06-01" and params["cutoffs_train"].count(",") == 3
    assert params["feature_service"] == "churn"
    assert "days_since_last_purchase" in params["features"].split(",")
    assert params["data_hash"] == "hash-1" and params["code_version"]
    metrics = run.data.metrics
    assert {"auc", "auc_rf_heuristic", "auc_logistic", "auc_oracle", "churn.model.ece"} <= set(metrics)
    assert metrics["churn.model.auc_ratio_to_oracle"] == pytest.approx(metrics["auc"] / metrics["auc_oracle"])
    plots = {item.path for item in _client(registry).list_artifacts(result.run_id, "plots")}
    names = ("roc", "calibration", "lift", "importance", "shap_summary")
    assert plots == {f"plots/{name}.png" for name in names}


def test_given_two_runs_when_registering_then_first_beating_version_is_champion_and_stays(registry):
    client = _client(registry)

    assert registry.first["churn"].champion and not registry.second["churn"].champion
    assert client.get_model_version_by_alias("cx-churn", "champion").version == 1
    assert client.get_model_version_by_alias("cx-churn", "challenger").version == 2
    assert "kept champion version 1" in registry.second["churn"].decision
    for name in ("cx-next-purchase", "cx-unmet-needs"):
        assert client.get_model_version_by_alias(name, "challenger").version == 1


def test_given_a_registered_version_then_it_carries_the_tags_promotion_needs(registry):
    tags = _client(registry).get_model_version("cx-churn", "1").tags

    assert tags["as_of"].startswith("2025-09-01") and tags["horizon_days"] == "90"
    assert tags["feature_service"] == "churn" and tags["data_hash"] == "hash-1"
    assert "no purchase and no engagement" in tags["label_definition"]
    assert tags["code_version"] and tags["beats_baselines"] == "true"
    assert float(tags["auc_model"]) > float(tags["auc_rf_heuristic"])


def test_given_no_champion_when_a_version_is_trained_then_it_becomes_champion_and_later_ones_wait(registry):
    with tracking_session(registry.target) as client:
        source = client.get_model_version("cx-churn", "1").source
        client.create_registered_model("cx-promotion-check")
        versions = [client.create_model_version("cx-promotion-check", source).version for _ in range(3)]

        decisions = [
            alias_trained_version(
                client, "cx-promotion-check", str(v), "best on the validation cutoff: logistic"
            )
            for v in versions
        ]

    assert [champion for champion, _ in decisions] == [True, False, False]
    assert "logistic" in decisions[0][1] and "kept champion version" in decisions[1][1]
    assert str(client.get_model_version_by_alias("cx-promotion-check", "champion").version) == str(
        versions[0]
    )
    assert str(client.get_model_version_by_alias("cx-promotion-check", "challenger").version) == str(
        versions[2]
    )


def test_given_the_champion_alias_when_loading_the_pyfunc_then_it_reproduces_in_process_predictions(registry):
    result = registry.first["churn"]
    X = result.dataset.test.X.head(400)

    with tracking_session(registry.target):
        model = mlflow.pyfunc.load_model("models:/cx-churn@champion")
    loaded = model.predict(_as_caller_sends(X))

    pd.testing.assert_frame_equal(loaded, result.fitted.bundle.predict(X))
    pd.testing.assert_frame_equal(
        model.unwrap_python_model().drivers(_as_caller_sends(X), k=3), result.fitted.bundle.drivers(X, k=3)
    )


def test_given_a_frame_lacking_a_feature_when_predicting_with_the_pyfunc_then_it_counts_as_missing(registry):
    result = registry.first["churn"]
    X = result.dataset.test.X.head(50)

    with tracking_session(registry.target):
        model = mlflow.pyfunc.load_model("models:/cx-churn@champion")
    partial = _as_caller_sends(X).drop(columns=["service_tickets_unresolved"])

    expected = result.fitted.bundle.predict(X.assign(service_tickets_unresolved=float("nan")))
    pd.testing.assert_frame_equal(model.predict(partial), expected)


def test_given_logged_models_when_scanning_artifacts_then_no_customer_identifier_appears(registry):
    files = [path for path in (registry.ws.mlflow_dir / "artifacts").rglob("*") if path.is_file()]
    examples = [path for path in files if path.name in ("input_example.json", "serving_input_example.json")]

    assert examples, "models were logged with an input example"
    for path in files:
        if path.suffix in TEXT_SUFFIXES:
            text = path.read_text(errors="ignore")
            assert not CUSTOMER_ID.search(text), path
            if path.name in ("input_example.json", "serving_input_example.json", "MLmodel", "metrics.csv"):
                assert "customer_id" not in text, path
    example = json.loads(next(p for p in examples if p.name == "input_example.json").read_text())
    assert "customer_id" not in example["columns"]


def test_given_champions_when_batch_scoring_then_one_row_per_customer_with_every_output(
    registry, small_world, kit
):
    models = load_models(resolve_tracking(registry.ws))
    customers = small_world.tables["customers"]["customer_id"]
    entity = pd.DataFrame({"customer_id": customers, "event_timestamp": kit.AS_OF})
    features = kit.features_for(small_world.tables)(entity, "churn")

    scores = score(models, features)

    assert set(models) == {"churn", "next_purchase", "unmet_needs", "value"}
    assert len(scores) == len(customers) and scores["customer_id"].is_unique
    outputs = {"churn_probability", "purchase_probability", "expected_days_to_purchase"}
    assert outputs | {"need_home_probability", "churn_risk_band"} <= set(scores.columns)
    fitted = registry.first["churn"].fitted
    expected = fitted.bundle.predict(features).set_axis(features["customer_id"])["churn_probability"]
    scored = scores.set_index("customer_id")["churn_probability"]
    pd.testing.assert_series_equal(scored, expected.loc[scores["customer_id"]], check_names=False)


def test_given_a_tracking_uri_variable_when_resolving_then_it_wins(monkeypatch, tmp_path):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")

    assert resolve_tracking(resolve_workspace(tmp_path)).tracking_uri == "http://127.0.0.1:5000"
    assert resolve_tracking(resolve_workspace(tmp_path)).artifact_root is None
