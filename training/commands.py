"""Plain functions behind ``cxpredict promote | models | rollback`` (the CLI only parses options).

Each takes the workspace (or a tracking URI; ``MLFLOW_TRACKING_URI`` wins, see
``tracking.resolve_tracking``), prints to a rich ``Console`` and returns a structured result whose
``exit_code`` the CLI passes on: promote and rollback exit 1 when they refuse, and nothing moves.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
from mlflow.exceptions import MlflowException
from rich.console import Console, Group
from rich.table import Table

from cxpredict.settings import Workspace
from training.promotion import (
    EvaluationSetFor,
    FeatureCheck,
    GateConfig,
    PromotionError,
    PromotionResult,
    RollbackResult,
    columns_present,
    promote,
    rollback,
)
from training.registry import snapshot
from training.tracking import MODEL_CARD, MODEL_NAMES, resolve_tracking, tracking_session

WorkspaceRef = Workspace | Path | str | None


def comparison_table(result: PromotionResult) -> Table:
    """Candidate vs champion: evaluation metrics, then every gate check with PASS/FAIL."""
    champion = f"champion v{result.champion_before}" if result.champion_before else "champion (none)"
    title = f"{result.model}: candidate v{result.candidate} vs {champion}"
    if result.evaluation_cutoff:
        title += f" on cutoff {result.evaluation_cutoff}"
    table = Table(title=title, title_justify="left")
    for column in ("", f"candidate v{result.candidate}", champion, "requirement", "result"):
        table.add_column(column)
    cand, champ = result.metrics.get("candidate", {}), result.metrics.get("champion", {})
    for name in ("auc", "ece", "brier", "log_loss", "pr_auc", "rows"):
        if name in cand:
            digits = "{:,.0f}" if name == "rows" else "{:.4f}"
            other = digits.format(champ[name]) if name in champ else "–"
            table.add_row(name, digits.format(cand[name]), other, "", "")
    table.add_section()
    for check in result.checks:
        verdict = "[green]PASS[/green]" if check.passed else "[red]FAIL[/red]"
        table.add_row(check.name, check.candidate, check.champion, check.requirement, verdict)
    return table


def promote_command(
    ws: WorkspaceRef,
    task: str,
    version: str | None = None,
    force: bool = False,
    reason: str | None = None,
    tolerance: float = 0.01,
    ece_bound: float = 0.02,
    evaluation_set: EvaluationSetFor | None = None,
    feature_check: FeatureCheck = columns_present,
    actor: str | None = None,
    console: Console | None = None,
) -> PromotionResult:
    """``cxpredict promote TASK [--version V] [--force --reason TEXT]``: prints the comparison
    table and the decision. ``evaluation_set`` is required (the lead wires canonical tables + Feast
    via ``promotion.evaluation_sets``)."""
    if evaluation_set is None:
        raise PromotionError("promote needs an evaluation set (canonical tables and the feature store)")
    if task not in MODEL_NAMES:
        raise PromotionError(f"unknown task {task!r}; one of {', '.join(MODEL_NAMES)}")
    console = console or Console()
    config = GateConfig(auc_tolerance=tolerance, ece_bound=ece_bound)
    result = promote(
        resolve_tracking(ws),
        task,
        evaluation_set,
        version,
        force=force,
        reason=reason,
        actor=actor,
        config=config,
        feature_check=feature_check,
    )
    if result.checks:
        console.print(comparison_table(result))
    style = "green" if result.exit_code == 0 else "red"
    console.print(f"[{style}]{result.decision}[/{style}]")
    return result


def rollback_command(
    ws: WorkspaceRef,
    task: str,
    reason: str | None = None,
    actor: str | None = None,
    console: Console | None = None,
) -> RollbackResult:
    """``cxpredict rollback TASK``: champion back to the previous champion."""
    if task not in MODEL_NAMES:
        raise PromotionError(f"unknown task {task!r}; one of {', '.join(MODEL_NAMES)}")
    result = rollback(resolve_tracking(ws), task, reason=reason, actor=actor)
    style = "green" if result.moved else "red"
    (console or Console()).print(f"[{style}]{result.decision}[/{style}]")
    return result


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
        "AUC",
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
            _num(row["auc"]),
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


def models_command(
    ws: WorkspaceRef,
    as_json: bool = False,
    history: bool = False,
    tasks: list[str] | None = None,
    console: Console | None = None,
) -> dict[str, object]:
    """``cxpredict models [--json] [--history]``: every task with its versions, aliases, key
    metrics, as-of, training rows and lineage; ``--history`` adds the audit trail of alias moves."""
    console = console or Console()
    with tracking_session(resolve_tracking(ws)) as client:
        data = snapshot(client, MODEL_NAMES, tasks)
    if not history:
        for task in data["tasks"]:
            task.pop("history")
    if as_json:
        console.out(json.dumps(data, indent=2, default=str), highlight=False)
        return data
    parts = []
    for task in data["tasks"]:
        if not task["versions"]:
            parts.append(f"[dim]{task['task']} ({task['model']}): no registered version[/dim]")
            continue
        parts.append(versions_table(task))
        if history:
            parts.append(history_table(task))
        for problem in task["history_problems"]:
            parts.append(f"[yellow]warning: {problem}[/yellow]")
    console.print(Group(*parts))
    return data


def card_command(ws: WorkspaceRef, task: str, version: str, console: Console | None = None) -> str:
    """``cxpredict models --card TASK VERSION``: the version's model card (Markdown)."""
    name = MODEL_NAMES[task]
    with tracking_session(resolve_tracking(ws)) as client:
        try:
            registered = client.get_model_version(name, str(version))
        except MlflowException as error:
            raise PromotionError(f"{name} has no version {version}") from error
        run_id = registered.tags.get("run_id") or registered.run_id
        text = mlflow.artifacts.load_text(f"runs:/{run_id}/{MODEL_CARD}")
    if console is not None:
        console.print(text, markup=False, highlight=False)
    return text
