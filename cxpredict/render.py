"""Everything the command line shows: rich tables and progress bars for the results that
``features``, ``training`` and ``serving`` return (their ``--json`` documents: ``cxpredict.documents``).
Nothing here computes or writes."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from contextlib import contextmanager

from rich.console import Console, Group
from rich.json import JSON
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from cxpredict import tasks as registry


class RichProgress:
    """``cxpredict.progress.Progress`` drawn as one rich bar per stage."""

    def __init__(self, bars: Progress) -> None:
        self.bars, self.ids = bars, {}

    def __call__(self, stage: str, done: int, total: int, note: str = "") -> None:
        if stage not in self.ids:
            self.ids[stage] = self.bars.add_task(note or stage, total=total)
        self.bars.update(self.ids[stage], completed=done, total=total, description=note or stage)


@contextmanager
def progress(console: Console) -> Iterator[RichProgress]:
    """Transient bars for long work, so the summaries after them stay readable; none when ``console``
    is not a terminal (a log or a pipe gets no bar residue)."""
    columns = (SpinnerColumn(), TextColumn("[progress.description]{task.description}"), BarColumn(),
               MofNCompleteColumn(), TimeElapsedColumn())  # fmt: skip
    with Progress(*columns, console=console, transient=True, disable=not console.is_terminal) as bars:
        yield RichProgress(bars)


def generated(summary) -> Table:
    grid = Table(title=f"generated {summary.customers:,} customers ({summary.churned:,} churned) "
                       f"in {summary.seconds:.1f} s")  # fmt: skip
    for header in ("source", "rows", "malformed", "duplicates", "identifier-only"):
        grid.add_column(header, justify="left" if header == "source" else "right")
    for source, rows in summary.rows.items():
        grid.add_row(source, f"{rows:,}", f"{sum(summary.malformed[source].values()):,}",
                     f"{summary.duplicates[source]:,}", f"{summary.identifier_only[source]:,}")  # fmt: skip
    history = summary.campaign_history
    if history:
        grid.caption = (f"campaign history: {history['waves']} waves, {history['decisions']:,} decisions "
                        f"({history['control']:,} control), {history['persuaded']:,} persuaded, "
                        f"{history['put_off']:,} put off")  # fmt: skip
    return grid


def ingest_report(report) -> Group:
    """Rows read/accepted/quarantined/duplicates and reconciliation per source, then identifier
    warnings and conversions, then quarantined rows by rule (so a reader sees at once what to fix
    upstream)."""
    table = Table(title=f"Ingest {report.version}", show_footer=False)
    numbers = ("read", "accepted", "quarantined", "duplicates", "erased", "linked")
    for name in ("source", *numbers, "reconciled"):
        table.add_column(name, justify="left" if name == "source" else "right")
    mismatched = {m.source for m in report.id_mismatches} | {m.other for m in report.id_mismatches}
    for s in report.sources.values():
        status = "[green]yes[/]" if s.reconciled else "[red]NO[/]"
        if s.reconciled and s.source in mismatched:
            status = "[yellow]rows yes, ids NO[/]"
        counts = (s.read, s.accepted, s.quarantined, s.duplicates, s.erased, sum(s.linked.values()))
        table.add_row(s.source, *(f"{n:,}" for n in counts), status)
    table.caption = (f"{report.identity.links:,} identifier links, "
                     f"{report.identity.ambiguous_identifiers:,} ambiguous identifiers, "
                     f"{report.profile_rows:,} customers in the profile, {report.seconds:.1f} s")  # fmt: skip
    rules = Table(title="Quarantined rows by rule")
    for name in ("source", "rule", "rows"):
        rules.add_column(name, justify="right" if name == "rows" else "left")
    for s in report.sources.values():
        for rule, n in sorted(s.rules.items(), key=lambda item: -item[1]):
            rules.add_row(s.source, rule, f"{n:,}")
    notes = [f"[yellow]warning:[/] {warning}" for warning in report.warnings]
    notes += [f"[dim]{s.source}: {column} converted from {kind} to text[/]"
              for s in report.sources.values() for column, kind in s.converted_ids.items()]  # fmt: skip
    return Group(table, *notes, rules) if rules.row_count else Group(table, *notes)


def features_built(build, materialized) -> Group:
    table = Table(title=f"Features as of {build.as_of:%Y-%m-%d}")
    table.add_column("family")
    table.add_column("features", justify="right")
    custom = set(build.custom_views)
    for family, count in build.features.items():
        table.add_row(f"{family} (custom SQL)" if family in custom else family, str(count))
    summary = (
        f"{build.customers:,} customers at the latest snapshot, {sum(build.features.values())} features; "
        f"snapshots built {build.snapshots_built}, kept {build.snapshots_skipped}; "
        f"{materialized.customers or 0:,} customers materialised online ({materialized.method} path); "
        f"{build.seconds + materialized.seconds:.1f} s"
    )
    return Group(table, summary, *_refused_views(build.refused))


def _refused_views(refused) -> list[str]:
    """One line per custom feature file that was not built: its file and the reason."""
    if not refused:
        return []
    lines = [f"[yellow]{len(refused)} custom feature file(s) refused (the other features were built):[/]"]
    return lines + [f"  {escape(str(refusal))}" for refusal in refused]


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def metrics_table(title: str, summary) -> Table:
    """Models as rows of ``training.metrics.summary_table``."""
    table = Table(title=title, title_justify="left")
    table.add_column("model")
    for column in summary.columns:
        table.add_column(column.replace("_", " "), justify="right")
    for model, row in summary.iterrows():
        cells = [f"{int(v):,}" if name == "rows" and v == v else _fmt(float(v)) for name, v in row.items()]
        table.add_row(str(model), *cells)
    return table


def trained_all(results: Mapping[str, object]) -> Group:
    return Group(*(trained(result) for result in results.values()))


def trained(result) -> object:
    from training.metrics import summary_table

    name = registry.get(result.task).cli_name
    if result.status != "trained":
        return f"[yellow]{name}: not trained[/yellow] — {result.reason}"
    parts: list[object] = [metrics_table(f"{name} — held-out cutoff", summary_table(result.metrics))]
    if result.model_version:
        parts.append(f"{result.model_name} version {result.model_version}: {result.decision}")
    parts += [f"[dim]{note}[/dim]" for note in (result.fitted.notes if result.fitted else [])]
    return Group(*parts)


def evaluated_all(results: Mapping[str, object]) -> Group:
    return Group(*(evaluated(result) for result in results.values()))


def evaluated(result) -> object:
    from training.metrics import summary_table

    name = registry.get(result.task).cli_name
    if result.status != "evaluated":
        return f"[yellow]{name}:[/yellow] {result.reason}"
    title = f"{name} version {result.version} (@{result.alias}) — cutoff {result.cutoff:%Y-%m-%d}"
    return metrics_table(title, summary_table(result.metrics))


def scored(summary) -> str:
    versions = ", ".join(f"{task} v{version}" for task, version in summary.versions.items())
    return (
        f"{summary.customers:,} customers scored into {summary.path} ({versions}); "
        f"{summary.not_scored:,} without profiling consent left unscored; {summary.seconds:.1f} s"
    )


def decided(result) -> Group:
    """A promotion or rollback: the comparison table (when the gate ran) and the decision."""
    style = "green" if result.exit_code == 0 else "red"
    table = [comparison_table(result)] if getattr(result, "checks", None) else []
    return Group(*table, f"[{style}]{result.decision}[/{style}]")


def comparison_table(result) -> Table:
    """Candidate vs champion: evaluation metrics, then every gate check with PASS/FAIL."""
    champion = f"champion v{result.champion_before}" if result.champion_before else "champion (none)"
    title = f"{result.model}: candidate v{result.candidate} vs {champion}"
    if result.evaluation_cutoff:
        title += f" on cutoff {result.evaluation_cutoff}"
    table = Table(title=title, title_justify="left")
    for column in ("", f"candidate v{result.candidate}", champion, "requirement", "result"):
        table.add_column(column)
    cand, champ = result.metrics.get("candidate", {}), result.metrics.get("champion", {})
    for name in ("auc", "ece", "brier", "log_loss", "pr_auc", "gini", "mae", "total_error", "rows"):
        if name in cand:
            digits = "{:,.0f}" if name == "rows" else "{:.4f}"
            other = digits.format(champ[name]) if name in champ else "–"
            table.add_row(name, digits.format(cand[name]), other, "", "")
    table.add_section()
    for check in result.checks:
        verdict = "[green]PASS[/green]" if check.passed else "[red]FAIL[/red]"
        table.add_row(check.name, check.candidate, check.champion, check.requirement, verdict)
    return table


def _num(value: object, digits: int = 3) -> str:
    return (
        "–"
        if value is None
        else f"{value:.{digits}f}"
        if isinstance(value, float)
        else f"{value:,}"
        if isinstance(value, int)
        else str(value)
    )


def versions_table(task: dict[str, object]) -> Table:
    table = Table(title=f"{task['task']} ({task['model']})", title_justify="left")
    columns = (
        "version",
        "aliases",
        "as of",
        "H",
        "rows train",
        "AUC | Gini",
        "logistic",
        "RF",
        "oracle",
        "ECE",
        "features",
        "data hash",
        "code",
        "last gate",
    )
    for column in columns:
        table.add_column(
            column, justify="right" if column not in ("aliases", "features", "last gate") else "left"
        )
    for row in task["versions"]:
        gate = row["last_gate"]
        table.add_row(
            row["version"],
            ", ".join(row["aliases"]),
            (row["as_of"] or "–")[:10],
            _num(row["horizon_days"]),
            _num(row["rows_train"]),
            _num(row["auc"] if row["auc"] is not None else row.get("gini")),
            _num(row["auc_logistic"]),
            _num(row["auc_rf_heuristic"]),
            _num(row["auc_oracle"]),
            _num(row["ece"]),
            f"{row['feature_service'] or '–'} ({_num(row['feature_count'])})",
            (row["data_hash"] or "–")[:10],
            (row["code_version"] or "–")[:8],
            "–"
            if not gate
            else ("passed" if gate.get("passed") else "refused: " + ", ".join(gate.get("failed", []))),
        )
    problems = [
        f"version {row['version']}: {row['problem']}" for row in task["versions"] if row.get("problem")
    ]
    if problems:
        table.caption = "[yellow]not usable[/yellow] " + "; ".join(problems)
        table.caption_justify = "left"
    return table


def history_table(task: dict[str, object]) -> Table:
    table = Table(title=f"{task['model']}: alias moves", title_justify="left")
    for column in ("#", "when (UTC)", "alias", "action", "from", "to", "actor", "forced", "reason"):
        table.add_column(column)
    for entry in task["history"]:
        table.add_row(
            str(entry["seq"]),
            entry["at"],
            entry["alias"],
            entry["action"],
            entry["from_version"] or "–",
            entry["to_version"] or "–",
            entry["actor"],
            "yes" if entry["forced"] else "",
            entry["reason"],
        )
    return table


def models(data: dict[str, object], history: bool) -> Group:
    parts: list[object] = []
    for task in data["tasks"]:
        if not task["versions"]:
            parts.append(f"[dim]{task['task']} ({task['model']}): no registered version[/dim]")
            continue
        parts.append(versions_table(task))
        if history:
            parts.append(history_table(task))
        parts += [f"[yellow]warning: {problem}[/yellow]" for problem in task["history_problems"]]
    return Group(*parts)


def _promotions(decisions: list) -> Group:
    return Group(*(decision if isinstance(decision, str) else decided(decision) for decision in decisions))


def _demo_scores(payload: tuple) -> Group:
    alias, summary = payload
    warning = [] if alias == "champion" else [
        "[yellow]not every task has a champion[/yellow]: the demo scores and serves the versions just trained "
        "(alias challenger)"
    ]  # fmt: skip
    return Group(*warning, scored(summary))


def _demo_server(found: dict) -> Group:
    server = found["server"]
    if not found["answered"]:
        return Group()
    lines: list[object] = []
    if not found["ready"]["ready"]:
        lines.append(f"[yellow]not ready:[/yellow] {'; '.join(found['ready']['reasons'])}")
    lines.append(f"POST {server.url}/predict {found['request']}  → {found['status']}")
    lines.append(JSON(found["answer"]))
    if "decide_answer" in found:
        lines.append(f"POST {server.url}/decide {found['decide_request']}  → {found['decide_status']}")
        lines.append(JSON(found["decide_answer"]))
    lines.append(f"\nAPI: {server.url}  docs: {server.url}/docs  health: {server.url}/readyz  metrics: "
                 f"{server.url}/metrics\nAPI keys: {found['key_file']}   server log: {server.log_path}   "
                 "[bold]Ctrl-C stops the server[/bold]")  # fmt: skip
    return Group(*lines)


def demo_step(kind: str, payload: object) -> object:
    """What one step of ``serving.demo.run_demo`` shows, by its kind."""
    shown = {
        "generated": generated,
        "ingest": ingest_report,
        "features": lambda built: features_built(*built),
        "trained": lambda results: Group(*(trained(result) for result in results)),
        "promoted": _promotions,
        "scored": _demo_scores,
        "serving": _demo_server,
    }
    return shown[kind](payload)


def quiet_libraries() -> None:
    """Feast and MLflow imported (they reset warning filters at import), then quietened: library
    chatter and artifact progress bars would bury the command's own tables."""
    import logging
    import os
    import warnings

    import features.store  # noqa: F401
    import mlflow  # noqa: F401

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
    for category in (DeprecationWarning, FutureWarning):
        warnings.filterwarnings("ignore", category=category)
    for message in ("On demand feature view is an experimental feature", r"fetch_arrow_table\(\) is deprecated",
                    ".*noload.*"):  # fmt: skip
        warnings.filterwarnings("ignore", message=message)


