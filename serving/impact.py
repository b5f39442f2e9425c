"""Impact of the decisions, measured against the holdout from what customers then did.

Why the holdout: customers in it were picked by a hash of their id, not by their risk, so their
outcomes are what the decided customers would have done without any action. The comparison is
intent-to-treat: every decision outside the holdout (with or without an action) against every
holdout decision, so the figure is the effect of running the policy. Per action, customers who were
given the action are compared with holdout customers the policy would have given it to (the log
keeps their ``withheld`` actions), so both sides passed the same eligibility and ranking.

Outcomes come from the canonical data, not from ``/outcomes`` reports (which only treated customers
can send): within ``horizon_days`` after the decision, *purchase* (any purchase), *retention* (any
purchase or engagement event) and *revenue* (net spend: purchases minus returns). A customer counts
once: their first decision since ``since`` whose window the data already covers; decisions whose
window is still open are counted as pending. Intervals are bootstrap percentiles of the difference
of means, the two groups resampled independently.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
import pandas as pd

from training import labels as L

KPIS = ("purchase", "retention", "revenue")
DEFAULT_HORIZON_DAYS = 30
RESAMPLES = 2_000


@dataclass(frozen=True)
class Lift:
    """Treated minus control for one KPI, with a bootstrap interval."""

    treated: float
    control: float
    lift: float
    low: float
    high: float
    n_treated: int
    n_control: int

    def as_dict(self) -> dict[str, float | int]:
        return {key: _finite(value) for key, value in self.__dict__.items()}


def _finite(value):
    return None if isinstance(value, float) and not np.isfinite(value) else value


@dataclass
class ImpactReport:
    as_of: pd.Timestamp
    horizon_days: int
    counts: Mapping[str, int]
    outcomes_by_kind: Mapping[str, int]
    measured: int
    pending: int
    overall: dict[str, Lift] = field(default_factory=dict)
    per_action: dict[str, dict[str, Lift]] = field(default_factory=dict)
    report: str | None = None
    run_id: str | None = None

    def as_dict(self) -> dict[str, object]:
        return {
            **{key: int(self.counts.get(key, 0)) for key in ("decisions", "holdout_decisions", "outcomes")},
            "outcomes_by_kind": dict(self.outcomes_by_kind),
            "as_of": self.as_of.isoformat(),
            "horizon_days": self.horizon_days,
            "measured_customers": self.measured,
            "pending_decisions": self.pending,
            "overall": {kpi: lift.as_dict() for kpi, lift in self.overall.items()},
            "per_action": {
                action: {kpi: lift.as_dict() for kpi, lift in kpis.items()}
                for action, kpis in self.per_action.items()
            },
            "report": self.report,
            "run_id": self.run_id,
        }


def _resampled_means(rng: np.random.Generator, group: np.ndarray) -> np.ndarray:
    """``RESAMPLES`` bootstrap means of ``group``, drawn a block of rows at a time so memory stays
    bounded for a large decision log (the draws are the same as in one block)."""
    block = max(1, 4_000_000 // max(len(group), 1))
    return np.concatenate(
        [
            rng.choice(group, size=(min(block, RESAMPLES - start), len(group)), replace=True).mean(axis=1)
            for start in range(0, RESAMPLES, block)
        ]
    )


def difference(treated: np.ndarray, control: np.ndarray, seed: int = 0, level: float = 0.95) -> Lift:
    """Mean(treated) - mean(control) with a percentile bootstrap interval."""
    treated, control = np.asarray(treated, dtype=float), np.asarray(control, dtype=float)
    if len(treated) == 0 or len(control) == 0:
        nan = float("nan")
        return Lift(nan, nan, nan, nan, nan, len(treated), len(control))
    rng = np.random.default_rng(seed)
    means = [_resampled_means(rng, group) for group in (treated, control)]
    spread = means[0] - means[1]
    tail = (1 - level) / 2
    return Lift(
        float(treated.mean()),
        float(control.mean()),
        float(treated.mean() - control.mean()),
        float(np.quantile(spread, tail)),
        float(np.quantile(spread, 1 - tail)),
        len(treated),
        len(control),
    )


def outcomes_after(
    decided: pd.DataFrame, tables: Mapping[str, pd.DataFrame | None], horizon_days: int
) -> pd.DataFrame:
    """Per decision row (customer_id, at): purchase, retention (0/1) and revenue in (at, at + H];
    ``tables`` as ``training.labels.visible`` returns them (object ids, UTC times)."""
    entity = pd.DataFrame(
        {
            "customer_id": decided["customer_id"].astype(object).to_numpy(),
            "event_timestamp": pd.to_datetime(decided["at"], utc=True)
            .astype("datetime64[us, UTC]")
            .reset_index(drop=True),
        }
    )
    end = entity["event_timestamp"] + pd.Timedelta(days=horizon_days)
    transactions = tables["transactions"]
    bought = L.first_after(entity, L.purchases({"transactions": transactions}))["at"]
    purchase = (bought.notna() & (bought <= end)).to_numpy()
    active = purchase.copy()
    events = tables.get("events")
    if events is not None and len(events):
        seen = L.first_after(entity, events[["customer_id", "timestamp"]])["at"]
        active |= (seen.notna() & (seen <= end)).to_numpy()
    revenue = L.window_sums(entity, L.signed_amounts(transactions), end)
    return pd.DataFrame(
        {"purchase": purchase.astype(float), "retention": active.astype(float), "revenue": revenue},
        index=decided.index,
    )


def measure(
    decisions: Sequence[Mapping],
    tables: Mapping[str, pd.DataFrame | None],
    as_of: pd.Timestamp,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    seed: int = 0,
) -> tuple[dict[str, Lift], dict[str, dict[str, Lift]], int, int]:
    """(overall lifts, lifts per action, customers measured, decisions pending) — pure."""
    frame = pd.DataFrame(
        list(decisions), columns=["decision_id", "customer_id", "at", "holdout", "actions", "withheld"]
    )
    if frame.empty:
        return {}, {}, 0, 0
    frame["at"] = pd.to_datetime(frame["at"], utc=True)
    complete = frame["at"] + pd.Timedelta(days=horizon_days) <= as_of
    pending = int((~complete).sum())
    first = frame.loc[complete].sort_values("at", kind="stable").drop_duplicates("customer_id")
    if first.empty:
        return {}, {}, 0, pending
    results = outcomes_after(first, L.visible(tables, as_of), horizon_days)
    held = first["holdout"].to_numpy(dtype=bool)
    overall = {
        kpi: difference(results[kpi].to_numpy()[~held], results[kpi].to_numpy()[held], seed) for kpi in KPIS
    }
    names = sorted({a for column in ("actions", "withheld") for row in first[column] for a in row})
    per_action = {}
    for action in names:
        given = first["actions"].map(lambda chosen, a=action: a in chosen).to_numpy() & ~held
        kept = first["withheld"].map(lambda chosen, a=action: a in chosen).to_numpy() & held
        per_action[action] = {
            kpi: difference(results[kpi].to_numpy()[given], results[kpi].to_numpy()[kept], seed)
            for kpi in KPIS
        }
    return overall, per_action, len(first), pending


def plot(overall: Mapping[str, Lift], per_action: Mapping[str, Mapping[str, Lift]]):
    """Lift with its interval per KPI, overall and per action (one panel per KPI)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    groups = {"all decisions": overall, **per_action}
    figure = Figure(figsize=(4 * len(KPIS), 0.5 * len(groups) + 2), layout="constrained")
    FigureCanvasAgg(figure)
    for axes, kpi in zip(figure.subplots(1, len(KPIS), sharey=True), KPIS, strict=True):
        names = [name for name, lifts in groups.items() if kpi in lifts and np.isfinite(lifts[kpi].lift)]
        lifts = [groups[name][kpi] for name in names]
        y = np.arange(len(names))
        axes.errorbar(
            [lift.lift for lift in lifts],
            y,
            xerr=[[lift.lift - lift.low for lift in lifts], [lift.high - lift.lift for lift in lifts]],
            fmt="o",
            capsize=3,
        )
        axes.axvline(0.0, color="grey", linewidth=0.5)
        axes.set_yticks(y, names)
        axes.set(title=f"{kpi}: treated − holdout", xlabel="lift (95 % interval)")
    return figure


