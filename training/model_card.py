"""Model cards: one Markdown document per registered version (``model_card.md`` in its run).

A card says what the model is for, what data window and features it saw, how it scores on the
held-out cutoff against its baselines and the oracle, how calibrated it is (linking the run's
``plots/calibration.png``), how it behaves by slice (region, age band, acquisition channel, from the
profile features) with the largest gap flagged, and its known limitations.

Privacy: a card holds aggregates only. Slices with fewer than ``min_rows`` rows are reported as
suppressed (no metrics), so no small group of customers can be singled out; no identifier is ever
read here.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from cxpredict import tasks as registry
from training import metrics as m

if TYPE_CHECKING:
    from training.datasets import TaskDataset
    from training.models import FittedTask

SLICE_FEATURES: dict[str, str] = {
    "region": "profile_region",
    "age band": "profile_age",
    "acquisition channel": "profile_acquisition_channel",
}
AGE_EDGES = [-np.inf, 25, 35, 45, 55, 65, np.inf]
AGE_LABELS = ["<25", "25-34", "35-44", "45-54", "55-64", "65+"]
UNKNOWN = "unknown"
MIN_SLICE_ROWS = 50
GAP_WARNING = 0.05

NOT_INTENDED = (
    "Not intended for decisions with legal or similarly significant effects on a person (credit, "
    "pricing for an individual, eligibility) without human review; customers without profiling "
    "consent are not scored by the service."
)
GENERIC_LIMITATIONS = (
    (
        "Trained on past cutoffs; behaviour changes (seasonality, new channels, campaigns) after the as-of "
        "date are not reflected until retraining."
    ),
    (
        "Profile attributes (region, acquisition channel, loyalty tier) are current values without "
        "history, so older cutoffs see today's values."
    ),
    "Metrics come from one held-out cutoff; small slices have wide uncertainty.",
)


@dataclass(frozen=True)
class Gap:
    """The widest AUC spread between two reported slices of one dimension."""

    dimension: str
    best: str
    best_auc: float
    worst: str
    worst_auc: float

    @property
    def size(self) -> float:
        return self.best_auc - self.worst_auc


def slice_labels(features: pd.DataFrame) -> dict[str, pd.Series]:
    """Slice membership per available dimension: the category, or the age band; missing -> unknown."""
    out = {}
    for dimension, column in SLICE_FEATURES.items():
        if column not in features:
            continue
        values = features[column]
        if column == "profile_age":
            age = pd.to_numeric(values, errors="coerce")
            banded = pd.cut(age, AGE_EDGES, labels=AGE_LABELS, right=False)
            out[dimension] = banded.astype(object).where(age.notna(), UNKNOWN)
        else:
            text = values.astype(object)
            out[dimension] = text.where(text.notna(), UNKNOWN).astype(str)
    return out


def slice_metrics(
    features: pd.DataFrame, y: np.ndarray, p: np.ndarray, min_rows: int = MIN_SLICE_ROWS
) -> pd.DataFrame:
    """Rows, positive rate, mean prediction, AUC and ECE per slice of each available dimension.
    Slices below ``min_rows`` keep only their size and are marked ``suppressed``."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(p, dtype=float)
    frames = []
    for dimension, labels in slice_labels(features).items():
        frame = pd.DataFrame({"slice": labels.to_numpy(), "y": y, "p": p})
        grouped = frame.groupby("slice", sort=True)
        table = grouped.agg(rows=("y", "size"), positive_rate=("y", "mean"), mean_predicted=("p", "mean"))
        table["auc"] = grouped[["y", "p"]].apply(lambda g: m.auc(g["y"].to_numpy(), g["p"].to_numpy()))
        table["ece"] = grouped[["y", "p"]].apply(
            lambda g: m.expected_calibration_error(g["y"].to_numpy(), g["p"].to_numpy())
        )
        table = table.reset_index().assign(dimension=dimension)
        frames.append(table)
    columns = ["dimension", "slice", "rows", "positive_rate", "mean_predicted", "auc", "ece", "suppressed"]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    age_rank = {label: rank for rank, label in enumerate([*AGE_LABELS, UNKNOWN])}
    dimension_rank = {dimension: rank for rank, dimension in enumerate(SLICE_FEATURES)}
    order = pd.DataFrame(
        {
            "dimension": table["dimension"].map(dimension_rank),
            "age": table["slice"].map(age_rank).where(table["dimension"] == "age band", 0),
            "slice": table["slice"],
        }
    )
    table = table.loc[order.sort_values(["dimension", "age", "slice"]).index].reset_index(drop=True)
    table["suppressed"] = table["rows"] < min_rows
    table.loc[table["suppressed"], ["positive_rate", "mean_predicted", "auc", "ece"]] = np.nan
    return table[columns]