# --- right to erasure (``cxpredict forget``) ---------------------------------------------------------


def _erasure_counts(removed: Mapping[str, Mapping[str, int]]) -> Table:
    table = Table(show_header=True)
    table.add_column("place")
    table.add_column("removed")
    for place, counts in removed.items():
        table.add_row(place, ", ".join(f"{name} {n:,}" for name, n in counts.items()) or "-")
    return table


def forgotten(entries: list) -> Group:
    """What each finished request removed, place by place (digests only, never an identifier)."""
    parts: list[object] = []
    for entry in entries:
        parts.append(f"[bold]forgot {entry.customers:,} customer(s)[/bold] for request {entry.subject[:16]}… "
                     f"({entry.identifiers:,} identifier(s) given, {entry.not_found:,} not found; "
                     f"{entry.tombstones:,} tombstone(s); actor {entry.actor}"
                     + (f"; finished after {entry.resumed} interruption(s)" if entry.resumed else "") + ")")  # fmt: skip
        parts.append(_erasure_counts(entry.removed))
    return Group(*parts) if parts else Group("no erasure request was pending")


def erasure_audit(entries: list) -> Table:
    """The audit: one row per request (hashed subject, when, who, customers, rows removed)."""
    table = Table(title=f"Erasure audit ({len(entries)} request(s))")
    for name in ("subject", "requested", "completed", "actor", "customers", "not found", "removed"):
        table.add_column(name, justify="right" if name in ("customers", "not found", "removed") else "left")
    for e in entries:
        table.add_row(e.subject[:16] + "…", f"{e.requested_at:%Y-%m-%d %H:%M:%S}", f"{e.completed_at:%Y-%m-%d %H:%M:%S}",
                      e.actor, f"{e.customers:,}", f"{e.not_found:,}", f"{e.total:,}")  # fmt: skip
    return table