def impact_workspace(
    ws,
    since: datetime | None = None,
    horizon_days: int = DEFAULT_HORIZON_DAYS,
    log_to_mlflow: bool = True,
) -> ImpactReport:
    """``cxpredict impact``: the workspace's decision log against its canonical data, written to
    ``reports/impact-<as-of>.json`` and ``.png`` and logged as a run of the ``cx-impact`` experiment
    (aggregates only: no customer id leaves this function)."""
    import json

    from features.decision_log import DecisionLog
    from training.data import load_tables

    log = DecisionLog.of(ws)
    try:
        decisions = log.decisions(since)
        counts = {
            "decisions": len(decisions),
            "holdout_decisions": sum(1 for d in decisions if d["holdout"]),
        }
        by_kind = log.outcome_counts(since)
    finally:
        log.close()
    counts["outcomes"] = sum(by_kind.values())
    tables = load_tables(ws, pd.Timestamp.now(tz="UTC"))
    as_of = pd.to_datetime(tables["transactions"]["timestamp"], utc=True).max()
    overall, per_action, measured, pending = measure(decisions, tables, as_of, horizon_days)
    report = ImpactReport(as_of, horizon_days, counts, by_kind, measured, pending, overall, per_action)
    ws.reports_dir.mkdir(parents=True, exist_ok=True)
    stem = ws.reports_dir / f"impact-{as_of.date()}"
    figure = plot(overall, per_action) if overall else None
    if figure is not None:
        figure.savefig(stem.with_suffix(".png"))
    report.report = str(stem.with_suffix(".json"))
    if log_to_mlflow:
        report.run_id = _log_run(ws, report, figure)
    stem.with_suffix(".json").write_text(json.dumps(report.as_dict(), indent=1))
    return report


def _log_run(ws, report: ImpactReport, figure) -> str:
    import mlflow

    from training.tracking import ensure_experiment, resolve_tracking, tracking_session

    target = resolve_tracking(ws)
    with tracking_session(target) as client:
        experiment_id = ensure_experiment(client, "cx-impact", target.artifact_root)
        with mlflow.start_run(experiment_id=experiment_id, run_name=f"impact-{report.as_of.date()}") as run:
            mlflow.log_params({"horizon_days": report.horizon_days, "as_of": report.as_of.isoformat()})
            metrics = {key: float(value) for key, value in report.counts.items()}
            for scope, lifts in [("overall", report.overall), *report.per_action.items()]:
                for kpi, lift in lifts.items():
                    for name in ("lift", "low", "high", "treated", "control"):
                        value = getattr(lift, name)
                        if np.isfinite(value):
                            metrics[f"{scope}.{kpi}.{name}"] = value
            mlflow.log_metrics(metrics)
            if figure is not None:
                mlflow.log_figure(figure, "impact.png")
            mlflow.log_dict({k: v for k, v in report.as_dict().items() if k != "run_id"}, "impact.json")
            return run.info.run_id
