"""Training end to end on a generated world: canonical tables -> Feast point-in-time features ->
LightGBM -> MLflow registry -> evaluate -> score, through ``training.run`` and the command line.

The shared worlds come from ``tests/conftest.py`` (2,500 customers, 600 days to 2026-11-01, trained
as of 2026-10-01). The quality bars run on a larger world of their own (see ``QUALITY_*``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from typer.testing import CliRunner

from cxpredict.cli import app
from cxpredict.workspace import resolve_workspace
from training import labels as L
from training.config import TrainConfig
from training.pipeline import build_dataset, train
from cxpredict import tasks as registry
from training.data import feast_features_for, known_customers, load_tables, task_features
from training.metrics import summary_table
from training.oracle import truth_oracle_for
from training.tracking import resolve_tracking, tracking_session

pytestmark = pytest.mark.slow

QUALITY_CUSTOMERS = 20_000
QUALITY_DAYS = 730
QUALITY_AS_OF = datetime(2026, 10, 1, tzinfo=UTC)
SEASON_AS_OF = (datetime(2026, 9, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC))
TARGET = {"churn": "churn", "next_purchase": "purchase"}


@pytest.fixture(autouse=True)
def _own_tracking(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")


@pytest.fixture(scope="module")
def quality_world(tmp_path_factory):
    """A 20,000-customer world over two years to 2026-11-01, features built, Feast applied."""
    from features.ingest import ingest
    from features.snapshots import build_features
    from features.store import apply_repo
    from features.synthetic import WorldConfig, generate

    ws = resolve_workspace(tmp_path_factory.mktemp("quality") / "ws").ensure()
    generate(ws, WorldConfig(customers=QUALITY_CUSTOMERS, seed=3, days=QUALITY_DAYS, end=date(2026, 11, 1)))
    ingest(ws)
    build_features(ws, datetime(2026, 11, 1, tzinfo=UTC))
    apply_repo(ws)
    return ws


def _train_quality(ws, as_of: datetime, oracle: bool):
    config = TrainConfig(
        as_of=as_of, tasks=("churn", "next_purchase"), lightgbm={"num_threads": 1}, shap_sample=300
    )
    truth = truth_oracle_for(ws, config.horizon, False) if oracle else None
    return train(None, load_tables(ws, as_of), feast_features_for(ws), config, truth)


@pytest.fixture(scope="module")
def quality(quality_world):
    """Churn and next purchase on the 20,000-customer world (no MLflow), with the oracle."""
    return _train_quality(quality_world, QUALITY_AS_OF, oracle=True)


@pytest.fixture(scope="module")
def other_seasons(quality_world):
    """The same tasks trained as of two other months: as of September next purchase is calibrated on
    July's summer sale and held out on August; as of November on September, held out on October."""
    return {as_of: _train_quality(quality_world, as_of, oracle=False) for as_of in SEASON_AS_OF}


# --------------------------------------------------------------------------- task names


def test_given_cli_task_names_when_parsing_then_they_map_to_the_feature_services():
    def parse(name):
        return tuple(spec.feature_service for spec in registry.parse(name))

    assert parse("next-purchase") == ("next_purchase",)
    assert parse("unmet_needs") == ("unmet_needs",)
    assert parse("all") == ("churn", "next_purchase", "unmet_needs", "value")
    with pytest.raises(ValueError, match="unknown task"):
        parse("upsell")


# --------------------------------------------------------------------------- reading as of


def test_given_a_world_with_later_facts_when_loading_as_of_then_nothing_after_as_of_is_read(featurised_world):
    tables = load_tables(featurised_world.ws, featurised_world.train_as_of)

    limit = pd.Timestamp(featurised_world.train_as_of)
    for source, table in tables.items():
        column = L.TIME_COLUMNS[source]
        assert table[column].dropna().max() <= limit, source
    later = load_tables(featurised_world.ws, featurised_world.features_as_of)
    assert len(later["transactions"]) > len(tables["transactions"])  # the world does go on after as_of
    assert "email" not in tables["customers"] and "phone" not in tables["customers"]


