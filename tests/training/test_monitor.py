"""Drift thresholds that hold at any sample size, a shifted feature flagged by name, and realised
performance of a past score output equal to an independent computation on the matured labels."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from training.monitor import MonitorConfig, compare

CONFIG = MonitorConfig()
EARLIER = pd.Timestamp("2026-09-01", tz="UTC")
LATER = pd.Timestamp("2026-10-01", tz="UTC")


def _snapshot_features(ws, moment: pd.Timestamp) -> pd.DataFrame:
    from training.data import known_customers, task_features

    entity = pd.DataFrame({"customer_id": known_customers(ws, moment), "event_timestamp": moment})
    return task_features(ws, entity, ["churn"])["churn"]


@pytest.fixture(scope="module")
def month_apart(featurised_world):
    """The churn service's features of the same generated world at two snapshots a month apart."""
    ws = featurised_world.ws
    earlier, later = _snapshot_features(ws, EARLIER), _snapshot_features(ws, LATER)
    columns = [c for c in earlier.columns if c not in ("customer_id", "event_timestamp")]
    return earlier, later, columns


def _rows(frame: pd.DataFrame, n: int, seed: int) -> pd.DataFrame:
    return frame.sample(n=n, replace=n > len(frame), random_state=seed).reset_index(drop=True)


def test_an_unchanged_world_a_month_apart_raises_no_alarm_at_2000_rows(month_apart):
    # given 2,000 customers drawn from each of two monthly snapshots of an unchanged generated world
    earlier, later, columns = month_apart
    # when their features are compared as the monitor compares them
    result = compare(
        _rows(earlier, 2_000, 1), _rows(later, 2_000, 2), columns, CONFIG.drift_threshold, shown=0
    )
    # then every feature was tested and the task's alarm (a drifted share of its features) is not raised
    assert len(result.columns) + len(result.untested) == len(columns) and len(result.columns) > 50
    assert result.share < CONFIG.drift_share
    # and at most a few features moved by more than the effect-size threshold in a month
    assert len(result.drifted) <= 0.1 * len(columns), result.drifted


def test_a_resample_of_the_reference_flags_no_feature_at_2000_rows(month_apart):
    # given the training reference and another draw of the same customers
    earlier, _, columns = month_apart
    # when compared
    result = compare(
        _rows(earlier, 2_000, 3), _rows(earlier, 2_000, 4), columns, CONFIG.drift_threshold, shown=0
    )
    # then no feature drifted
    assert result.drifted == []


@pytest.mark.slow
def test_the_same_thresholds_hold_at_a_million_rows_where_a_p_value_test_flags_everything(month_apart):
    # given the month-apart snapshots resampled to 1,000,000 rows each (a dozen numeric features, so
    # the test stays quick)
    earlier, later, columns = month_apart
    numeric = [c for c in columns if pd.api.types.is_numeric_dtype(earlier[c]) and earlier[c].std() > 0]
    chosen = numeric[:: max(1, len(numeric) // 12)][:12]
    big_earlier, big_later = _rows(earlier[chosen], 1_000_000, 5), _rows(later[chosen], 1_000_000, 6)
    # when compared with the monitor's distances
    big = compare(big_earlier, big_later, chosen, CONFIG.drift_threshold, shown=0)
    small = compare(earlier, later, chosen, CONFIG.drift_threshold, shown=0)
    # then no alarm at a million rows either: the distances barely move with the sample size
    assert big.share < CONFIG.drift_share
    for column in chosen:
        assert abs(big.scores()[column] - small.scores()[column]) < 0.05, column
    # whereas a p-value test at that size calls most of these same, unchanged features drifted
    p_values = [stats.ks_2samp(big_earlier[c].dropna(), big_later[c].dropna()).pvalue for c in chosen]
    assert np.mean(np.array(p_values) < 0.05) > 0.5


def test_a_shifted_feature_is_flagged_by_name(month_apart):
    # given the later snapshot in which one feature's values came in 60 % higher (a unit change upstream)
    earlier, later, columns = month_apart
    before = compare(
        _rows(earlier, 2_000, 1), _rows(later, 2_000, 2), columns, CONFIG.drift_threshold, shown=0
    )
    shifted = _rows(later, 2_000, 2)
    shifted["purchase_amount_365d"] = shifted["purchase_amount_365d"] * 1.6
    # when compared
    after = compare(_rows(earlier, 2_000, 1), shifted, columns, CONFIG.drift_threshold, shown=3)
    # then that feature is flagged by name, and nothing else changed
    assert "purchase_amount_365d" not in before.drifted
    assert "purchase_amount_365d" in after.drifted
    assert set(after.drifted) - set(before.drifted) == {"purchase_amount_365d"}
    # and the HTML widgets show it first
    assert after.widgets


@pytest.fixture(scope="module")
def scored_in_august(trained_world, copy_workspace, tmp_path_factory):
    """A copy of the trained world scored as of 2026-08-01 (a past as-of: the 30-day purchase
    horizon has passed by the features' as-of, 2026-11-01) and monitored for next purchase."""
    from training.monitor import monitor_workspace
    from training.scoring import score_workspace

    world, _ = trained_world
    ws = copy_workspace(world.ws, tmp_path_factory.mktemp("monitor-august") / "ws", score_history=False)
    scored_at = datetime(2026, 8, 1, tzinfo=UTC)
    score_workspace(ws, scored_at, ws.root / "august.parquet")
    result = monitor_workspace(ws, world.features_as_of, tasks=["next_purchase"], log=False)
    return ws, pd.Timestamp(scored_at), result


def test_score_runs_keep_a_copy_per_as_of_in_reports(scored_in_august):
    ws, scored_at, _ = scored_in_august
    kept = ws.reports_dir / "scores" / "scores-2026-08-01.parquet"
    assert kept.exists()
    assert pd.read_parquet(kept).equals(pd.read_parquet(ws.root / "august.parquet"))


def test_realised_auc_of_a_past_score_output_equals_an_independent_computation(scored_in_august):
    # given scores as of 2026-08-01 and the transactions known by 2026-11-01
    ws, scored_at, result = scored_in_august
    scores = pd.read_parquet(ws.reports_dir / "scores" / "scores-2026-08-01.parquet")
    scores = scores.dropna(subset=["purchase_probability"])
    transactions = pd.read_parquet(
        ws.canonical_dir / "transactions.parquet", columns=["customer_id", "timestamp", "amount"]
    )
    stamps = pd.to_datetime(transactions["timestamp"], utc=True)
    window = (
        (stamps > scored_at) & (stamps <= scored_at + pd.Timedelta(days=30)) & (transactions["amount"] > 0)
    )
    bought = set(transactions.loc[window, "customer_id"])
    # when the AUC of purchase_probability against "bought within 30 days" is computed by hand
    expected = roc_auc_score(scores["customer_id"].isin(bought).astype(int), scores["purchase_probability"])
    # then the monitor's realised AUC of that score output is the same
    [realised] = result.to_dict()["performance"]["next_purchase"]
    assert realised["scored_as_of"].startswith("2026-08-01")
    assert realised["rows"] == len(scores)
    assert realised["auc"] == pytest.approx(expected, abs=1e-6)
    # and it is set against what the scoring version recorded at training
    assert realised["at_promotion"]["auc"] == pytest.approx(_recorded_auc(ws), abs=1e-6)
    assert set(realised["segments"]) <= {"low", "medium", "high"} and realised["segments"]


def _recorded_auc(ws) -> float:
    from training.tracking import resolve_tracking, version_info

    return float(version_info(resolve_tracking(ws), "next_purchase")["auc_model"])