# ---- monitor and retrain ----------------------------------------------------------------------


def monitored(result) -> Group:
    """Per task: drifted features, score drift, realised performance against what was recorded."""
    table = Table(title=f"Monitor as of {result.as_of.date()}: {result.status.upper()}")
    for name in ("task", "version", "status", "features drifted", "largest distances", "scores drifted",
                 "realised AUC (recorded)", "realised ECE (recorded)", "realised Qini (recorded)"):  # fmt: skip
        table.add_column(name)
    for report in result.tasks.values():
        features = report.features
        top = sorted(features.columns, key=lambda c: -c.score)[:3] if features else []
        own = [row for row in report.performance if row["version"] == report.version]
        perf = own[-1] if own else None  # a replaced version's decay is in the notes below
        recorded = perf["at_promotion"] if perf else {}
        table.add_row(
            report.task,
            report.version,
            "[red]alert[/red]" if report.status == "alert" else "[green]healthy[/green]",
            f"{len(features.drifted)} of {len(features.columns)}" if features else "–",
            ", ".join(f"{c.column} {c.score:.2f}" for c in top) or "–",
            (", ".join(report.predictions.drifted) or "none") if report.predictions else "–",
            f"{_num(perf['auc'])} ({_num(recorded.get('auc'))})" if perf else "–",
            f"{_num(perf['ece'])} ({_num(recorded.get('ece'))})" if perf else "–",
            f"{_num(perf['qini'])} ({_num(recorded.get('qini'))})" if perf and "qini" in perf else "–",
        )
    lines: list[object] = [table]
    for report in result.tasks.values():
        lines += [f"[red]{report.task}:[/red] {reason}" for reason in report.reasons]
        lines += [f"[dim]{report.task}: {note}[/dim]" for note in report.notes]
    lines.append(f"report: {result.html_path}  summary: {result.json_path}  ({result.seconds:.1f} s)")
    return Group(*lines)


