"""BTYD candidate: the summary on hand-made and published real histories, the fit against the published
CDNOW estimates, the JSON round trip, and holdout quality on the real CDNOW master data."""

from __future__ import annotations

import json
import time

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from features.real_data import CALIBRATION_CUTOFF, END, load_transactions, package_file
from training.btyd import BtydModel, summary_at

HOLDOUT_DAYS = (END - CALIBRATION_CUTOFF).days
CUTOFF = pd.Timestamp("2025-03-01", tz="UTC")


def _tx(rows):
    return pd.DataFrame(
        {
            "customer_id": [r[0] for r in rows],
            "timestamp": pd.to_datetime([r[1] for r in rows], utc=True),
            "amount": [float(r[2]) for r in rows],
        }
    )


HISTORY = _tx(
    [
        ("a", "2025-01-01 09:00", 10),
        ("a", "2025-01-01 18:30", 5),
        ("a", "2025-01-04 12:00", 20),
        ("a", "2025-01-11 23:59", 30),
        ("a", "2025-03-01 00:00", 999),
        ("b", "2025-02-20 08:00", 7),
        ("c", "2025-03-05 10:00", 50),
        ("d", "2024-12-31 23:00", 4),
        ("d", "2025-01-01 01:00", 6),
    ]
)


@pytest.fixture(scope="module")
def cdnow():
    return load_transactions()


@pytest.fixture(scope="module")
def calibration(cdnow):
    return summary_at(cdnow, CALIBRATION_CUTOFF)


@pytest.fixture(scope="module")
def holdout_days(cdnow, calibration):
    """Distinct purchase days per calibration customer in the 39-week holdout."""
    hold = cdnow[cdnow["timestamp"] >= CALIBRATION_CUTOFF]
    days = hold.assign(day=hold["timestamp"].dt.floor("D")).groupby("customer_id")["day"].nunique()
    return days.reindex(calibration["customer_id"]).fillna(0).to_numpy()


@pytest.fixture(scope="module")
def fitted(calibration):
    return BtydModel().fit(calibration).fit_spend(calibration)


def test_given_a_hand_made_history_when_summarised_then_btyd_statistics_are_exact_in_days():
    summary = summary_at(HISTORY, CUTOFF).set_index("customer_id")

    assert list(summary.index) == ["a", "b", "d"]
    a, b, d = summary.loc["a"], summary.loc["b"], summary.loc["d"]
    assert (a["frequency"], a["recency"], a["T"], a["monetary_value"]) == (2, 10.0, 59.0, 25.0)
    assert (b["frequency"], b["recency"], b["T"], b["monetary_value"]) == (0, 0.0, 9.0, 0.0)
    assert (d["frequency"], d["recency"], d["T"], d["monetary_value"]) == (1, 1.0, 60.0, 6.0)
    assert summary["has_history"].all() and summary["frequency"].dtype == np.int64


def test_given_a_cutoff_inside_a_day_when_summarised_then_only_earlier_transactions_count():
    summary = summary_at(HISTORY, pd.Timestamp("2025-01-11 12:00", tz="UTC")).set_index("customer_id")

    a = summary.loc["a"]
    assert (a["frequency"], a["recency"], a["T"], a["monetary_value"]) == (1, 3.0, 10.5, 20.0)


def test_given_listed_customers_when_summarised_then_rows_follow_the_list_and_newcomers_have_no_history():
    summary = summary_at(HISTORY, CUTOFF, customers=["c", "a", "zz"])

    assert list(summary["customer_id"]) == ["c", "a", "zz"]
    assert list(summary["has_history"]) == [False, True, False]
    newcomers = summary[~summary["has_history"]]
    assert (newcomers[["frequency", "recency", "T", "monetary_value"]].to_numpy() == 0).all()
    assert summary.loc[1, "frequency"] == 2 and summary["frequency"].dtype == np.int64


def test_given_the_fhl_cdnow_sample_when_summarised_then_the_published_calibration_summary_is_reproduced():
    raw = pd.read_csv(
        package_file("CDNOW_sample.txt"),
        sep=r"\s+",
        header=None,
        names=["master", "id", "date", "n", "amount"],
    )
    tx = pd.DataFrame(
        {
            "customer_id": raw["id"],
            "timestamp": pd.to_datetime(raw["date"].astype(str), format="%Y%m%d", utc=True),
            "amount": raw["amount"],
        }
    )
    published = pd.read_csv(package_file("cdnow_customers_summary_with_transactions.csv")).set_index("ID")

    summary = summary_at(tx, CALIBRATION_CUTOFF).set_index("customer_id").loc[published.index]

    assert len(summary) == len(published) == 2357
    assert (summary["frequency"] == published["x"]).all()
    np.testing.assert_allclose(summary["recency"] / 7, published["t_x"], atol=0.006)
    np.testing.assert_allclose(summary["monetary_value"], published["zbar"], atol=0.006)
    np.testing.assert_allclose((summary["T"] - 1) / 7, published["T"], atol=0.006)


