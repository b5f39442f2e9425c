"""The promotion gate for uplift models: Qini and the value of the policy each model implies.

Why its own checks: an uplift model has no label per customer to score (nobody is both treated and
not), so AUC and calibration do not apply. On the evaluation cutoff's logged decisions — the same
rows for candidate and champion — the gate compares

- the **Qini** coefficient, averaged over the actions both models estimate (per action on its
  treated rows and the control rows): the candidate fails when it is below the champion's beyond
  the noise (paired bootstrap over decisions; upper end of the difference below ``-auc_tolerance``);
  without a champion it must be above zero;
- the **policy value**, off-policy: each model's policy (per decision the action of largest
  predicted uplift when positive, else no action) valued from the logged decisions by
  self-normalised inverse propensity weighting. The candidate fails when its lower bound is below
  the logging policy's observed value (a policy that may be worse than what produced the log), or
  when it is below the champion's policy beyond the noise (paired bootstrap).
"""

from __future__ import annotations

from collections.abc import Sequence

import mlflow
import numpy as np
import pandas as pd

from training.tasks import uplift as U

LEVEL = 0.95


def actions_of(evaluation) -> dict[str, str]:
    """Action -> output column of an uplift model's effect heads (``ModelEvaluation.targets``)."""
    return dict(evaluation.targets)


def _qini_pooled(
    y: np.ndarray, arms: np.ndarray, predicted: dict[str, np.ndarray], actions: Sequence[str]
) -> float:
    values = []
    for action in actions:
        subset = np.isin(arms, [U.CONTROL, action])
        treated = arms[subset] == action
        if treated.all() or not treated.any():
            continue
        values.append(U.qini(y[subset], predicted[action][subset], treated))
    return float(np.mean(values)) if values else float("nan")


def _policy(predicted: dict[str, np.ndarray], actions: Sequence[str]) -> np.ndarray:
    """The arm the model's policy picks per decision (``uplift.policy_choice``; predictions by action)."""
    outputs = {U.output(a): values for a, values in predicted.items()}
    return U.policy_choice(outputs, actions, np.zeros(len(predicted[actions[0]])))[0]


def _snipw(y: np.ndarray, arms: np.ndarray, propensity: np.ndarray, chosen: np.ndarray) -> float:
    weight = (arms == chosen) / propensity
    return float(np.sum(weight * y) / np.sum(weight)) if np.sum(weight) > 0 else float("nan")


def evaluate_uplift(model, evaluation, evaluation_set, actions: Sequence[str], role: str) -> None:
    """Predict the evaluation decisions, fill ``evaluation.predictions`` (per action) and
    ``evaluation.result`` (``qini`` pooled over ``actions``, ``policy_value``, ``logging_value``,
    ``rows``) and log them into the active run with the prefix ``<role>.``."""
    from training.promotion import EvaluationResult, _as_caller_sends

    inputs = [name for name in evaluation.features if name in evaluation_set.features]
    predicted = model.predict(_as_caller_sends(evaluation_set.features[inputs]))
    targets = actions_of(evaluation)
    evaluation.predictions = {a: predicted[targets[a]].to_numpy(dtype=float) for a in actions}
    metrics = uplift_metrics(evaluation.predictions, evaluation_set, actions)
    mlflow.log_metrics({f"{role}.{k}": v for k, v in metrics.items() if np.isfinite(v)})
    evaluation.result = EvaluationResult(metrics=metrics, artifacts={})


def uplift_metrics(
    predictions: dict[str, np.ndarray], evaluation_set, actions: Sequence[str]
) -> dict[str, float]:
    """``qini`` pooled over ``actions``, the implied policy's ``policy_value`` (SNIPW), the logging
    policy's observed ``logging_value`` and ``rows``, on the evaluation decisions."""
    y, arms, propensity = _logged(evaluation_set)
    return {
        "qini": _qini_pooled(y, arms, predictions, actions),
        "policy_value": _snipw(y, arms, propensity, _policy(predictions, actions)),
        "logging_value": float(np.mean(y)) if len(y) else float("nan"),
        "rows": float(len(y)),
    }


