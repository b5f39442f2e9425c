"""Evaluation plots as matplotlib figures (object API, Agg canvas: no display, thread-safe).

Every plot shows held-out data only and never carries a customer identifier.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from sklearn.metrics import roc_curve

from training.metrics import auc, calibration_curve
from training.models import BinaryEvaluation, UpliftEvaluation

MODEL_STYLES = {"model": "-", "logistic": "--", "rf_heuristic": ":", "oracle": "-.", "risk_targeting": ":"}


def _figure(width: float = 5.5, height: float = 4.5) -> tuple[Figure, object]:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure, figure.add_subplot()


def roc(evaluations: Sequence[BinaryEvaluation]) -> Figure:
    """ROC curves of the model and its baselines (and oracle) per target, each labelled with its AUC."""
    figure, axes = _figure()
    for evaluation in evaluations:
        if not 0 < evaluation.y.sum() < len(evaluation.y):
            continue
        for name, probability in evaluation.predictions.items():
            if len(evaluations) > 1 and name != "model":
                continue
            fpr, tpr, _ = roc_curve(evaluation.y, probability)
            label = evaluation.target if len(evaluations) > 1 else name
            label = f"{label} (AUC {auc(evaluation.y, probability):.3f})"
            axes.plot(fpr, tpr, MODEL_STYLES.get(name, "-"), label=label)
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    axes.set(xlabel="false positive rate", ylabel="true positive rate", title="ROC (held-out cutoff)")
    axes.legend(loc="lower right", fontsize="small")
    return figure


def calibration(evaluation: BinaryEvaluation, bins: int = 10) -> Figure:
    """Reliability diagram over equal-frequency bins."""
    figure, axes = _figure()
    for name, probability in evaluation.predictions.items():
        predicted, observed = calibration_curve(evaluation.y, probability, bins)
        axes.plot(predicted, observed, MODEL_STYLES.get(name, "-"), marker="o", markersize=3, label=name)
    axes.plot([0, 1], [0, 1], color="grey", linewidth=0.5)
    axes.set(
        xlabel="mean predicted probability", ylabel="observed rate", title=f"Calibration: {evaluation.target}"
    )
    axes.legend(loc="upper left", fontsize="small")
    return figure


def lift(evaluation: BinaryEvaluation, deciles: int = 10) -> Figure:
    """Lift per score decile (decile 1 = highest scores)."""
    figure, axes = _figure()
    base = evaluation.y.mean()
    width = 0.8 / max(len(evaluation.predictions), 1)
    for offset, (name, probability) in enumerate(evaluation.predictions.items()):
        order = np.argsort(-probability, kind="stable")
        rates = np.array([evaluation.y[group].mean() for group in np.array_split(order, deciles)])
        heights = rates / base if base else rates
        axes.bar(np.arange(1, deciles + 1) + offset * width, heights, width, label=name)
    axes.axhline(1.0, color="grey", linewidth=0.5)
    axes.set(xlabel="score decile", ylabel="lift", title=f"Lift: {evaluation.target}")
    axes.legend(fontsize="small")
    return figure


def deciles(evaluation, groups: int = 10) -> Figure:
    """Mean actual and mean predicted value per decile of each model's prediction (1 = highest)."""
    figure, axes = _figure()
    axes.plot(
        np.arange(1, groups + 1),
        [
            evaluation.y[g].mean()
            for g in np.array_split(np.argsort(-evaluation.predictions["model"], kind="stable"), groups)
        ],
        "k-",
        label="actual (model's deciles)",
    )
    for name, prediction in evaluation.predictions.items():
        order = np.argsort(-prediction, kind="stable")
        axes.plot(
            np.arange(1, groups + 1),
            [prediction[g].mean() for g in np.array_split(order, groups)],
            "o--",
            label=f"predicted: {name}",
        )
    axes.set(
        xlabel="decile of prediction",
        ylabel=f"mean {evaluation.target}",
        title=f"Deciles: {evaluation.target}",
    )
    axes.legend(fontsize="small")
    return figure


def qini(evaluations: Sequence[UpliftEvaluation]) -> Figure:
    """Qini curves per action on the held-out cutoff: extra purchases (per targeted row, relative to
    control) as a share of the rows is targeted in each ranking's order; random targeting is the
    straight line to the right end."""
    import warnings

    from sklift.metrics import qini_curve

    figure, axes = _figure(6.5, 4.5)
    for index, evaluation in enumerate(evaluations):
        color = f"C{index}"
        n = len(evaluation.y)
        for name, score in evaluation.scores.items():
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                x, gain = qini_curve(evaluation.y, score, evaluation.treated)
            axes.plot(np.asarray(x) / n, np.asarray(gain) / n, MODEL_STYLES.get(name, "--"), color=color,
                      label=f"{evaluation.target}: {name}", linewidth=1.2 if name == "model" else 0.9)  # fmt: skip
            if name == "model":
                axes.plot([0, 1], [0, gain[-1] / n], color=color, linewidth=0.6, alpha=0.6)
    axes.set(xlabel="share of customers targeted", ylabel="extra purchases per customer", title="Qini curves")
    axes.legend(fontsize="x-small", ncol=2)
    return figure


def importance(table: pd.DataFrame, top: int = 20) -> Figure:
    """Global importance: gain share and mean |SHAP| of the top features."""
    rows = table.head(top).iloc[::-1]
    figure = Figure(figsize=(9, 0.3 * len(rows) + 1.5), layout="constrained")
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2, sharey=True)
    left.barh(rows["feature"], rows["gain_share"])
    left.set(xlabel="share of split gain", title="Gain")
    right.barh(rows["feature"], rows["mean_abs_shap"])
    right.set(xlabel="mean |SHAP| (raw score)", title="SHAP")
    return figure


def shap_summary(contributions: np.ndarray, X: pd.DataFrame, top: int = 15, seed: int = 0) -> Figure:
    """Beeswarm-style summary: one row per feature, points = rows' SHAP values, colour = feature
    value rank (grey for categoricals and missing values)."""
    names = list(X.columns)
    values = contributions[:, : len(names)]
    order = np.argsort(-np.abs(values).mean(axis=0))[:top][::-1]
    figure = Figure(figsize=(7, 0.35 * len(order) + 1.5), layout="constrained")
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    jitter = np.random.default_rng(seed).uniform(-0.3, 0.3, len(values))
    for position, column in enumerate(order):
        feature = X.iloc[:, column]
        colour = np.full(len(feature), np.nan)
        if not isinstance(feature.dtype, pd.CategoricalDtype):
            colour = feature.rank(pct=True).to_numpy()
        known = ~np.isnan(colour)
        axes.scatter(values[~known, column], position + jitter[~known], s=3, color="lightgrey")
        axes.scatter(
            values[known, column],
            position + jitter[known],
            s=3,
            c=colour[known],
            cmap="coolwarm",
            vmin=0,
            vmax=1,
        )
    axes.set_yticks(range(len(order)), [names[column] for column in order])
    axes.axvline(0, color="grey", linewidth=0.5)
    axes.set(xlabel="SHAP value (raw score; colour: low -> high feature value)", title="SHAP summary")
    return figure
