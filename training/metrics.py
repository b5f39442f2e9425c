"""Evaluation metrics as pure functions of arrays (no I/O, no models).

Expected calibration error uses EQUAL-FREQUENCY bins (each bin holds about n/bins rows, ordered by
predicted probability), which stays meaningful when predictions crowd near 0 or 1. Lift in the top
decile = positive rate among the 10% highest scores / overall positive rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score

EPSILON = 1e-12


def _both_classes(y: np.ndarray) -> bool:
    return 0 < y.sum() < len(y)


def auc(y: np.ndarray, p: np.ndarray) -> float:
    """ROC AUC; NaN when only one class is present."""
    y = np.asarray(y)
    return float(roc_auc_score(y, p)) if _both_classes(y) else float("nan")


def pr_auc(y: np.ndarray, p: np.ndarray) -> float:
    """Average precision (area under the precision-recall curve); NaN when no positive."""
    y = np.asarray(y)
    return float(average_precision_score(y, p)) if y.sum() > 0 else float("nan")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """Row-weighted mean |mean prediction - positive rate| over equal-frequency bins of p."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    if len(y) == 0:
        return float("nan")
    order = np.argsort(p, kind="stable")
    groups = np.array_split(order, min(bins, len(y)))
    gaps = np.array([abs(p[g].mean() - y[g].mean()) for g in groups])
    sizes = np.array([len(g) for g in groups])
    return float((gaps * sizes).sum() / sizes.sum())


def calibration_curve(y: np.ndarray, p: np.ndarray, bins: int = 10) -> tuple[np.ndarray, np.ndarray]:
    """(mean prediction, positive rate) per equal-frequency bin, for reliability plots."""
    order = np.argsort(np.asarray(p), kind="stable")
    groups = np.array_split(order, min(bins, len(order)))
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    return np.array([p[g].mean() for g in groups]), np.array([y[g].mean() for g in groups])


def lift_at(y: np.ndarray, p: np.ndarray, fraction: float = 0.1) -> float:
    """Positive rate in the top ``fraction`` by score over the overall positive rate."""
    y = np.asarray(y, dtype=float)
    base = y.mean() if len(y) else 0.0
    if base == 0:
        return float("nan")
    top = max(1, int(np.ceil(fraction * len(y))))
    order = np.argsort(-np.asarray(p), kind="stable")[:top]
    return float(y[order].mean() / base)


def binary_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    """AUC, PR-AUC, log loss, Brier, ECE (10 equal-frequency bins), top-decile lift, base rate."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(p, dtype=float), EPSILON, 1 - EPSILON)
    return {
        "auc": auc(y, p),
        "pr_auc": pr_auc(y, p),
        "log_loss": float(log_loss(y, p, labels=[0, 1])) if len(y) else float("nan"),
        "brier": float(brier_score_loss(y, p)) if len(y) else float("nan"),
        "ece": expected_calibration_error(y, p),
        "lift_top_decile": lift_at(y, p, 0.1),
        "positive_rate": float(y.mean()) if len(y) else float("nan"),
        "rows": float(len(y)),
    }


def mae(y: np.ndarray, prediction: np.ndarray) -> float:
    y = np.asarray(y, dtype=float)
    return float(np.abs(y - np.asarray(prediction, dtype=float)).mean()) if len(y) else float("nan")


def interval_coverage(y: np.ndarray, low: np.ndarray, high: np.ndarray) -> float:
    """Share of true values inside [low, high]."""
    y = np.asarray(y, dtype=float)
    inside = (y >= np.asarray(low, dtype=float)) & (y <= np.asarray(high, dtype=float))
    return float(inside.mean()) if len(y) else float("nan")


def top_k_accuracy(true_labels: np.ndarray, ranked_labels: np.ndarray) -> float:
    """Share of rows whose true label is among that row's ranked labels (n x k array)."""
    true_labels = np.asarray(true_labels, dtype=object)
    ranked = np.asarray(ranked_labels, dtype=object).reshape(len(true_labels), -1)
    return float((ranked == true_labels[:, None]).any(axis=1).mean()) if len(true_labels) else float("nan")


