"""Transactions-only data: churn and next purchase still train; unmet needs says why it cannot."""

from __future__ import annotations

import pytest

from training.pipeline import train


@pytest.fixture(scope="module")
def transactions_only(small_world, kit):
    tables = {"transactions": small_world.tables["transactions"]}
    messages: list[str] = []
    results = train(
        None,
        tables,
        kit.features_for(tables),
        kit.config(),
        progress=lambda stage, done, total, note="": note and messages.append(note),
    )
    return _Results(results, messages)


class _Results(dict):
    """Results by task, plus the progress messages heard while training."""

    def __init__(self, results, messages):
        super().__init__(results)
        self.messages = messages


def test_given_transactions_only_when_training_then_unmet_needs_is_unavailable_with_a_reason(
    transactions_only,
):
    needs = transactions_only["unmet_needs"]

    assert needs.status == "unavailable" and needs.fitted is None and needs.model_version is None
    assert "no events source" in needs.reason and "transactions-only" in needs.reason


@pytest.mark.parametrize("task, target", [("churn", "churn"), ("next_purchase", "purchase")])
def test_given_transactions_only_when_training_then_the_other_tasks_train_and_beat_the_heuristic(
    transactions_only, task, target
):
    result = transactions_only[task]

    assert result.status == "trained"
    features = result.fitted.bundle.feature_names
    assert not any(name.startswith(("engagement_", "service_", "profile_")) for name in features)
    model, heuristic = (result.fitted.metric(target, name, "auc") for name in ("model", "rf_heuristic"))
    assert model > heuristic - 0.01


def test_given_a_progress_callback_when_training_then_it_hears_every_task_and_the_refusal(transactions_only):
    assert "unmet_needs: unavailable" in transactions_only.messages
    assert {"churn: done", "next_purchase: done"} <= set(transactions_only.messages)
