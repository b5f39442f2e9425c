"""A small generated world with KNOWN structure, its point-in-time features and its oracle.

Each customer signs up at a random day, stays alive for an exponential lifetime whose hazard grows
with a latent risk z, and while alive purchases (rate grows with a latent value w and falls with z),
engages online and opens support tickets (more often, and more often left unresolved, when z is
high). Demand events name categories: mostly the favourite one, often an "unmet" one the customer
rarely buys. So behaviour before t reveals z, w and being alive, and the labels after t follow
from them: the oracle probabilities below are exact given the latent state at t.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import SimpleNamespace
from typing import Callable

import numpy as np
import pandas as pd
import pytest

CATEGORIES = ("electronics", "home", "fashion", "beauty")
START = pd.Timestamp("2024-01-01", tz="UTC")
AS_OF = pd.Timestamp("2025-09-01", tz="UTC")
DAY = pd.Timedelta(days=1)
EVENT_TYPES = np.array(["session_start", "page_view", "search", "product_view", "wishlist_add"], dtype=object)
EVENT_WEIGHTS = np.array([0.35, 0.3, 0.15, 0.15, 0.05])
RETURN_SHARE = 0.04
REGIONS = np.array(["north", "south", "east", "west"], dtype=object)


@dataclass(frozen=True)
class World:
    """Canonical tables plus the latent truth behind them (never given to the code under test)."""

    tables: dict[str, pd.DataFrame]
    truth: pd.DataFrame  # customer_id, signup, death, hazard, purchase_rate, event_rate

    def without(self, *sources: str) -> dict[str, pd.DataFrame]:
        return {name: table for name, table in self.tables.items() if name not in sources}


def _stamps(base: pd.Series | np.ndarray, days: np.ndarray) -> pd.Series:
    return (pd.to_datetime(base, utc=True) + pd.to_timedelta(days, unit="D")).astype("datetime64[us, UTC]")


def _poisson_times(rng, owner_start, owner_span, rate) -> tuple[np.ndarray, np.ndarray]:
    """Poisson process per customer on [start, start + span): (owner index, day offset) per fact."""
    counts = rng.poisson(rate * owner_span)
    owner = np.repeat(np.arange(len(rate)), counts)
    offsets = owner_start[owner] + rng.uniform(0, 1, owner.size) * owner_span[owner]
    return owner, offsets


def make_world(customers: int, seed: int = 7) -> World:
    rng = np.random.default_rng(seed)
    n = customers
    ids = np.array([f"C{index:07d}" for index in rng.permutation(n)], dtype=object)
    end_day = float((AS_OF - START) / DAY)
    risk = rng.normal(size=n)
    value = rng.normal(size=n)
    signup = rng.uniform(0, 500, n)
    hazard = 0.006 * np.exp(0.9 * risk)
    death = signup + rng.exponential(1 / hazard)
    purchase_rate = 0.025 * np.exp(0.7 * value - 0.25 * risk)
    event_rate = 0.08 * np.exp(0.9 * value)
    ticket_rate = 0.006 * np.exp(0.9 * risk)
    favourite = rng.integers(0, len(CATEGORIES), n)
    unmet = np.where(rng.uniform(size=n) < 0.6, (favourite + rng.integers(1, len(CATEGORIES), n)) % 4, -1)
    span = np.clip(np.minimum(death, end_day + 1) - signup, 0, None)

    owner, day = _poisson_times(rng, signup, span, purchase_rate)
    other = rng.integers(0, len(CATEGORIES), owner.size)
    category = np.where(rng.uniform(size=owner.size) < 0.65, favourite[owner], other)
    rebought = (category == unmet[owner]) & (rng.uniform(size=owner.size) < 0.9)
    category = np.where(rebought, favourite[owner], category)
    amount = np.round(rng.lognormal(3.5, 0.6, owner.size), 2)
    returned = rng.uniform(size=owner.size) < RETURN_SHARE
    transactions = pd.DataFrame(
        {
            "customer_id": ids[owner],
            "timestamp": _stamps(START, day),
            "amount": np.where(returned, -amount, amount),
            "category": np.asarray(CATEGORIES, dtype=object)[category],
            "channel": np.where(rng.uniform(size=owner.size) < 0.5, "online", "store").astype(object),
            "returned": returned,
        }
    )

    owner, day = _poisson_times(rng, signup, span, event_rate)
    kind = rng.choice(EVENT_TYPES, size=owner.size, p=EVENT_WEIGHTS)
    demand = np.isin(kind, ["search", "product_view", "wishlist_add"])
    wants_unmet = (unmet[owner] >= 0) & (rng.uniform(size=owner.size) < 0.35)
    usual = np.where(rng.uniform(size=owner.size) < 0.6, favourite[owner], rng.integers(0, 4, owner.size))
    wanted = np.where(wants_unmet, unmet[owner], usual)
    events = pd.DataFrame(
        {
            "customer_id": ids[owner],
            "timestamp": _stamps(START, day),
            "event_type": kind,
            "category": np.where(demand, np.asarray(CATEGORIES, dtype=object)[wanted], None),
            "channel": "web",
        }
    )

    owner, day = _poisson_times(rng, signup, span, ticket_rate)
    unresolved = rng.uniform(size=owner.size) < 1 / (1 + np.exp(-(risk[owner] - 0.5)))
    resolve_day = day + rng.exponential(4, owner.size)
    tickets = pd.DataFrame(
        {
            "customer_id": ids[owner],
            "opened_at": _stamps(START, day),
            "topic": rng.choice(np.array(["delivery", "billing", "returns"], dtype=object), owner.size),
            "resolved_at": _stamps(START, np.where(unresolved, np.nan, resolve_day)),
            "sentiment": np.clip(rng.normal(-0.2 * risk[owner], 0.4), -1, 1),
        }
    )
    customers = pd.DataFrame(
        {
            "customer_id": ids,
            "signup_at": _stamps(START, signup),
            "region": REGIONS[rng.integers(0, len(REGIONS), n)],
        }
    )
    truth = pd.DataFrame(
        {
            "customer_id": ids,
            "signup": signup,
            "death": death,
            "hazard": hazard,
            "purchase_rate": purchase_rate,
            "event_rate": event_rate,
        }
    )
    tables = {
        "customers": customers,
        "transactions": transactions,
        "events": events,
        "support_tickets": tickets,
    }
    return World(tables=tables, truth=truth)


def _count_since(facts: pd.DataFrame, column: str, t: pd.Timestamp, days: int) -> pd.Series:
    recent = facts.loc[facts[column] >= t - pd.Timedelta(days=days)]
    return recent.groupby("customer_id").size()


def features_at(tables: dict[str, pd.DataFrame], t: pd.Timestamp) -> pd.DataFrame:
    """Features of every customer as of t, from facts strictly before t (the point-in-time rule)."""
    t = pd.Timestamp(t)
    tx = tables["transactions"]
    tx = tx.loc[tx["timestamp"] < t]
    bought = tx.loc[tx["amount"] > 0]
    frames: dict[str, pd.Series] = {
        "days_since_last_purchase": (t - bought.groupby("customer_id")["timestamp"].max()) / DAY,
        "purchase_count_30d": _count_since(bought, "timestamp", t, 30),
        "purchase_count_90d": _count_since(bought, "timestamp", t, 90),
        "purchase_count_365d": _count_since(bought, "timestamp", t, 365),
        "purchase_amount_365d": bought.loc[bought["timestamp"] >= t - pd.Timedelta(days=365)]
        .groupby("customer_id")["amount"]
        .sum(),
    }
    year = bought.loc[bought["timestamp"] >= t - pd.Timedelta(days=365)]
    for category in CATEGORIES:
        in_category = year.loc[year["category"] == category]
        frames[f"purchase_{category}_365d"] = in_category.groupby("customer_id").size()
    counted = [name for name in frames if name != "days_since_last_purchase"]
    if "events" in tables:
        ev = tables["events"]
        ev = ev.loc[ev["timestamp"] < t]
        frames["days_since_last_event"] = (t - ev.groupby("customer_id")["timestamp"].max()) / DAY
        frames["engagement_events_30d"] = _count_since(ev, "timestamp", t, 30)
        frames["engagement_events_90d"] = _count_since(ev, "timestamp", t, 90)
        counted += ["engagement_events_30d", "engagement_events_90d"]
        demand = ev.loc[ev["category"].notna() & (ev["timestamp"] >= t - pd.Timedelta(days=90))]
        for category in CATEGORIES:
            name = f"need_{category}_signals_90d"
            frames[name] = demand.loc[demand["category"] == category].groupby("customer_id").size()
            counted.append(name)
    if "support_tickets" in tables:
        tk = tables["support_tickets"]
        tk = tk.loc[tk["opened_at"] < t]
        open_at_t = tk["resolved_at"].isna() | (tk["resolved_at"] >= t)
        frames["service_tickets_unresolved"] = tk.loc[open_at_t].groupby("customer_id").size()
        frames["service_tickets_90d"] = _count_since(tk, "opened_at", t, 90)
        counted += ["service_tickets_unresolved", "service_tickets_90d"]
    table = pd.DataFrame(frames).astype(float)
    table[counted] = table[counted].fillna(0.0)
    if "customers" in tables:
        profile = tables["customers"].set_index("customer_id")
        table = table.reindex(table.index.union(profile.index))
        table[counted] = table[counted].fillna(0.0)
        table["profile_tenure_days"] = (t - profile["signup_at"]) / DAY
        table["profile_region"] = profile["region"].astype(object)
    table.index.name = "customer_id"
    return table.reset_index()


def make_features_for(tables: dict[str, pd.DataFrame]) -> Callable[[pd.DataFrame, str], pd.DataFrame]:
    """The Feast-like retrieval the training code expects: entity rows in, rows plus features out."""

    def features_for(entity_df: pd.DataFrame, task: str) -> pd.DataFrame:
        parts = []
        for t, rows in entity_df.groupby("event_timestamp", sort=False):
            parts.append(rows.merge(features_at(tables, t), on="customer_id", how="left"))
        return pd.concat(parts, ignore_index=True)

    return features_for


def make_oracle(world: World, horizons: dict[str, int]) -> Callable[[pd.DataFrame, str], pd.DataFrame]:
    """Exact label probabilities given the latent state at t: ``churn`` and ``purchase`` columns."""
    truth = world.truth.set_index("customer_id")

    def oracle(entity_df: pd.DataFrame, task: str) -> pd.DataFrame:
        latent = truth.reindex(entity_df["customer_id"].to_numpy())
        day = ((entity_df["event_timestamp"] - START) / DAY).to_numpy()
        alive = latent["death"].to_numpy() > day
        h = latent["hazard"].to_numpy()
        buy_rate = (1 - RETURN_SHARE) * latent["purchase_rate"].to_numpy()
        horizon = horizons.get(task, 0)
        out = entity_df[["customer_id", "event_timestamp"]].copy()
        if task == "churn":
            rate = h + buy_rate + latent["event_rate"].to_numpy()
            quiet = np.exp(-rate * horizon) + h / rate * (1 - np.exp(-rate * horizon))
            out["churn"] = np.where(alive, quiet, 1.0)
        if task == "next_purchase":
            rate = h + buy_rate
            buys = buy_rate / rate * (1 - np.exp(-rate * horizon))
            out["purchase"] = np.where(alive, buys, 0.0)
        return out

    return oracle


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="session")
def world() -> World:
    """Large enough for a fair calibration test (~15,000 rows on the evaluation cutoff)."""
    return make_world(int(os.environ.get("CX_TEST_WORLD_CUSTOMERS", "18000")), seed=7)


@pytest.fixture(scope="session")
def small_world() -> World:
    return make_world(3000, seed=11)


HORIZONS = {"churn": 90, "next_purchase": 30, "unmet_needs": 30}


def make_config(**overrides):
    """Defaults for tests: one LightGBM thread (the machine's 2 cores are shared by other workers and
    OpenMP spin-waiting makes 2 threads slower under contention) and a small SHAP sample."""
    from training.config import TrainConfig

    settings = {"as_of": AS_OF.to_pydatetime(), "lightgbm": {"num_threads": 1}, "shap_sample": 300}
    return TrainConfig(**{**settings, **overrides})


@pytest.fixture(scope="session")
def quality(world):
    """Churn and next purchase trained (no MLflow) on the larger world, with the oracle."""
    from training.pipeline import train

    config = make_config(tasks=("churn", "next_purchase"))
    return train(None, world.tables, make_features_for(world.tables), config, make_oracle(world, HORIZONS))


@pytest.fixture(scope="session")
def kit() -> SimpleNamespace:
    """The world's helpers and constants for test modules (conftest is not importable by name)."""
    return SimpleNamespace(
        AS_OF=AS_OF,
        START=START,
        CATEGORIES=CATEGORIES,
        HORIZONS=HORIZONS,
        make_world=make_world,
        features_at=features_at,
        features_for=make_features_for,
        oracle=make_oracle,
        config=make_config,
    )