def test_given_facts_added_after_as_of_when_building_training_sets_then_labels_and_features_are_identical(
    featurised_world, copy_workspace, tmp_path
):
    from features.catalog import current_version
    from features.snapshots import build_features
    from features.store import apply_repo

    ws = featurised_world.ws
    other = copy_workspace(ws, tmp_path / "copy")
    path = current_version(other) / "transactions.parquet"
    original = pq.read_table(path)
    late = original.slice(0, 200).to_pandas()
    late["timestamp"] = pd.Timestamp("2026-10-10T12:00:00Z")
    late.loc[:20, "customer_id"] = "C9999999"  # a customer first seen after as_of
    late["order_id"] = [f"LATE{i}" for i in range(len(late))]
    pq.write_table(pa.concat_tables([original, pa.Table.from_pandas(late, schema=original.schema)]), path)
    build_features(other, featurised_world.features_as_of)
    apply_repo(other)

    config = TrainConfig(as_of=featurised_world.train_as_of, tasks=("churn",))
    before, _ = build_dataset("churn", load_tables(ws, config.as_of), feast_features_for(ws), config)
    after, _ = build_dataset("churn", load_tables(other, config.as_of), feast_features_for(other), config)

    for split in ("train", "valid", "test"):
        pd.testing.assert_frame_equal(before.split(split).keys, after.split(split).keys)
        pd.testing.assert_frame_equal(before.split(split).labels, after.split(split).labels)
        pd.testing.assert_frame_equal(before.split(split).X, after.split(split).X)
    assert "C9999999" not in set(after.test.keys["customer_id"])


def test_given_the_feature_store_when_retrieving_fast_or_for_all_services_then_values_equal_feasts_join(
    featurised_world,
):
    from features.store import get_training_features

    ws = featurised_world.ws
    customers = known_customers(ws, pd.Timestamp("2026-08-01", tz="UTC")).sample(400, random_state=1)
    entity = pd.DataFrame(
        {
            "customer_id": np.repeat(customers.to_numpy(), 2),
            "event_timestamp": np.tile(
                pd.to_datetime(["2026-08-01", "2026-07-15"], utc=True).to_numpy(), len(customers)
            ),
        }
    )
    together = task_features(ws, entity, ["churn", "next_purchase", "unmet_needs"])
    for task in ("churn", "next_purchase", "unmet_needs"):
        fast = feast_features_for(ws)(entity, task)
        feast = get_training_features(ws, entity, task)
        pd.testing.assert_frame_equal(fast, feast[fast.columns], check_dtype=False)
        pd.testing.assert_frame_equal(together[task], fast)


# --------------------------------------------------------------------------- train, registry, plots


def test_given_the_world_when_training_all_then_every_task_is_a_registered_champion_with_plots(
    trained_world,
):
    world, results = trained_world

    assert list(results) == list(registry.names())
    assert [r.status for r in results.values()] == ["trained"] * len(results)
    target = resolve_tracking(world.ws)
    with tracking_session(target) as client:
        for spec in registry.all_tasks():
            champion = client.get_model_version_by_alias(spec.model_name, "champion")
            assert str(champion.version) == results[spec.name].model_version == "1"
            assert champion.tags["as_of"].startswith("2026-10-01")
            plots = {a.path for a in client.list_artifacts(results[spec.name].run_id, "plots")}
            run = client.get_run(results[spec.name].run_id)
            assert run.data.params["feature_service"] == spec.name
            assert "plots/shap_summary.png" in plots and "plots/importance.png" in plots
            if spec.gate_metric == "auc":
                assert {"plots/roc.png", "plots/calibration.png"} <= plots
                assert "auc_oracle" in run.data.metrics  # the generated world's oracle is in the run
            else:  # a continuous target: ranked deciles, judged on Gini against its baselines
                assert "plots/deciles.png" in plots
                assert {spec.gate_metric, f"{spec.gate_metric}_run_rate"} <= set(run.data.metrics)


def test_given_the_generated_world_when_training_then_oracle_probabilities_cover_the_held_out_cutoff(
    trained_world,
):
    _, results = trained_world
    binary = {task: result for task, result in results.items() if result.fitted.evaluations}
    assert set(binary) == {"churn", "next_purchase", "unmet_needs"}
    for task, result in binary.items():
        oracle = result.dataset.test.oracle
        columns = [c for c in result.dataset.label_columns if c in oracle]
        assert columns, task
        assert oracle[columns].notna().all().all()
        assert result.dataset.train.oracle[columns].isna().all().all()  # evaluation only


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("task", ["churn", "next_purchase"])
def test_given_a_20k_world_when_training_then_the_model_nears_the_oracle_and_beats_both_baselines(
    quality, task
):
    fitted = quality[task].fitted
    target = TARGET[task]
    model, oracle = fitted.metric(target, "model", "auc"), fitted.metric(target, "oracle", "auc")
    heuristic, logistic = (
        fitted.metric(target, "rf_heuristic", "auc"),
        fitted.metric(target, "logistic", "auc"),
    )

    assert model >= 0.95 * oracle, (model, oracle)
    assert model >= heuristic + 0.03, (model, heuristic)
    assert model >= logistic - 0.002, (model, logistic)