def with_oracle(model: Mapping[str, float], oracle: Mapping[str, float]) -> dict[str, float]:
    """Oracle metrics prefixed ``oracle_`` plus ``auc_ratio_to_oracle`` = model AUC / oracle AUC."""
    out = {f"oracle_{name}": value for name, value in oracle.items() if name not in ("rows", "positive_rate")}
    out["auc_ratio_to_oracle"] = float(model["auc"] / oracle["auc"]) if oracle.get("auc") else float("nan")
    return out


def binary_targets(metrics: pd.DataFrame) -> list[str]:
    """Targets of a metrics table that have AUCs (binary heads)."""
    return sorted(metrics.loc[metrics["metric"] == "auc", "target"].unique())


def summary_table(
    metrics: pd.DataFrame, models: Sequence[str] = ("model", "rf_heuristic", "logistic", "btyd", "oracle")
) -> pd.DataFrame:
    """Model vs baselines vs oracle on the binary targets (means over targets, e.g. over needs):
    rows = models present, columns auc, pr_auc, ece, brier, rows and the AUC ratio to the oracle."""
    if not binary_targets(metrics) and (metrics["metric"] == "gini").any():
        return continuous_summary(metrics, (*models, "run_rate"))
    binary = metrics.loc[metrics["target"].isin(binary_targets(metrics))]
    wide = binary.pivot_table(index="model", columns="metric", values="value", aggfunc="mean")
    wide = wide.reindex([name for name in models if name in wide.index])
    table = wide.reindex(columns=["auc", "pr_auc", "ece", "brier", "rows"])
    if "oracle" in table.index:
        table["auc_ratio_to_oracle"] = table["auc"] / table.loc["oracle", "auc"]
    return table


def continuous_summary(metrics: pd.DataFrame, models: Sequence[str]) -> pd.DataFrame:
    """Model vs baselines on the continuous targets (those with a Gini): gini, mae, total error, rows."""
    targets = metrics.loc[metrics["metric"] == "gini", "target"].unique()
    rows = metrics.loc[metrics["target"].isin(targets)]
    wide = rows.pivot_table(index="model", columns="metric", values="value", aggfunc="mean")
    wide = wide.reindex([name for name in models if name in wide.index])
    return wide.reindex(columns=["gini", "mae", "total_error", "rows"])