def spend_slices(
    features: pd.DataFrame, y: np.ndarray, p: np.ndarray, min_rows: int = MIN_SLICE_ROWS
) -> pd.DataFrame:
    """Rows, mean actual and mean predicted spend and normalised Gini per slice (continuous targets)."""
    frames = []
    for dimension, labels in slice_labels(features).items():
        frame = pd.DataFrame(
            {"slice": labels.to_numpy(), "y": np.asarray(y, float), "p": np.asarray(p, float)}
        )
        grouped = frame.groupby("slice", sort=True)
        table = grouped.agg(rows=("y", "size"), mean_actual=("y", "mean"), mean_predicted=("p", "mean"))
        table["gini"] = grouped[["y", "p"]].apply(
            lambda g: m.normalized_gini(g["y"].to_numpy(), g["p"].to_numpy())
        )
        frames.append(table.reset_index().assign(dimension=dimension))
    columns = ["dimension", "slice", "rows", "mean_actual", "mean_predicted", "gini"]
    if not frames:
        return pd.DataFrame(columns=columns)
    table = pd.concat(frames, ignore_index=True)
    table.loc[table["rows"] < min_rows, ["mean_actual", "mean_predicted", "gini"]] = np.nan
    return table[columns]


def largest_gap(table: pd.DataFrame) -> Gap | None:
    """The dimension whose reported slices differ most in AUC (None with fewer than two such slices)."""
    usable = table.loc[~table["suppressed"].astype(bool) & np.isfinite(table["auc"].astype(float))]
    best_gap: Gap | None = None
    for dimension, rows in usable.groupby("dimension", sort=False):
        if len(rows) < 2:
            continue
        top, bottom = rows.loc[rows["auc"].idxmax()], rows.loc[rows["auc"].idxmin()]
        gap = Gap(
            str(dimension), str(top["slice"]), float(top["auc"]), str(bottom["slice"]), float(bottom["auc"])
        )
        if best_gap is None or gap.size > best_gap.size:
            best_gap = gap
    return best_gap


def _fmt(value: object, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, (bool, np.bool_)):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "–" if not np.isfinite(value) else f"{float(value):.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured Markdown table of a small summary frame."""
    header = "| " + " | ".join(str(column) for column in frame.columns) + " |"
    rule = "|" + "|".join("---" for _ in frame.columns) + "|"
    body = ["| " + " | ".join(_fmt(value) for value in row) + " |" for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *body])


@dataclass
class CardInputs:
    """Everything a card shows; built from a training run (``tracking.log_task``) or by hand."""

    task: str
    model_name: str
    version: str | None
    run_id: str
    as_of: str
    horizon_days: int
    cutoffs_train: Sequence[str]
    cutoff_valid: str
    cutoff_test: str
    rows: Mapping[str, int]
    label_definition: str
    feature_service: str
    features: Sequence[str]
    data_hash: str
    code_version: str
    metrics: pd.DataFrame  # long: target, model, metric, value (held-out cutoff)
    primary: str
    slices: pd.DataFrame
    notes: Sequence[str] = field(default_factory=list)
    selection: str = ""
    """Which candidate family won on the validation cutoff, and by how much."""
    calibration_plot: str = "plots/calibration.png"
    generated_at: str = ""
    gate_metric: str = "auc"


def metrics_comparison(metrics: pd.DataFrame) -> pd.DataFrame:
    """Binary targets x models (model, baselines, oracle) with AUC, PR-AUC, ECE, Brier, lift."""
    wanted = ["auc", "pr_auc", "ece", "brier", "lift_top_decile"]
    rows = metrics.loc[metrics["metric"].isin(wanted)]
    if rows.empty:
        return pd.DataFrame(columns=["target", "model", *wanted])
    wide = rows.pivot_table(index=["target", "model"], columns="metric", values="value", aggfunc="first")
    order = {"model": 0, "logistic": 1, "rf_heuristic": 2, "btyd": 3, "oracle": 4}
    wide = wide.reindex(columns=[name for name in wanted if name in wide.columns]).reset_index()
    wide["_order"] = wide["model"].map(order).fillna(9)
    return wide.sort_values(["target", "_order"]).drop(columns="_order").reset_index(drop=True)