@pytest.mark.slow
def test_given_the_published_cdnow_summary_when_fitted_then_the_published_estimates_are_recovered():
    published = pd.read_csv(package_file("cdnow_customers_summary_with_transactions.csv")).rename(
        columns={"ID": "customer_id", "x": "frequency", "t_x": "recency", "zbar": "monetary_value"}
    )

    params = BtydModel().fit(published).fit_spend(published).params

    fhl_2005 = {"r": 0.243, "alpha": 4.414, "a": 0.793, "b": 2.426}
    fader_hardie_2013 = {"p": 6.25, "q": 3.74, "v": 15.44}
    assert params["bg_nbd"] == pytest.approx(fhl_2005, rel=0.005)
    assert params["gamma_gamma"] == pytest.approx(fader_hardie_2013, rel=0.005)


@pytest.mark.slow
def test_given_a_fitted_model_when_rebuilt_from_its_json_params_then_every_prediction_is_identical(
    fitted, calibration
):
    rebuilt = BtydModel.from_params(json.loads(json.dumps(fitted.params)))
    mixed = pd.concat([calibration.head(500), summary_at(HISTORY, CUTOFF, customers=["new"])])

    assert rebuilt.params == fitted.params
    for name, args in [("p_alive", ()), ("expected_purchases", (90,)), ("p_no_purchase", (90,))]:
        np.testing.assert_array_equal(
            getattr(rebuilt, name)(mixed, *args), getattr(fitted, name)(mixed, *args)
        )
    np.testing.assert_array_equal(rebuilt.expected_spend(mixed), fitted.expected_spend(mixed))


@pytest.mark.slow
def test_given_customers_without_history_when_scored_then_they_get_the_prior_of_a_customer_acquired_now(
    fitted,
):
    newcomers = summary_at(HISTORY, CUTOFF, customers=["x", "y"])
    p = fitted.params["bg_nbd"]
    horizon = 90.0

    assert fitted.p_alive(newcomers).tolist() == [1.0, 1.0]
    np.testing.assert_allclose(
        fitted.p_no_purchase(newcomers, horizon), (p["alpha"] / (p["alpha"] + horizon)) ** p["r"]
    )
    new_customer = fitted._bg_model.expected_purchases_new_customer(t=horizon).to_numpy().item()
    np.testing.assert_allclose(fitted.expected_purchases(newcomers, horizon), new_customer)
    g = fitted.params["gamma_gamma"]
    np.testing.assert_allclose(fitted.expected_spend(newcomers), g["p"] * g["v"] / (g["q"] - 1))


@pytest.mark.slow
def test_given_one_time_and_repeat_buyers_when_p_no_purchase_then_it_is_the_bg_nbd_conditional_probability(
    fitted, calibration
):
    p = fitted.params["bg_nbd"]
    horizon = 120.0
    p0 = fitted.p_no_purchase(calibration, horizon)

    once = (calibration["frequency"] == 0).to_numpy()
    T = calibration["T"].to_numpy()
    np.testing.assert_allclose(
        p0[once], ((p["alpha"] + T[once]) / (p["alpha"] + T[once] + horizon)) ** p["r"]
    )
    frame = calibration[~once].assign(customer_id=np.arange((~once).sum()))
    library = fitted._bg_model.expected_probability_no_purchase(t=horizon, data=frame).to_numpy().ravel()
    np.testing.assert_allclose(p0[~once], library, rtol=1e-9)
    assert ((p0 > 0) & (p0 < 1)).all()


@pytest.mark.slow
def test_given_cdnow_when_fitted_on_39_weeks_then_the_holdout_is_forecast_with_bg_nbd_accuracy(
    fitted, calibration, holdout_days
):
    buyers = (1 - fitted.p_no_purchase(calibration, HOLDOUT_DAYS)).sum() / (holdout_days > 0).sum()
    purchases = fitted.expected_purchases(calibration, HOLDOUT_DAYS).sum() / holdout_days.sum()
    auc = roc_auc_score(holdout_days == 0, fitted.p_no_purchase(calibration, HOLDOUT_DAYS))

    print(f"CDNOW holdout: expected/actual buyers {buyers:.3f}, purchases {purchases:.3f}, AUC {auc:.3f}")
    assert 0.85 < buyers < 1.05
    assert 0.80 < purchases < 1.05
    assert auc > 0.70


@pytest.mark.slow
@pytest.mark.xfail(strict=True, reason="BG/NBD alone under-forecasts CDNOW holdout buyers by ~12 %")
def test_given_cdnow_when_fitted_on_39_weeks_then_expected_buyers_are_within_the_5_percent_product_bar(
    fitted, calibration, holdout_days
):
    buyers = (1 - fitted.p_no_purchase(calibration, HOLDOUT_DAYS)).sum() / (holdout_days > 0).sum()

    assert buyers == pytest.approx(1.0, abs=0.05)


@pytest.mark.slow
def test_given_100k_customers_when_predicting_then_each_prediction_is_vectorised(fitted, calibration):
    many = pd.concat([calibration] * 5, ignore_index=True).head(100_000)
    fitted.p_no_purchase(many.head(10), 30)

    for predict in (
        fitted.p_alive,
        lambda s: fitted.expected_purchases(s, 30),
        lambda s: fitted.p_no_purchase(s, 30),
        fitted.expected_spend,
    ):
        started = time.perf_counter()
        values = predict(many)
        assert time.perf_counter() - started < 1.5
        assert values.shape == (100_000,) and np.isfinite(values).all()