def retrained(result) -> Group:
    """What moved and why, per task."""
    table = Table(title=f"Retrain as of {result.as_of.date()} ({result.reason})")
    for name in ("task", "status", "champion before", "new version", "champion after", "moved", "why"):
        table.add_column(name, overflow="fold")
    for move in result.tasks.values():
        table.add_row(move.task, move.status, move.champion_before or "–", move.new_version or "–",
                      move.champion_after or "–", "[green]yes[/green]" if move.moved else "no", move.why)  # fmt: skip
    ingested = ", ".join(result.ingested) or "no new file"
    return Group(table, f"ingested: {ingested}; feature snapshots built: {result.snapshots_built}; "
                        f"{result.seconds:.1f} s")  # fmt: skip


def impact(report) -> Group:
    """Treated vs holdout per KPI, overall and per action, with the intervals."""
    counts = report.counts
    head = (
        f"{counts.get('decisions', 0):,} decisions ({counts.get('holdout_decisions', 0):,} holdout), "
        f"{counts.get('outcomes', 0):,} outcomes; {report.measured:,} customers measured over "
        f"{report.horizon_days} days, {report.pending:,} decisions still in their window (data to "
        f"{report.as_of:%Y-%m-%d})"
    )
    table = Table(title="impact: treated − holdout", title_justify="left")
    for column in ("scope", "KPI", "treated", "holdout", "lift", "95 % interval", "n treated / holdout"):
        table.add_column(column, justify="left" if column in ("scope", "KPI") else "right")
    for scope, lifts in [("all decisions", report.overall), *report.per_action.items()]:
        for kpi, lift in lifts.items():
            table.add_row(
                scope, kpi, _num(lift.treated), _num(lift.control), _num(lift.lift),
                f"[{_num(lift.low)}, {_num(lift.high)}]", f"{lift.n_treated:,} / {lift.n_control:,}",
            )  # fmt: skip
    parts = (
        [head, table] if report.overall else [head, "[yellow]no decision has a complete window yet[/yellow]"]
    )
    return Group(*parts, f"[dim]{report.report}[/dim]")


