"""Rolling cutoffs, and the guarantee that a label window never overlaps its features."""

from __future__ import annotations

import pandas as pd
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from training.cutoffs import plan_cutoffs
from training.tasks import churn
from training.pipeline import build_dataset


def test_given_as_of_and_horizon_when_planning_then_latest_complete_cutoff_is_held_out():
    plan = plan_cutoffs("2025-09-01", horizon_days=90, n_cutoffs=6)

    assert plan.test == pd.Timestamp("2025-06-01", tz="UTC")  # 2025-06-03 floored to the 1st
    assert plan.valid == pd.Timestamp("2025-05-01", tz="UTC")
    assert [t.strftime("%Y-%m-%d") for t in plan.train] == [
        "2025-01-01",
        "2025-02-01",
        "2025-03-01",
        "2025-04-01",
    ]


def test_given_no_alignment_when_planning_then_cutoffs_step_monthly_from_as_of_minus_h():
    plan = plan_cutoffs("2025-09-15", horizon_days=30, n_cutoffs=3, align_to_month_start=False)

    assert [t.strftime("%Y-%m-%d") for t in plan.all] == ["2025-06-16", "2025-07-16", "2025-08-16"]


def test_given_fewer_than_three_cutoffs_when_planning_then_it_is_refused():
    with pytest.raises(ValueError, match="at least 3"):
        plan_cutoffs("2025-09-01", 30, n_cutoffs=2)


@settings(max_examples=60, deadline=None, database=None)
@given(
    as_of=st.datetimes(min_value=pd.Timestamp("2020-01-01"), max_value=pd.Timestamp("2030-01-01")),
    horizon=st.integers(1, 365),
    n=st.integers(3, 12),
    align=st.booleans(),
)
def test_given_any_plan_then_every_window_ends_by_as_of_and_splits_are_ordered(as_of, horizon, n, align):
    plan = plan_cutoffs(as_of, horizon, n, align_to_month_start=align)

    assert all(t + pd.Timedelta(days=horizon) <= plan.as_of for t in plan.all)
    assert list(plan.all) == sorted(set(plan.all)) and len(plan.all) == n
    assert plan.test == max(plan.all) and plan.valid == sorted(plan.all)[-2]


def test_given_a_world_when_building_a_dataset_then_rows_sit_on_plan_cutoffs_within_as_of(small_world, kit):
    config = kit.config()
    seen_entities = []

    def spying_features_for(entity_df, task):
        seen_entities.append(entity_df.copy())
        return kit.features_for(small_world.tables)(entity_df, task)

    dataset, _ = build_dataset("churn", small_world.tables, spying_features_for, config)

    stamps = pd.concat([dataset.split(name).keys for name in ("train", "valid", "test")])["event_timestamp"]
    assert set(stamps) == set(dataset.plan.all)
    assert (stamps + pd.Timedelta(days=90) <= kit.AS_OF).all()
    assert set(seen_entities[0]["event_timestamp"]) == set(dataset.plan.all)
    assert set(dataset.test.keys["event_timestamp"]) == {dataset.plan.test}
    assert set(dataset.valid.keys["event_timestamp"]) == {dataset.plan.valid}


FACT_TIME = {"transactions": "timestamp", "events": "timestamp", "support_tickets": "opened_at"}


def _before(tables, t):
    """The tables with only the facts strictly before t; signups are kept."""
    out = {}
    for source, table in tables.items():
        column = FACT_TIME.get(source)
        out[source] = table if column is None else table.loc[table[column] < t]
    return out


def _by_customer(split):
    return pd.concat([split.keys, split.X], axis=1).sort_values("customer_id", ignore_index=True)


def _after(tables, t):
    """The tables with only the facts strictly after t; signups are kept so the same customers are known."""
    out = {}
    for source, table in tables.items():
        column = FACT_TIME.get(source)
        out[source] = table if column is None else table.loc[table[column] > t]
    return out


def test_given_the_held_out_cutoff_then_its_features_ignore_the_future_and_its_labels_ignore_the_past(
    small_world, kit
):
    """Features of rows at t are the same when every fact at or after t is deleted; labels of rows at
    t are the same when every fact at or before t is deleted: the two windows never overlap."""
    tables = small_world.tables
    config = kit.config()
    dataset, _ = build_dataset("churn", tables, kit.features_for(tables), config)
    t = dataset.plan.test

    past = _before(tables, t)
    past_only, _ = build_dataset("churn", past, kit.features_for(past), config)
    pd.testing.assert_frame_equal(_by_customer(dataset.test), _by_customer(past_only.test))

    labels_full = churn.labels(tables, [t], 90, kit.AS_OF).frame.sort_values("customer_id", ignore_index=True)
    labels_future = churn.labels(_after(tables, t), [t], 90, kit.AS_OF).frame
    pd.testing.assert_frame_equal(labels_full, labels_future.sort_values("customer_id", ignore_index=True))
    assert 0.05 < labels_full["churn"].mean() < 0.95  # both classes present: the comparison has teeth
