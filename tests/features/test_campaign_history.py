"""The generated campaign history: randomised, logged like the service's own decisions, deterministic,
and with a truth that the realised purchases agree with."""

from __future__ import annotations

import hashlib
from datetime import date

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest

from cxpredict.workspace import resolve_workspace
from features.decision_log import DecisionLog, log_url
from features.synthetic import CampaignHistory, WorldConfig, generate, load_truth, oracle_probabilities
from features.synthetic.campaign_history import ACTIONS, CAMPAIGNS_FILE, CONTROL, uplift_column, wave_days

END = date(2026, 6, 1)
CONFIG = WorldConfig(customers=3000, seed=11, end=END, campaign_history=CampaignHistory())


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    ws = resolve_workspace(tmp_path_factory.mktemp("campaigns"))
    summary = generate(ws, CONFIG)
    return ws, summary


def realised(ws, truth: pd.DataFrame, horizon_days: int) -> pd.Series:
    """Whether each decision's customer bought within the horizon, from the raw transactions."""
    tx = pq.read_table(ws.raw_dir / "transactions.parquet").to_pandas()
    customers = load_truth(ws).customers
    card = customers.dropna(subset=["loyalty_card"]).set_index("loyalty_card")["customer_id"]
    owner = tx["customer_id"].where(tx["customer_id"].notna(), tx["loyalty_card"].map(card))
    stamp = pd.to_datetime(tx["timestamp"], utc=True, errors="coerce", format="ISO8601")
    bought = pd.DataFrame({"customer_id": owner, "ts": stamp})[(tx["amount"] > 0) & ~tx["returned"]].dropna()
    joined = truth[["decision_id", "customer_id", "decided_at"]].merge(bought, on="customer_id", how="left")
    hit = (joined["ts"] > joined["decided_at"]) & (
        joined["ts"] <= joined["decided_at"] + pd.Timedelta(days=horizon_days)
    )
    return truth["decision_id"].map(hit.groupby(joined["decision_id"]).any()).astype(bool)


def test_given_a_world_with_campaigns_then_every_decision_is_logged_with_its_arm_and_propensity(world):
    ws, summary = world
    truth = pd.read_parquet(ws.truth_dir / CAMPAIGNS_FILE)
    log = DecisionLog(log_url(ws))
    try:
        logged = log.treatments()
        outcomes = log.outcome_counts()
    finally:
        log.close()

    assert summary.campaign_history["decisions"] == len(truth) == len(logged)
    merged = truth.merge(logged, on=["decision_id", "customer_id"], validate="one_to_one")
    assert (merged["arm_x"] == merged["arm_y"]).all()
    assert merged.loc[merged["arm_y"] == CONTROL, "propensity_y"].isna().all()
    history = CONFIG.campaign_history
    treated = merged.loc[merged["arm_y"] != CONTROL, "propensity_y"]
    assert np.allclose(treated, (1 - history.control_share) / len(ACTIONS))
    assert sorted(set(merged["arm_y"])) == sorted({CONTROL, *ACTIONS})
    assert abs((merged["arm_y"] == CONTROL).mean() - history.control_share) < 0.03
    assert set(pd.to_datetime(logged["timestamp"], utc=True).unique()) <= set(wave_days(CONFIG))
    assert outcomes["delivered"] == int((merged["arm_y"] != CONTROL).sum())
    assert outcomes["converted"] == summary.campaign_history["persuaded"]


def test_given_the_truth_then_treated_purchase_rates_match_the_true_uplift_per_action(world):
    ws, _ = world
    truth = pd.read_parquet(ws.truth_dir / CAMPAIGNS_FILE)
    truth["bought"] = realised(ws, truth, CONFIG.campaign_history.horizon_days)
    control = truth[truth["arm"] == CONTROL]
    spread = np.sqrt(
        control["purchase_without_action"].mul(1 - control["purchase_without_action"]).sum()
    ) / len(control)
    assert abs(control["bought"].mean() - control["purchase_without_action"].mean()) < 4 * spread
    for action in ACTIONS:
        arm = truth[truth["arm"] == action]
        expected = arm["purchase_without_action"] + arm[uplift_column(action)]
        noise = np.sqrt((expected * (1 - expected)).sum()) / len(arm)
        assert abs(arm["bought"].mean() - expected.mean()) < 4 * noise, action
    assert truth[uplift_column("retention_offer")].mean() > 0.03


def test_given_the_truth_then_effects_differ_between_customers_and_some_react_badly(world):
    ws, _ = world
    truth = pd.read_parquet(ws.truth_dir / CAMPAIGNS_FILE)
    for action in ACTIONS:
        uplift = truth[uplift_column(action)]
        assert uplift.std() > 0.02, action
    assert (truth[uplift_column("retention_offer")] < 0).mean() > 0.01
    assert (truth[uplift_column("service_recovery_callback")] >= 0).all()


def test_given_the_oracle_at_a_wave_then_it_gives_the_same_true_uplift_as_the_history(world):
    ws, _ = world
    truth = pd.read_parquet(ws.truth_dir / CAMPAIGNS_FILE)
    wave = wave_days(CONFIG)[-1]
    at_wave = truth[truth["decided_at"] == wave].set_index("customer_id")
    exact = oracle_probabilities(load_truth(ws), wave.to_pydatetime(), CONFIG.campaign_history.horizon_days)
    exact = exact.set_index("customer_id").loc[at_wave.index]
    for action in ACTIONS:
        assert np.allclose(exact[uplift_column(action)], at_wave[uplift_column(action)])
    assert np.allclose(exact["purchase"], at_wave["purchase_without_action"])


def test_given_the_same_seed_then_the_history_is_identical(world, tmp_path):
    ws, _ = world
    small = CONFIG.model_copy(update={"customers": 400})
    digests = []
    for name in ("a", "b"):
        other = resolve_workspace(tmp_path / name)
        generate(other, small)
        log = DecisionLog(log_url(other))
        try:
            frame = log.treatments().sort_values("decision_id")
        finally:
            log.close()
        digest = hashlib.sha256(pd.util.hash_pandas_object(frame, index=False).to_numpy().tobytes())
        digest.update((other.raw_dir / "transactions.parquet").read_bytes())
        digest.update((other.truth_dir / CAMPAIGNS_FILE).read_bytes())
        digests.append(digest.hexdigest())
    assert digests[0] == digests[1]
