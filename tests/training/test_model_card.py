"""Model cards: slice metrics, the flagged gap, and the rendered Markdown (pure, no MLflow)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest

from training import metrics as m
from training.model_card import (
    CardInputs,
    largest_gap,
    render,
    slice_labels,
    slice_metrics,
)


def scored_population(rows: int = 4000, seed: int = 3) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Predictions informative everywhere except in region 'west', where they are noise."""
    rng = np.random.default_rng(seed)
    features = pd.DataFrame(
        {
            "profile_region": rng.choice(np.array(["north", "south", "west"], dtype=object), rows),
            "profile_age": rng.uniform(18, 80, rows),
            "profile_acquisition_channel": rng.choice(
                np.array(["organic", "paid", None], dtype=object), rows
            ),
        }
    )
    features.loc[:19, "profile_region"] = "islands"  # a tiny slice, below the reporting minimum
    risk = rng.normal(size=rows)
    y = (rng.uniform(size=rows) < 1 / (1 + np.exp(-2 * risk))).astype(int)
    p = 1 / (1 + np.exp(-2 * risk))
    west = (features["profile_region"] == "west").to_numpy()
    p[west] = rng.uniform(size=west.sum())
    return features, y, p


def test_given_ages_when_banding_then_edges_fall_in_the_upper_band_and_missing_is_unknown():
    features = pd.DataFrame({"profile_age": [17, 25, 34.9, 35, 64, 65, np.nan]})

    bands = slice_labels(features)["age band"].tolist()

    assert bands == ["<25", "25-34", "25-34", "35-44", "55-64", "65+", "unknown"]


def test_given_scored_rows_when_slicing_then_each_slice_matches_metrics_on_its_own_rows():
    features, y, p = scored_population()

    table = slice_metrics(features, y, p)

    north = table.loc[(table["dimension"] == "region") & (table["slice"] == "north")].iloc[0]
    mask = (features["profile_region"] == "north").to_numpy()
    assert north["rows"] == mask.sum()
    assert north["auc"] == pytest.approx(m.auc(y[mask], p[mask]))
    assert north["ece"] == pytest.approx(m.expected_calibration_error(y[mask], p[mask]))
    assert north["positive_rate"] == pytest.approx(y[mask].mean())
    assert list(dict.fromkeys(table["dimension"])) == ["region", "age band", "acquisition channel"]
    ages = table.loc[table["dimension"] == "age band", "slice"].tolist()
    assert ages == ["<25", "25-34", "35-44", "45-54", "55-64", "65+"]
    assert "unknown" in set(table.loc[table["dimension"] == "acquisition channel", "slice"])
    for dimension, rows in table.groupby("dimension"):
        assert rows["rows"].sum() == len(y), dimension


def test_given_a_tiny_slice_when_slicing_then_it_is_suppressed_without_metrics():
    features, y, p = scored_population()

    table = slice_metrics(features, y, p, min_rows=50)

    islands = table.loc[table["slice"] == "islands"].iloc[0]
    assert islands["suppressed"] and islands["rows"] == 20
    assert islands[["positive_rate", "mean_predicted", "auc", "ece"]].isna().all()


def test_given_one_region_with_noise_predictions_when_finding_the_largest_gap_then_it_names_that_region():
    features, y, p = scored_population()

    gap = largest_gap(slice_metrics(features, y, p))

    assert gap.dimension == "region" and gap.worst == "west"
    assert gap.worst_auc == pytest.approx(0.5, abs=0.06) and gap.size > 0.2


def test_given_no_reportable_pair_when_finding_the_gap_then_there_is_none():
    features = pd.DataFrame({"profile_region": ["north"] * 100})
    rng = np.random.default_rng(0)

    assert largest_gap(slice_metrics(features, rng.integers(0, 2, 100), rng.uniform(size=100))) is None


def card_inputs(slices: pd.DataFrame, features: list[str]) -> CardInputs:
    metrics = pd.DataFrame(
        [
            ("churn", "model", "auc", 0.81),
            ("churn", "model", "ece", 0.012),
            ("churn", "logistic", "auc", 0.77),
            ("churn", "rf_heuristic", "auc", 0.72),
            ("churn", "oracle", "auc", 0.84),
            ("churn", "model", "best_iteration", 55.0),
        ],
        columns=["target", "model", "metric", "value"],
    )
    return CardInputs(
        task="churn",
        model_name="cx-churn",
        version="7",
        run_id="0123abcd",
        as_of="2025-09-01T00:00:00+00:00",
        horizon_days=90,
        cutoffs_train=["2025-01-01", "2025-02-01"],
        cutoff_valid="2025-03-01",
        cutoff_test="2025-04-01",
        rows={"train": 1200, "valid": 600, "test": 610},
        label_definition="no purchase and no engagement in (t, t+H]",
        feature_service="churn",
        features=features,
        data_hash="feedbeef",
        code_version="0123456789abcdef",
        metrics=metrics,
        primary="churn",
        slices=slices,
        notes=["a note from training"],
    )


def test_given_card_inputs_when_rendering_then_every_section_and_the_flagged_gap_are_present():
    features, y, p = scored_population()
    slices = slice_metrics(features, y, p)

    text = render(card_inputs(slices, ["days_since_last_purchase", *features.columns]))

    for heading in (
        "# Model card: cx-churn version 7",
        "## Purpose and intended use",
        "## Data window",
        "## Features",
        "## Metrics on the held-out cutoff",
        "## Calibration",
        "## Metrics by slice",
        "## Known limitations",
    ):
        assert heading in text
    assert "| churn | model | 0.810 |" in text and "| churn | oracle | 0.840 |" in text
    assert "best_iteration" not in text
    assert "![Reliability diagram](plots/calibration.png)" in text
    assert re.search(
        r"\*\*Largest gap \(flagged\):\*\* region: .* for `west` .*exceeds the warning level", text
    )
    assert "| region | islands | 20 | – | – | – | – | yes |" in text
    assert "2025-01-01, 2025-02-01" in text and "1,200 / 600 / 610" in text
    assert "- a note from training" in text


def test_given_a_model_without_age_or_channel_when_rendering_then_the_limitation_says_so():
    features, y, p = scored_population()
    only_region = features[["profile_region"]]

    text = render(card_inputs(slice_metrics(only_region, y, p), ["profile_region"]))

    assert "No slice metrics by age band, acquisition channel: the feature is not in the data." in text
    assert "acquisition channel |" not in text