def _grouped(p: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row order by score and the start of each run of equal scores (ties share a rank)."""
    order = np.argsort(p, kind="stable")
    sorted_p = p[order]
    starts = np.flatnonzero(np.r_[True, sorted_p[1:] != sorted_p[:-1]])
    return order, starts


def _weighted_aucs(y: np.ndarray, grouped: tuple[np.ndarray, np.ndarray], weights: np.ndarray) -> np.ndarray:
    """AUC under each row of ``weights`` (resamples x rows), ties counted half."""
    order, starts = grouped
    w = weights[:, order]
    positives = np.add.reduceat(w * y[order], starts, axis=1)
    negatives = np.add.reduceat(w * (1 - y[order]), starts, axis=1)
    below = np.cumsum(negatives, axis=1) - negatives
    wins = np.sum(positives * (below + 0.5 * negatives), axis=1)
    return wins / (positives.sum(axis=1) * negatives.sum(axis=1))


def bootstrap_auc_difference(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """AUC(a) - AUC(b) on the same rows, with a bootstrap interval over rows (customers).

    Poisson(1) weights resample every row the same way for both scores, so the interval is of the
    paired difference: a difference whose interval holds 0 is within the noise of this sample.
    Returns ``diff``, ``low``, ``high`` (NaN when y has a single class).
    """
    y = np.asarray(y, dtype=np.float64)
    if not _both_classes(y):
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan")}
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    rng = np.random.default_rng(seed)
    ga, gb = _grouped(a), _grouped(b)
    diffs = []
    chunk = max(1, 4_000_000 // max(len(y), 1))
    for start in range(0, resamples, chunk):
        weights = rng.poisson(1.0, size=(min(chunk, resamples - start), len(y))).astype(np.float64)
        diffs.append(_weighted_aucs(y, ga, weights) - _weighted_aucs(y, gb, weights))
    spread = np.concatenate(diffs)
    spread = spread[np.isfinite(spread)]
    tail = (1 - level) / 2
    return {
        "diff": auc(y, a) - auc(y, b),
        "low": float(np.quantile(spread, tail)),
        "high": float(np.quantile(spread, 1 - tail)),
    }


def _weighted_ginis(y: np.ndarray, order: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """Gini of ``y`` ranked by ``order`` (highest score first) under each row of ``weights``: twice
    the area between the cumulative share of y and the diagonal, trapezoid rule."""
    w = weights[:, order]
    wy = w * y[order]
    total_w, total_y = w.sum(axis=1, keepdims=True), wy.sum(axis=1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        share_y = (np.cumsum(wy, axis=1) - wy / 2) / total_y
        area = (share_y * w).sum(axis=1) / total_w[:, 0]
    return 2 * area - 1


def normalized_gini(y: np.ndarray, prediction: np.ndarray) -> float:
    """Gini of the ranking by ``prediction`` over the Gini of the perfect ranking (by y itself):
    1 ranks the biggest spenders first, 0 is no better than random. NaN when y sums to 0."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 or not np.sum(y) > 0:
        return float("nan")
    ones = np.ones((1, len(y)))
    by_model = _weighted_ginis(y, np.argsort(-np.asarray(prediction, dtype=float), kind="stable"), ones)
    best = _weighted_ginis(y, np.argsort(-y, kind="stable"), ones)
    return float(by_model[0] / best[0])


def bootstrap_gini_difference(
    y: np.ndarray, a: np.ndarray, b: np.ndarray, resamples: int = 200, seed: int = 0, level: float = 0.95
) -> dict[str, float]:
    """Normalised Gini(a) - Gini(b) on the same rows with a paired bootstrap interval over rows
    (Poisson(1) weights, as ``bootstrap_auc_difference``); ``b`` constant gives Gini(a) - 0."""
    y = np.asarray(y, dtype=np.float64)
    if len(y) < 2 or not np.sum(y) > 0:
        return {"diff": float("nan"), "low": float("nan"), "high": float("nan")}
    rng = np.random.default_rng(seed)
    orders = [np.argsort(-np.asarray(s, dtype=float), kind="stable") for s in (a, b, y)]
    constant_b = np.ptp(np.asarray(b, dtype=float)) == 0
    diffs = []
    chunk = max(1, 4_000_000 // max(len(y), 1))
    for start in range(0, resamples, chunk):
        weights = rng.poisson(1.0, size=(min(chunk, resamples - start), len(y))).astype(np.float64)
        best = _weighted_ginis(y, orders[2], weights)
        first = _weighted_ginis(y, orders[0], weights) / best
        second = 0.0 if constant_b else _weighted_ginis(y, orders[1], weights) / best
        diffs.append(first - second)
    spread = np.concatenate(diffs)
    spread = spread[np.isfinite(spread)]
    tail = (1 - level) / 2
    point_b = 0.0 if constant_b else normalized_gini(y, b)
    return {
        "diff": normalized_gini(y, a) - point_b,
        "low": float(np.quantile(spread, tail)),
        "high": float(np.quantile(spread, 1 - tail)),
    }


def total_error(y: np.ndarray, prediction: np.ndarray) -> float:
    """Relative error of the predicted total: sum(prediction) / sum(y) - 1 (0: the total is exact)."""
    total = float(np.sum(y))
    return float(np.sum(prediction) / total - 1) if total > 0 else float("nan")


def decile_table(y: np.ndarray, prediction: np.ndarray, bins: int = 10) -> pd.DataFrame:
    """Rows ranked by prediction in ``bins`` equal-frequency groups (1 = highest predictions): rows,
    mean predicted and mean actual per group — how well the ranking and the level hold together."""
    y = np.asarray(y, dtype=float)
    prediction = np.asarray(prediction, dtype=float)
    rank = np.argsort(np.argsort(-prediction, kind="stable"), kind="stable")
    group = (rank * bins // max(len(y), 1)) + 1
    frame = pd.DataFrame({"decile": group, "predicted": prediction, "actual": y})
    table = frame.groupby("decile").agg(
        rows=("actual", "size"), mean_predicted=("predicted", "mean"), mean_actual=("actual", "mean")
    )
    return table.reset_index()


def spend_metrics(y: np.ndarray, prediction: np.ndarray) -> dict[str, float]:
    """What a spend prediction is judged on: MAE, normalised Gini, total error, rows, mean actual."""
    return {
        "mae": mae(y, prediction),
        "gini": normalized_gini(y, prediction),
        "total_error": total_error(y, prediction),
        "rows": float(len(y)),
        "mean_actual": float(np.mean(y)) if len(y) else float("nan"),
    }
