"""The season a head is calibrated in, carried to the window it predicts (``training.season`` and the
bundle's ``seasonal_ratio``): profiles from known activity, ratios, and the two forms."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.model_bundle import seasonal, seasonal_ratio
from training.season import MIN_WINDOW_EVENTS, TREND_HALF_DAYS, YEAR_DAYS, season_profile

AS_OF = pd.Timestamp("2026-12-01", tz="UTC")
VALID = pd.Timestamp("2026-10-01", tz="UTC")


def _activity(per_day: dict[str, int], start="2024-01-01", end="2026-12-01", base: int = 10) -> pd.Series:
    """``base`` facts a day, ``per_day[month]`` instead in the months named ``YYYY-MM``."""
    days = pd.date_range(start, end, freq="D", tz="UTC", inclusive="left")
    counts = [per_day.get(day.strftime("%Y-%m"), base) for day in days]
    return pd.Series(np.repeat(days + pd.Timedelta(hours=12), counts))


def test_given_a_busier_month_last_year_then_its_window_has_the_ratio_of_the_counts():
    # given a year in which November had twice October's activity
    profile = season_profile([_activity({"2025-11": 20})], AS_OF, 30, VALID)
    # then the calibration window (October) is the reference and November a year on is twice it
    assert profile["calibrated_at"] == "2026-10-01"
    assert seasonal_ratio(profile, "2026-11-01") == pytest.approx(2.0)
    assert seasonal_ratio(profile, VALID) == pytest.approx(1.0)
    # and a window straddling the two months gets the share of each
    assert seasonal_ratio(profile, "2026-10-16") == pytest.approx(
        (16 * 10 + 14 * 20) / 300
    )  # Oct 16-31, Nov 1-14


def test_a_base_growing_last_year_does_not_pass_for_season():
    # given activity doubling every half year, with no season
    days = pd.date_range("2024-01-01", "2026-12-01", freq="D", tz="UTC", inclusive="left")
    counts = (3 * 2 ** (np.arange(len(days)) / 182)).round().astype(int)
    growing = pd.Series(np.repeat(days + pd.Timedelta(hours=12), counts))
    profile = season_profile([growing], AS_OF, 30, VALID)
    # then November is not moved against October, though last November was 10 % busier a day
    month = days.strftime("%Y-%m")
    assert counts[month == "2025-11"].mean() > 1.1 * counts[month == "2025-10"].mean()
    assert seasonal_ratio(profile, "2026-11-01") == pytest.approx(1.0, abs=0.01)


def test_the_profile_adds_every_activity_series_and_ignores_facts_after_the_as_of():
    one = season_profile([_activity({}, end="2027-02-01")], AS_OF, 30, VALID)
    two = season_profile([_activity({}), _activity({})], AS_OF, 30, VALID)
    assert len(one["daily"]) == (AS_OF - VALID).days + YEAR_DAYS + TREND_HALF_DAYS - 30 // 2
    assert sum(two["daily"]) == 2 * sum(one["daily"]) == 2 * 10 * len(one["daily"])


def test_a_window_whose_year_earlier_twin_lacks_its_trend_is_read_whole_years_earlier():
    profile = season_profile([_activity({"2025-11": 20})], AS_OF, 30, VALID)
    # a year before 2027-11-15 the half year after it is not known yet, so two years: Nov 15 - Dec 14, 2025
    assert seasonal_ratio(profile, "2027-11-15") == pytest.approx((16 * 20 + 14 * 10) / 300)
    # and a naive moment is taken as UTC
    assert seasonal_ratio(profile, pd.Timestamp("2026-11-01")) == pytest.approx(2.0)


@pytest.mark.parametrize(
    "activity",
    [
        pytest.param(_activity({}, start="2025-06-01"), id="history-starts-inside-the-twin-s-year"),
        pytest.param(_activity({}, base=1), id="too-little-activity"),
        pytest.param(pd.Series([], dtype="datetime64[us, UTC]"), id="no-activity"),
    ],
)
def test_without_a_year_of_measurable_history_there_is_no_profile(activity):
    assert season_profile([activity], AS_OF, 30, VALID) is None
    assert seasonal_ratio(None, AS_OF) == 1.0


def test_a_quiet_window_a_year_earlier_is_not_measured():
    # given a profile whose January a year earlier had almost no activity
    profile = season_profile([_activity({"2026-01": 1})], AS_OF, 30, VALID)
    assert 30 * 1 < MIN_WINDOW_EVENTS
    # then a January window is not moved (ratio 1), rather than moved by noise
    assert seasonal_ratio(profile, "2027-01-01") == 1.0


def test_an_event_that_occurs_rises_with_intensity_and_an_absence_falls():
    p = np.array([0.0, 0.2, 0.5, 1.0])
    busier = seasonal(p, "occurs", 2.0)
    assert busier == pytest.approx([0.0, 0.36, 0.75, 1.0])  # 1 - (1 - p) ** 2
    assert seasonal(p, "absent", 2.0) == pytest.approx(p**2)  # no activity in a busier window is rarer
    assert seasonal(p, "occurs", 1.0) is p
    # and a quieter window moves both the other way, staying in [0, 1]
    quieter = seasonal(p, "occurs", 0.5)
    assert (quieter <= p).all() and (quieter >= 0).all()
    with pytest.raises(ValueError, match="unknown seasonal form"):
        seasonal(p, "sometimes", 2.0)


# --- a seasonal head as a logged MLflow model ----------------------------------------------------------


def _seasonal_bundle():
    """A one-feature formula head (probability = x) that follows the November profile above."""
    from training.model_bundle import ModelBundle

    head = {"name": "purchase", "kind": "binary", "output": "purchase_probability", "family": "run_rate"}
    head |= {"column": "x", "factor": 1.0, "prior": 0.2, "season": "occurs"}
    profile = season_profile([_activity({"2025-11": 20})], AS_OF, 30, VALID)
    spec = {"task": "next_purchase", "features": ["x"], "categorical_levels": {}, "horizon_days": 30}
    return ModelBundle({**spec, "heads": [head], "season": profile}, {})


def test_a_bundle_predicts_each_window_at_its_season_and_keeps_the_profile_when_saved(tmp_path):
    from training.model_bundle import ModelBundle

    bundle = ModelBundle.load(_seasonal_bundle().save(tmp_path / "bundle"))
    frame = pd.DataFrame({"x": [0.2, 0.5]})
    october = bundle.predict(frame, VALID)["purchase_probability"]
    november = bundle.predict(frame, "2026-11-01T09:30:00Z")["purchase_probability"]
    assert october.tolist() == pytest.approx([0.2, 0.5])
    assert november.tolist() == pytest.approx([0.36, 0.75])


def test_the_logged_model_takes_the_window_start_as_the_as_of_param(tmp_path):
    import mlflow
    from training.tracking import TrackingTarget, log_bundle, predict_params, tracking_session

    # given a seasonal bundle logged as the product logs every task model
    bundle = _seasonal_bundle()
    example = pd.DataFrame({"x": [0.2, 0.5]})
    target = TrackingTarget(f"sqlite:///{tmp_path / 'mlflow.db'}", None, None)
    with tracking_session(target):
        experiment = mlflow.create_experiment("season", artifact_location=str(tmp_path / "artifacts"))
    with tracking_session(target), mlflow.start_run(experiment_id=experiment):
        info = log_bundle(bundle, example, staging_dir=tmp_path / "staging")
        model = mlflow.pyfunc.load_model(info.model_uri)
    # when it predicts for the calibration window and for November
    october = model.predict(example, params=predict_params(VALID))["purchase_probability"]
    november = model.predict(example, params={"as_of": "2026-11-01"})["purchase_probability"]
    # then the season moved November's probabilities, and without the param the window starts now
    assert october.tolist() == pytest.approx([0.2, 0.5])
    assert november.tolist() == pytest.approx([0.36, 0.75])
    now = model.predict(example)["purchase_probability"]
    assert now.tolist() == pytest.approx(bundle.predict(example)["purchase_probability"].tolist())
