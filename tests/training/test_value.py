"""The value task: net-spend labels, the Tweedie model against its baselines, the bundle's derived
outputs, and the gate on Gini (on the session's trained world; see ``tests/conftest.py``)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from training.model_bundle import ModelBundle
from training.tasks import value

T = pd.Timestamp("2026-03-01", tz="UTC")


def _tx(rows):
    return pd.DataFrame(rows, columns=["customer_id", "timestamp", "amount", "returned"]).assign(
        timestamp=lambda f: pd.to_datetime(f["timestamp"], utc=True)
    )


def test_given_purchases_and_returns_then_the_label_is_net_spend_strictly_after_t_up_to_t_plus_h():
    tables = {
        "transactions": _tx(
            [
                ("A", "2026-01-10", 50.0, False),  # makes A known before t
                ("A", "2026-03-01", 999.0, False),  # at t: not in (t, t+H]
                ("A", "2026-03-05", 100.0, False),
                ("A", "2026-03-06", 40.0, True),  # a return flagged as such
                ("A", "2026-03-31", 10.0, False),  # t + 30 days, inclusive
                ("A", "2026-04-01", 500.0, False),  # after the window
                ("B", "2026-02-01", 20.0, False),
                ("B", "2026-03-10", -15.0, False),  # a negative row is a return too
            ]
        )
    }

    labels = value.labels(tables, [T], 30, pd.Timestamp("2026-05-01", tz="UTC"))

    spend = labels.frame.set_index("customer_id")[value.LABEL]
    assert spend["A"] == pytest.approx(100.0 - 40.0 + 10.0)
    assert spend["B"] == pytest.approx(-15.0)
    assert labels.columns == (value.LABEL,) and labels.outputs == {}


def _bundle(family: str = "lightgbm") -> ModelBundle:
    import lightgbm as lgb

    rng = np.random.default_rng(0)
    X = pd.DataFrame({"purchase_amount_365d": rng.gamma(1.0, 200.0, 500), "noise": rng.random(500)})
    y = X["purchase_amount_365d"].to_numpy() / 4 * (rng.random(500) < 0.6)
    fit = lgb.train({"objective": "tweedie", "verbose": -1, "min_data_in_leaf": 20}, lgb.Dataset(X, y), 30)
    if_buying = lgb.train({"objective": "gamma", "verbose": -1}, lgb.Dataset(X[y > 0], y[y > 0]), 30)
    q = {name: lgb.train({"objective": "quantile", "alpha": a, "verbose": -1}, lgb.Dataset(X, y), 20)
         for name, a in (("q10", 0.1), ("q90", 0.9))}  # fmt: skip
    spend = {
        "name": "spend",
        "kind": "regression",
        "output": value.OUTPUT,
        "scale": 1.0,
        "prior": float(y.mean()),
    }
    if family == "run_rate":
        spend |= {"family": "run_rate", "column": "purchase_amount_365d", "factor": 90 / 365}
    heads = [
        spend,
        {"name": "q10", "kind": "quantile", "alpha": 0.1, "output": value.LOW, "prior": 0.0},
        {"name": "q90", "kind": "quantile", "alpha": 0.9, "output": value.HIGH, "prior": 100.0},
        {"name": "if_buying", "kind": "regression", "output": value.IF_BUYING, "scale": 1.0, "prior": 80.0},
    ]
    spec = {
        "task": "value", "features": list(X.columns), "categorical_levels": {}, "horizon_days": 90,
        "heads": heads, "shortfalls": [{"output": value.AT_RISK, "of": value.IF_BUYING, "minus": value.OUTPUT}],
    }  # fmt: skip
    boosters = {"q10": q["q10"], "q90": q["q90"], "if_buying": if_buying}
    if family != "run_rate":
        boosters["spend"] = fit
    return ModelBundle(spec, boosters), X


@pytest.mark.parametrize("family", ["lightgbm", "run_rate"])
def test_given_a_value_bundle_then_value_at_risk_is_the_buying_spend_shortfall_and_survives_a_round_trip(
    family, tmp_path
):
    bundle, X = _bundle(family)

    out = bundle.predict(X)
    loaded = ModelBundle.load(bundle.save(tmp_path / "bundle")).predict(X)

    expected = np.clip(out[value.IF_BUYING] - out[value.OUTPUT], 0, None)
    assert np.allclose(out[value.AT_RISK], expected) and (out[value.AT_RISK] >= 0).all()
    assert (out[value.LOW] <= out[value.HIGH]).all() and (out[value.OUTPUT] >= 0).all()
    pd.testing.assert_frame_equal(out, loaded)
    if family == "run_rate":
        assert np.allclose(out[value.OUTPUT], X["purchase_amount_365d"] * 90 / 365)
        drivers = bundle.drivers(X.head(3), k=1)
        assert set(drivers["feature"]) == {"purchase_amount_365d"}


@pytest.mark.slow
def test_given_the_trained_world_then_value_ranks_spenders_better_than_its_baselines(trained_world):
    world, results = trained_world
    result = results["value"]
    fitted = result.fitted

    def metric(model, name):
        return fitted.metric(value.LABEL, model, name)

    assert result.status == "trained" and result.champion
    assert metric("model", "gini") > 0.5
    assert metric("model", "gini_vs_run_rate_low") > 0, "LightGBM must beat the run rate beyond the noise"
    assert metric("model", "gini") > metric("btyd", "gini")
    assert abs(metric("model", "total_error")) < 0.1
    assert 0.7 <= metric("model", "interval_coverage") <= 0.95
    assert metric("model", "mae") < metric("run_rate", "mae")
    top, bottom = (fitted.metric(f"decile_{d:02d}", "model", "mean_actual") for d in (1, 10))
    assert top > 5 * max(bottom, 1e-9)


@pytest.mark.slow
def test_given_the_trained_world_then_score_has_the_value_columns(trained_world, tmp_path):
    from training.scoring import score_workspace

    world, _ = trained_world

    summary = score_workspace(world.ws, world.train_as_of, tmp_path / "scores.parquet")

    scores = pd.read_parquet(summary.path)
    columns = [value.OUTPUT, value.LOW, value.HIGH, value.AT_RISK]
    assert set(columns) <= set(scores.columns)
    scored = scores.dropna(subset=[value.OUTPUT])
    assert len(scored) > 0.9 * len(scores)
    assert (scored[value.AT_RISK] >= 0).all() and (scored[value.LOW] <= scored[value.HIGH]).all()


@pytest.mark.slow
def test_given_a_second_value_version_then_the_gate_compares_gini_with_an_interval(
    trained_world, copy_workspace, tmp_path
):
    from training.commands import promote_command
    from training.run import train_workspace

    world, _ = trained_world
    ws = copy_workspace(world.ws, tmp_path / "ws")
    train_workspace(
        ws, tasks=["value"], as_of=world.train_as_of, lightgbm={"num_threads": 1}, shap_sample=100
    )

    result = promote_command(ws, "value")

    checks = {check.name: check for check in result.checks}
    assert "Gini" in checks and "AUC" not in checks and "level (total error)" in checks
    assert "95% interval" in checks["Gini"].detail
    assert checks["Gini"].passed, "the same recipe on the same data is not worse beyond the noise"
    assert set(result.metrics["candidate"]) >= {"gini", "mae", "total_error"}