def simulated(report) -> Group:
    """The closed loop's summary: what it decided, the four policies' values, the bar, the impact."""
    actions = ", ".join(f"{name} {count:,}" for name, count in sorted(report.actions.items())) or "none"
    sources = ", ".join(f"{name} {count:,}" for name, count in sorted(report.uplift_source.items())) or "–"
    retrains = "; ".join(
        f"day {r['day']}: {', '.join(r['moved']) or 'no champion moved'}"
        + "".join(
            f" ({task} {why})" for task, why in r.get("tasks", {}).items() if why.startswith("unavailable")
        )
        for r in report.retrains
    )
    head = (
        f"{report.days} days ({report.start} … {report.end}), {report.customers:,} customers, seed "
        f"{report.seed}: {report.triggers:,} triggers, {report.decisions:,} decisions "
        f"({report.holdout_decisions:,} holdout); actions: {actions}; uplift from: {sources}; "
        f"{report.persuaded:,} persuaded, {report.put_off:,} put off, {report.outcomes:,} outcomes posted; "
        f"{report.refreshes} feature refreshes; retrains: {retrains or 'none'}"
    )
    table = Table(
        title="policy value: purchases caused per decision (true uplift of the actions taken)",
        title_justify="left",
    )
    for column in ("policy", "value", "95 % interval", "actions"):
        table.add_column(column, justify="left" if column == "policy" else "right")
    for policy in report.policies:
        table.add_row(policy.name, f"{policy.value:.4f}", f"[{policy.ci_low:.4f}, {policy.ci_high:.4f}]",
                      f"{policy.actions:,}")  # fmt: skip
    gap = "–" if report.gap_closed is None else f"{report.gap_closed:.0%}"
    bar = ", ".join(f"{name}: {'[green]met[/green]' if met else '[red]not met[/red]'}"
                    for name, met in report.bar.items())  # fmt: skip
    lines = [head, table, f"share of the way from random to the oracle: {gap}; bar: {bar or '–'}"]
    overall = report.impact.get("overall") or {}
    if overall:
        lifts = "; ".join(
            f"{kpi} {lift['lift']:+.4f} [{lift['low']:+.4f}, {lift['high']:+.4f}]"
            for kpi, lift in overall.items()
            if lift.get("lift") is not None
        )
        lines.append(f"measured impact, treated − holdout: {lifts}")
    return Group(*lines, f"[dim]{report.report}[/dim]")