@pytest.mark.parametrize("task", ["churn", "next_purchase"])
def test_given_a_20k_world_when_training_then_probabilities_are_calibrated(quality, task):
    fitted = quality[task].fitted
    target = TARGET[task]

    assert fitted.metric(target, "model", "rows") >= 15_000
    assert fitted.metric(target, "model", "ece") <= 0.02


@pytest.mark.parametrize("task", ["churn", "next_purchase"])
def test_given_other_months_when_training_then_calibration_survives_the_season(other_seasons, task):
    # given the 20k world trained as of September and as of November (as well as October, above)
    for as_of, results in other_seasons.items():
        fitted = results[task].fitted
        target = TARGET[task]
        # then the held-out month, in another season than the calibration month, is calibrated
        assert fitted.metric(target, "model", "ece") <= 0.02, (as_of.date(), task)
        # because the head carried the calibration month's season to it
        ratio = fitted.metric(target, "model", "seasonal_ratio")
        assert np.isfinite(ratio) and ratio != 1.0, (as_of.date(), task)
    # and next purchase as of September saw August quieter than July's summer sale
    september = other_seasons[SEASON_AS_OF[0]]["next_purchase"].fitted
    assert september.metric("purchase", "model", "seasonal_ratio") < 0.9


# --------------------------------------------------------------------------- behaviour (registered models)


def _churn_inputs(world):
    """Real feature rows of the trained world's held-out cutoff, and the champion churn model."""
    from training.scoring import load_models, model_inputs

    model = load_models(resolve_tracking(world.ws), tasks=("churn",))["churn"]
    cutoff = pd.Timestamp("2026-07-01", tz="UTC")
    customers = known_customers(world.ws, cutoff)
    entity = pd.DataFrame({"customer_id": customers, "event_timestamp": cutoff})
    frame = feast_features_for(world.ws)(entity, "churn")
    return model, frame, model_inputs(model)


def _mean_churn(model, frame, inputs) -> float:
    return float(model.predict(frame[inputs])["churn_probability"].mean())


def test_given_lapsed_customers_when_their_last_purchase_is_recent_then_churn_risk_falls(trained_world):
    model, frame, inputs = _churn_inputs(trained_world[0])
    lapsed = frame.loc[frame["days_since_last_purchase"] > 60]

    recent = lapsed.assign(days_since_last_purchase=3.0, days_since_last_purchase_now=3.0)
    for window in (7, 30, 90, 365):
        for name in (f"purchase_count_{window}d", f"purchase_orders_{window}d"):
            recent[name] = lapsed[name].fillna(0) + 1

    assert len(lapsed) >= 200
    assert _mean_churn(model, recent, inputs) < _mean_churn(model, lapsed, inputs) - 0.03


def test_given_active_customers_when_unresolved_tickets_are_added_then_churn_risk_rises(trained_world):
    model, frame, inputs = _churn_inputs(trained_world[0])
    active = frame.loc[frame["days_since_last_visit"] < 30]

    troubled = active.assign(service_tickets_unresolved=active["service_tickets_unresolved"].fillna(0) + 3)
    for window in (30, 90, 365):
        troubled[f"service_tickets_{window}d"] = active[f"service_tickets_{window}d"].fillna(0) + 3

    assert _mean_churn(model, troubled, inputs) > _mean_churn(model, active, inputs)


def test_given_the_same_features_under_other_customer_ids_then_predictions_are_identical(trained_world):
    model, frame, inputs = _churn_inputs(trained_world[0])
    renamed = frame.assign(customer_id=[f"X{i}" for i in range(len(frame))])

    assert "customer_id" not in inputs
    pd.testing.assert_frame_equal(model.predict(frame[inputs]), model.predict(renamed[inputs]))
    shuffled = frame.sample(frac=1.0, random_state=3)
    again = model.predict(shuffled[inputs]).set_axis(shuffled.index).sort_index()
    pd.testing.assert_frame_equal(again, model.predict(frame[inputs]))