def _opening(card: CardInputs) -> list[str]:
    """The sections every card opens with: title, purpose and use, the data window, the features."""
    spec = registry.get(card.task)
    purpose, use = spec.purpose, spec.intended_use
    title = f"{card.model_name} version {card.version}" if card.version else card.model_name
    return [
        f"# Model card: {title}",
        "",
        f"Task `{card.task}`, training run `{card.run_id}`"
        + (f", generated {card.generated_at}." if card.generated_at else "."),
        "",
        "## Purpose and intended use",
        "",
        purpose,
        "",
        f"Intended use: {use}",
        "",
        NOT_INTENDED,
        "",
        *([f"Model: {card.selection}.", ""] if card.selection else []),
        "## Data window",
        "",
        markdown_table(
            pd.DataFrame(
                {
                    "as of": [card.as_of],
                    "horizon (days)": [card.horizon_days],
                    "training cutoffs": [", ".join(card.cutoffs_train)],
                    "validation cutoff": [card.cutoff_valid],
                    "held-out cutoff": [card.cutoff_test],
                    "rows train / valid / test": [
                        " / ".join(f"{int(card.rows.get(k, 0)):,}" for k in ("train", "valid", "test"))
                    ],
                    "data hash": [card.data_hash],
                    "code version": [card.code_version[:12]],
                }
            )
        ),
        "",
        f"Label: {card.label_definition}.",
        "",
        "## Features",
        "",
        f"Feature service `{card.feature_service}`, {len(card.features)} features: "
        + ", ".join(f"`{name}`" for name in card.features)
        + ".",
        "",
    ]


def _season_line(ratio: float | None, card: CardInputs) -> list[str]:
    """What the seasonal carry-over did to the held-out window, when the model has one."""
    if ratio is None or not np.isfinite(ratio):
        return []
    return [
        (
            f"Calibrated on the window from {card.cutoff_valid}; a year earlier, the window from "
            f"{card.cutoff_test} had {_fmt(ratio)} times its seasonal activity, and the model carries "
            "that ratio to every window it predicts (`training.season`)."
        ),
        "",
    ]


def render(card: CardInputs, gap_warning: float = GAP_WARNING) -> str:
    """The card as Markdown."""
    spec = registry.get(card.task)
    if card.gate_metric != "auc":
        return _render_continuous(card)
    comparison = metrics_comparison(card.metrics)
    primary = card.metrics.loc[(card.metrics["target"] == card.primary) & (card.metrics["model"] == "model")]
    values = dict(zip(primary["metric"], primary["value"]))
    gap = largest_gap(card.slices)
    lines = [
        *_opening(card),
        "## Metrics on the held-out cutoff",
        "",
        (
            "Model against the recency/frequency heuristic (`rf_heuristic`), the logistic baseline and, on "
            "generated data, the oracle (the best achievable given the latent truth)."
        ),
        "",
        markdown_table(comparison) if len(comparison) else "No binary metrics were recorded.",
        "",
        "## Calibration",
        "",
        (
            f"Expected calibration error of `{card.primary}` (10 equal-frequency bins): "
            f"{_fmt(values.get('ece', np.nan))}."
        ),
        "",
        *_season_line(values.get("seasonal_ratio"), card),
        f"![Reliability diagram]({card.calibration_plot})",
        "",
        "## Metrics by slice",
        "",
    ]
    if card.slices.empty:
        lines += ["No slice features (region, age, acquisition channel) were available to this model.", ""]
    else:
        shown = card.slices.rename(
            columns={"positive_rate": "positive rate", "mean_predicted": "mean predicted"}
        )
        lines += [
            f"Target `{card.primary}`. Slices with fewer than {MIN_SLICE_ROWS} rows are suppressed.",
            "",
            markdown_table(shown),
            "",
        ]
        if gap is None:
            lines += ["Largest gap: fewer than two reportable slices in every dimension.", ""]
        else:
            flag = f" **exceeds the warning level of {gap_warning:.2f}**" if gap.size > gap_warning else ""
            lines += [
                (
                    f"**Largest gap (flagged):** {gap.dimension}: AUC {gap.best_auc:.3f} for `{gap.best}` vs "
                    f"{gap.worst_auc:.3f} for `{gap.worst}` (gap {gap.size:.3f}){flag}."
                ),
                "",
            ]
    missing = [dimension for dimension, column in SLICE_FEATURES.items() if column not in card.features]
    limitations = [*spec.limitations, *GENERIC_LIMITATIONS, *card.notes]
    if missing:
        limitations.append("No slice metrics by " + ", ".join(missing) + ": the feature is not in the data.")
    lines += ["## Known limitations", "", *[f"- {item}" for item in limitations], ""]
    return "\n".join(lines)