def _logged(evaluation_set) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    labels = evaluation_set.labels
    arms = labels[U.ARM].to_numpy(dtype=object)
    propensity = U.logged_propensities(arms, labels[U.PROPENSITY].to_numpy(dtype=float))
    return labels[U.LABEL].to_numpy(dtype=float), arms, propensity


def _interval(values: np.ndarray) -> tuple[float, float]:
    tail = (1 - LEVEL) / 2
    finite = values[np.isfinite(values)]
    if not finite.size:
        return float("nan"), float("nan")
    return float(np.quantile(finite, tail)), float(np.quantile(finite, 1 - tail))


def uplift_checks(candidate, champion, evaluation_set, actions: Sequence[str], config) -> list:
    """The Qini and policy-value checks (see the module docstring), each a ``promotion.Check``."""
    from training.promotion import Check, _f

    y, arms, propensity = _logged(evaluation_set)
    cand, champ = candidate.result.metrics, champion.result.metrics if champion else {}
    chosen = _policy(candidate.predictions, actions)
    rng = np.random.default_rng(0)
    rows = np.arange(len(y))
    draws = [rng.choice(rows, len(rows)) for _ in range(config.bootstrap_resamples)]
    policy_low, _ = _interval(np.array([_snipw(y[r], arms[r], propensity[r], chosen[r]) for r in draws]))
    logging = cand["logging_value"]
    checks = []
    if champion is None:
        qini_passed = bool(np.isfinite(cand["qini"]) and cand["qini"] > 0)
        checks.append(Check("Qini", qini_passed, _f(cand["qini"]), "–", "above 0 (no champion to compare)"))
        policy_passed = bool(np.isfinite(policy_low) and policy_low >= logging)
        checks.append(Check("policy value (off-policy)", policy_passed, _f(cand["policy_value"]), "–",
                            "lower bound not below the logging policy's value",
                            f"SNIPW 95% lower bound {policy_low:.4f}, logging {logging:.4f}"))  # fmt: skip
        return checks
    other = _policy(champion.predictions, actions)
    qini_diff, value_diff = [], []
    for r in draws:
        qini_diff.append(_qini_pooled(y[r], arms[r], {a: candidate.predictions[a][r] for a in actions}, actions)
                         - _qini_pooled(y[r], arms[r], {a: champion.predictions[a][r] for a in actions}, actions))  # fmt: skip
        value_diff.append(
            _snipw(y[r], arms[r], propensity[r], chosen[r]) - _snipw(y[r], arms[r], propensity[r], other[r])
        )
    low, high = _interval(np.asarray(qini_diff))
    checks.append(Check("Qini", bool(np.isfinite(high) and high >= -config.auc_tolerance), _f(cand["qini"]),
                        _f(champ.get("qini")), f"difference not below -{config.auc_tolerance:g} beyond the noise",
                        f"candidate - champion {cand['qini'] - champ['qini']:+.4f}, 95% interval [{low:+.4f}, "
                        f"{high:+.4f}]"))  # fmt: skip
    v_low, v_high = _interval(np.asarray(value_diff))
    passed = bool(np.isfinite(policy_low) and policy_low >= logging and np.isfinite(v_high) and v_high >= 0)
    checks.append(Check("policy value (off-policy)", passed, _f(cand["policy_value"]), _f(champ.get("policy_value")),
                        "lower bound not below the logging policy's value; not below the champion's beyond the noise",
                        f"SNIPW 95% lower bound {policy_low:.4f}, logging {logging:.4f}; candidate - champion "
                        f"{cand['policy_value'] - champ['policy_value']:+.4f}, 95% interval [{v_low:+.4f}, "
                        f"{v_high:+.4f}]"))  # fmt: skip
    return checks


def shared_actions(candidate, champion, evaluation_set) -> list[str]:
    """Actions both models estimate that the evaluation decisions hold (treated rows present)."""
    logged = set(pd.unique(evaluation_set.labels[U.ARM])) - {U.CONTROL}
    found = [a for a in actions_of(candidate) if a in logged]
    return [a for a in found if champion is None or a in actions_of(champion)]