# --------------------------------------------------------------------------- evaluate and score


def test_given_registered_champions_when_evaluating_then_the_held_out_auc_is_reproduced(trained_world):
    from training.evaluate import evaluate_workspace

    world, results = trained_world
    evaluations = evaluate_workspace(world.ws, as_of=world.train_as_of)

    for task, evaluation in evaluations.items():
        assert evaluation.status == "evaluated" and evaluation.version == "1"
        assert evaluation.cutoff == results[task].dataset.plan.test
        table = summary_table(evaluation.metrics)
        trained = summary_table(results[task].metrics)
        metric = registry.get(task).gate_metric
        assert table.loc["model", metric] == pytest.approx(trained.loc["model", metric], abs=1e-9)
        if metric == "auc":
            assert table.loc["oracle", "auc"] == pytest.approx(trained.loc["oracle", "auc"], abs=1e-9)
        with tracking_session(resolve_tracking(world.ws)) as client:
            assert client.get_run(evaluation.run_id).data.tags["kind"] == "evaluation"


@pytest.mark.parametrize("suffix", [".parquet", ".csv"])
def test_given_champions_when_scoring_then_every_known_customer_gets_one_row(trained_world, tmp_path, suffix):
    world, _ = trained_world
    out = tmp_path / f"scores{suffix}"

    result = CliRunner().invoke(
        app, ["score", "--as-of", "2026-11-01", "--out", str(out), "--workspace", str(world.ws.root)]
    )

    assert result.exit_code == 0, result.output
    scores = pd.read_parquet(out) if suffix == ".parquet" else pd.read_csv(out)
    from features.catalog import read_profile

    profile = read_profile(world.ws)
    first = profile.filter(like="first_seen_").min(axis=1).combine(profile["signup_at"], np.fmin)
    expected = set(profile.loc[first < pd.Timestamp("2026-11-01", tz="UTC"), "customer_id"])
    assert set(scores["customer_id"]) == expected and scores["customer_id"].is_unique
    for column in ("churn_probability", "purchase_probability", "expected_days_to_purchase"):
        assert column in scores
    scored = scores["not_scored_reason"].isna()
    assert scores.loc[scored, ["churn_probability", "purchase_probability"]].stack().between(0, 1).all()
    assert scores.loc[scored, "expected_days_to_purchase"].notna().all()
    assert scores.loc[~scored, "churn_probability"].isna().all()


# --------------------------------------------------------------------------- transactions only


def test_given_transactions_only_when_training_all_then_churn_and_next_purchase_train_and_needs_explain(
    tmp_path, featurised_world
):
    raw = pd.read_parquet(featurised_world.ws.raw_dir / "transactions.parquet")
    minimal = raw.loc[raw["customer_id"].notna(), ["customer_id", "timestamp", "amount"]]
    minimal = minimal.loc[minimal["amount"].astype(str).str.match(r"^-?\d+(\.\d+)?$")]
    source = tmp_path / "transactions.csv"
    minimal.to_csv(source, index=False)
    home = str(tmp_path / "ws")
    runner = CliRunner()
    assert runner.invoke(app, ["ingest", "--transactions", str(source), "--workspace", home]).exit_code == 0
    assert runner.invoke(app, ["features", "--as-of", "2026-11-01", "--workspace", home]).exit_code == 0

    result = runner.invoke(app, ["train", "all", "--as-of", "2026-10-01", "--workspace", home])

    assert result.exit_code == 0, result.output
    text = " ".join(result.output.split())
    assert "unmet-needs: not trained" in text and "transactions-only" in text
    ws = resolve_workspace(home)
    target = resolve_tracking(ws)
    with tracking_session(target) as client:  # registered (champion only if it beats both baselines)
        assert str(client.get_model_version_by_alias("cx-churn", "challenger").version) == "1"
        assert str(client.get_model_version_by_alias("cx-next-purchase", "challenger").version) == "1"
        assert not client.search_registered_models("name = 'cx-unmet-needs'")
    assert "churn — held-out cutoff" in text and "next-purchase — held-out cutoff" in text