def from_training(
    fitted: FittedTask,
    dataset: TaskDataset,
    *,
    model_name: str,
    version: str | None,
    run_id: str,
    label_definition: str,
    feature_service: str,
    data_hash: str,
    code_version: str,
    generated_at: str = "",
    selection: str = "",
) -> CardInputs:
    """Card inputs of a freshly fitted task: slices of the primary target on the held-out cutoff."""
    primary = next(
        (e for e in [*fitted.evaluations, *fitted.regressions] if e.target == fitted.primary), None
    )
    slicing = slice_metrics if fitted.evaluations else spend_slices
    plan = dataset.plan.describe()
    return CardInputs(
        task=fitted.task,
        model_name=model_name,
        version=version,
        run_id=run_id,
        as_of=plan["as_of"],
        horizon_days=dataset.plan.horizon_days,
        cutoffs_train=plan["cutoffs_train"].split(","),
        cutoff_valid=plan["cutoff_valid"],
        cutoff_test=plan["cutoff_test"],
        rows={"train": len(dataset.train), "valid": len(dataset.valid), "test": len(dataset.test)},
        label_definition=label_definition,
        feature_service=feature_service,
        features=list(dataset.feature_names),
        data_hash=data_hash,
        code_version=code_version,
        metrics=fitted.metrics,
        primary=fitted.primary,
        slices=slicing(dataset.test.X, primary.y, primary.predictions["model"])
        if primary
        else pd.DataFrame(),
        notes=list(fitted.notes),
        selection=selection,
        generated_at=generated_at,
        gate_metric=fitted.gate_metric,
    )


def _render_continuous(card: CardInputs) -> str:
    """The card of a task with a continuous target (spend): ranking (Gini), error and level."""
    spec = registry.get(card.task)
    rows = card.metrics.loc[card.metrics["target"] == card.primary]
    wanted = ["gini", "mae", "total_error", "mean_actual"]
    wide = rows.loc[rows["metric"].isin(wanted)].pivot_table(
        index="model", columns="metric", values="value", aggfunc="first"
    )
    wide = wide.reindex(columns=[name for name in wanted if name in wide.columns]).reset_index()
    deciles = card.metrics.loc[card.metrics["target"].str.startswith("decile_")]
    deciles = deciles.pivot_table(
        index="target", columns="metric", values="value", aggfunc="first"
    ).reset_index()
    coverage = rows.loc[(rows["model"] == "model") & (rows["metric"] == "interval_coverage"), "value"]
    lines = [
        *_opening(card),
        "## Metrics on the held-out cutoff",
        "",
        "Normalised Gini (1: the biggest spenders ranked first; 0: random), mean absolute error, and the "
        "relative error of the predicted total, for the model, the run rate and BG/NBD × Gamma-Gamma.",
        "",
        markdown_table(wide),
        "",
        f"Share of actual spend inside the 10-90 % interval: {_fmt(coverage.iloc[0] if len(coverage) else np.nan)}.",
        "",
        "Mean predicted and actual spend by decile of prediction (1 = highest):",
        "",
        markdown_table(deciles) if len(deciles) else "No deciles were recorded.",
        "",
        "## Metrics by slice",
        "",
        markdown_table(card.slices)
        if len(card.slices)
        else "No slice features were available to this model.",
        "",
        "## Known limitations",
        "",
        *[f"- {item}" for item in [*spec.limitations, *GENERIC_LIMITATIONS, *card.notes]],
        "",
    ]
    return "\n".join(lines)
