"""The ``cxpredict`` command line. Command names are fixed by DESIGN §6: scripts and docs rely on them.

Each command only parses options, resolves the workspace and calls into ``features``/``training``/
``serving``; heavy libraries are imported inside the commands so ``cxpredict --help`` stays instant.
"""

from __future__ import annotations

import sys
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Iterator, Optional

import typer
from rich.console import Console

from cxpredict.settings import HOME_VARIABLE, Workspace, resolve_workspace

app = typer.Typer(
    name="cxpredict",
    help="Predictive customer experience: churn, next purchase and unmet needs from unified customer data.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console(width=None if sys.stdout.isatty() else 150)
"""Piped output (logs, CI, README captures) gets a wide page instead of rich's 80-column default."""

WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option(
        "--workspace",
        "-w",
        help=f"Folder holding all state of a run (default: ${HOME_VARIABLE} or ./.cxpredict).",
        show_default=False,
    ),
]


def _quiet_library_warnings() -> None:
    """Library chatter (Feast's experimental on-demand views, ibis deprecations) is not for end users.

    Call after importing Feast: its modules reset the warning filters at import time.
    """
    import warnings

    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", message="On demand feature view is an experimental feature")
    warnings.filterwarnings("ignore", message=r"fetch_arrow_table\(\) is deprecated")


def _quiet_training() -> None:
    """Feast and MLflow imported (they reset warning filters), then quietened: MLflow's INFO lines and
    artifact progress bars would bury the command's own tables."""
    import logging
    import os

    import features.store  # noqa: F401
    import mlflow  # noqa: F401

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    _quiet_library_warnings()
    import warnings

    warnings.filterwarnings("ignore", message=".*noload.*")
    warnings.filterwarnings("ignore", category=FutureWarning)


def _workspace(path: Path | None) -> Workspace:
    ws = resolve_workspace(path).ensure()
    console.print(f"[dim]workspace: {ws.root}[/dim]")
    return ws


@contextmanager
def _progress() -> Iterator[object]:
    """A rich progress display for long work; transient so summaries stay readable."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        SpinnerColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        SpinnerColumn(),
        TextColumn("[progress.description]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    ) as progress:
        yield progress


def _utc(day: datetime | None) -> datetime | None:
    if day is None:
        return None
    return day.replace(tzinfo=timezone.utc) if day.tzinfo is None else day.astimezone(timezone.utc)


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=10, help="Number of customers in the world.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same world.")] = 1,
    days: Annotated[int, typer.Option(min=120, help="Length of the history in days.")] = 730,
    end: Annotated[
        Optional[datetime],
        typer.Option(formats=["%Y-%m-%d"], help="End of the history, exclusive (UTC midnight; default: today)."),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Generate a synthetic omnichannel retailer: raw sources into raw/, ground truth into truth/."""
    from features.synthetic import WorldConfig, generate as generate_world

    ws = _workspace(workspace)
    end_day = (_utc(end) or datetime.now(timezone.utc)).date()
    config = WorldConfig(customers=customers, seed=seed, days=days, end=end_day)
    with _progress() as progress:
        summary = generate_world(ws, config, progress=progress)
    console.print(summary.to_table() if hasattr(summary, "to_table") else summary)


SOURCE_OPTION_HELP = "CSV or Parquet file of the {} source."


@app.command()
def ingest(
    transactions: Annotated[Optional[Path], typer.Option(help=SOURCE_OPTION_HELP.format("transactions"))] = None,
    customers: Annotated[Optional[Path], typer.Option(help=SOURCE_OPTION_HELP.format("customers"))] = None,
    events: Annotated[Optional[Path], typer.Option(help=SOURCE_OPTION_HELP.format("events"))] = None,
    support_tickets: Annotated[
        Optional[Path], typer.Option(help=SOURCE_OPTION_HELP.format("support tickets"))
    ] = None,
    surveys: Annotated[Optional[Path], typer.Option(help=SOURCE_OPTION_HELP.format("surveys"))] = None,
    marketing: Annotated[Optional[Path], typer.Option(help=SOURCE_OPTION_HELP.format("marketing"))] = None,
    consents: Annotated[Optional[Path], typer.Option(help=SOURCE_OPTION_HELP.format("consents"))] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Validate, quarantine, de-duplicate and stitch raw sources into canonical tables and the unified profile.

    With no file given, reads the workspace's raw/ folder. Only transactions are required.
    """
    from features.contract import ContractError
    from features.ingest import format_report, ingest as run_ingest

    ws = _workspace(workspace)
    given = {
        "transactions": transactions,
        "customers": customers,
        "events": events,
        "support_tickets": support_tickets,
        "surveys": surveys,
        "marketing": marketing,
        "consents": consents,
    }
    paths = {source: path for source, path in given.items() if path is not None} or None
    try:
        with _progress() as progress:
            report = run_ingest(ws, paths, progress=progress)
    except ContractError as error:
        console.print(f"[red]refused:[/red] {error}")
        raise typer.Exit(code=2) from error
    console.print(format_report(report))


def _as_of(day: datetime | None) -> datetime:
    """A cutoff is a UTC midnight: the given day, else today."""
    moment = _utc(day) or datetime.now(timezone.utc)
    return moment.replace(hour=0, minute=0, second=0, microsecond=0)


AsOfOption = Annotated[
    Optional[datetime],
    typer.Option(
        "--as-of",
        formats=["%Y-%m-%d"],
        help="Moment the features describe (UTC midnight; default: today). Only facts before it are used.",
        show_default=False,
    ),
]


def _feature_summary(build, materialized) -> object:
    from rich.table import Table

    table = Table(title=f"Features as of {build.as_of:%Y-%m-%d}")
    table.add_column("family")
    table.add_column("features", justify="right")
    for family, count in build.features.items():
        table.add_row(family, str(count))
    from rich.console import Group

    summary = (
        f"{build.customers:,} customers at the latest snapshot, {sum(build.features.values())} features; "
        f"snapshots built {build.snapshots_built}, kept {build.snapshots_skipped}; "
        f"{materialized.customers or 0:,} customers materialised online ({materialized.method} path); "
        f"{build.seconds + materialized.seconds:.1f} s"
    )
    return Group(table, summary)


@app.command()
def features(as_of: AsOfOption = None, workspace: WorkspaceOption = None) -> None:
    """Build feature snapshots up to --as-of (incrementally), apply the Feast repo and materialise online."""
    from features.snapshots import build_features
    from features.store import apply_repo, materialize_latest

    _quiet_library_warnings()
    ws = _workspace(workspace)
    moment = _as_of(as_of)
    try:
        with _progress() as progress:
            build = build_features(ws, moment, progress=progress)
    except FileNotFoundError as error:
        console.print(f"[red]no canonical data:[/red] run `cxpredict ingest` first ({error})")
        raise typer.Exit(code=2) from error
    apply_repo(ws)
    materialized = materialize_latest(ws, end=moment)
    console.print(_feature_summary(build, materialized))


TASK_HELP = "churn | next-purchase | unmet-needs | all"


def _train_as_of(value: str | None) -> datetime | None:
    """A YYYY-MM-DD day (UTC midnight), or None for 'latest' (the features' as_of)."""
    if value is None or value.strip().lower() == "latest":
        return None
    try:
        return _as_of(datetime.strptime(value.strip(), "%Y-%m-%d"))
    except ValueError as error:
        raise typer.BadParameter(f"{value!r} is not a date YYYY-MM-DD or 'latest'", param_hint="--as-of") from error


TrainAsOfOption = Annotated[
    Optional[str],
    typer.Option(
        "--as-of",
        help="Moment of training, YYYY-MM-DD (UTC midnight): no fact after it is read and every label "
        "window ends by it. 'latest' or omitted: the as-of of the feature build.",
        show_default=False,
    ),
]


def _fmt(value: object) -> str:
    import math

    if isinstance(value, float):
        return "–" if math.isnan(value) else f"{value:.4f}"
    return str(value)


def _metrics_table(title: str, summary) -> object:
    """A rich table of ``training.run.summary_table`` output (models as rows)."""
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    table.add_column("model")
    for column in summary.columns:
        table.add_column(column.replace("_", " "), justify="right")
    for model, row in summary.iterrows():
        cells = [f"{int(v):,}" if name == "rows" and v == v else _fmt(float(v)) for name, v in row.items()]
        table.add_row(str(model), *cells)
    return table


def _train_report(result) -> object:
    from rich.console import Group

    from training.run import cli_name, summary_table

    name = cli_name(result.task)
    if result.status != "trained":
        return f"[yellow]{name}: not trained[/yellow] — {result.reason}"
    parts: list[object] = [_metrics_table(f"{name} — held-out cutoff", summary_table(result.metrics))]
    if result.model_version:
        parts.append(f"{result.model_name} version {result.model_version}: {result.decision}")
    for note in result.fitted.notes if result.fitted else []:
        parts.append(f"[dim]{note}[/dim]")
    return Group(*parts)


def _run_training(ws: Workspace, tasks, as_of: datetime | None, horizon_days: int | None, tune: int) -> dict:
    from training.run import FeaturesNotReady, train_workspace

    try:
        with _progress() as progress:
            return train_workspace(ws, tasks, as_of, horizon_days, tune, progress=progress)
    except (FeaturesNotReady, FileNotFoundError) as error:
        console.print(f"[red]cannot train:[/red] {error}")
        raise typer.Exit(code=2) from error


@app.command()
def train(
    task: Annotated[str, typer.Argument(help=TASK_HELP)] = "all",
    as_of: TrainAsOfOption = None,
    horizon_days: Annotated[
        Optional[int], typer.Option(min=1, max=730, help="Label horizon H in days (default: churn 90, others 30).")
    ] = None,
    tune: Annotated[int, typer.Option(min=0, help="Optuna trials on the validation cutoff (0: no tuning).")] = 0,
    workspace: WorkspaceOption = None,
) -> None:
    """Train on rolling cutoffs (Feast point-in-time features), log runs and register models in MLflow."""
    from training.run import parse_tasks

    try:
        tasks = parse_tasks(task)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="TASK") from error
    _quiet_training()
    ws = _workspace(workspace)
    results = _run_training(ws, tasks, _train_as_of(as_of), horizon_days, tune)
    for result in results.values():
        console.print(_train_report(result))
    if not any(result.status == "trained" for result in results.values()):
        raise typer.Exit(code=1)


@app.command()
def evaluate(
    task: Annotated[str, typer.Option("--task", help=TASK_HELP)] = "all",
    alias: Annotated[str, typer.Option(help="Registry alias of the versions to evaluate.")] = "champion",
    as_of: TrainAsOfOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Re-evaluate registered models on the latest complete held-out cutoff (vs the oracle on generated worlds)."""
    from training.run import FeaturesNotReady, cli_name, evaluate_workspace, parse_tasks, summary_table

    try:
        tasks = parse_tasks(task)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--task") from error
    _quiet_training()
    ws = _workspace(workspace)
    try:
        results = evaluate_workspace(ws, tasks, alias, _train_as_of(as_of))
    except (FeaturesNotReady, FileNotFoundError) as error:
        console.print(f"[red]cannot evaluate:[/red] {error}")
        raise typer.Exit(code=2) from error
    for result in results.values():
        name = cli_name(result.task)
        if result.status != "evaluated":
            console.print(f"[yellow]{name}:[/yellow] {result.reason}")
            continue
        title = f"{name} version {result.version} (@{alias}) — cutoff {result.cutoff:%Y-%m-%d}"
        console.print(_metrics_table(title, summary_table(result.metrics)))
    if not any(result.status == "evaluated" for result in results.values()):
        raise typer.Exit(code=1)


@app.command()
def score(
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv.")],
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of",
            help="Moment the scores describe, YYYY-MM-DD (features: the latest snapshot at or before it). "
            "'latest' or omitted: the as-of of the feature build.",
            show_default=False,
        ),
    ] = None,
    alias: Annotated[str, typer.Option(help="Registry alias of the models to score with.")] = "champion",
    workspace: WorkspaceOption = None,
) -> None:
    """Score every known customer with the champion models; one row per customer into --out."""
    from training.run import FeaturesNotReady, score_workspace

    if out.suffix.lower() not in (".parquet", ".csv"):
        raise typer.BadParameter("the output must end in .parquet or .csv", param_hint="--out")
    _quiet_training()
    ws = _workspace(workspace)
    try:
        with _progress() as progress:
            summary = score_workspace(ws, _train_as_of(as_of), out, alias, progress=progress)
    except (FeaturesNotReady, FileNotFoundError, LookupError) as error:
        console.print(f"[red]cannot score:[/red] {error}")
        raise typer.Exit(code=2) from error
    versions = ", ".join(f"{task} v{version}" for task, version in summary.versions.items())
    console.print(
        f"{summary.customers:,} customers scored into {summary.path} ({versions}); "
        f"{summary.not_scored:,} without profiling consent left unscored; {summary.seconds:.1f} s"
    )


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=100, help="Customers in the generated world.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed of the world.")] = 1,
    workspace: WorkspaceOption = None,
) -> None:
    """The whole job on the embedded defaults: generate, ingest, features, train every model, score."""
    from features.ingest import format_report, ingest as run_ingest
    from features.snapshots import build_features
    from features.store import apply_repo, materialize_latest
    from features.synthetic import WorldConfig, generate as generate_world

    _quiet_training()
    ws = _workspace(workspace)
    today = _as_of(None)
    console.rule("1 · generate a synthetic omnichannel retailer")
    with _progress() as progress:
        world = generate_world(ws, WorldConfig(customers=customers, seed=seed, end=today.date()), progress)
    console.print(world.to_table())
    console.rule("2 · ingest: validate, quarantine, de-duplicate, stitch identities, unify profiles")
    with _progress() as progress:
        report = run_ingest(ws, progress=progress)
    console.print(format_report(report))
    console.rule("3 · behavioural features in Feast (offline snapshots, online store)")
    with _progress() as progress:
        build = build_features(ws, today, progress=progress)
    apply_repo(ws)
    materialized = materialize_latest(ws, end=today)
    console.print(_feature_summary(build, materialized))
    console.print(
        f"Feast repo: CXPREDICT_HOME={ws.root} feast -c features/feature_repo feature-views list"
    )
    console.rule("4 · train churn, next purchase and unmet needs (MLflow runs, registered models)")
    results = _run_training(ws, ("churn", "next_purchase", "unmet_needs"), today, None, 0)
    for result in results.values():
        console.print(_train_report(result))
    console.rule("5 · score every known customer with the champion models")
    from training.run import score_workspace

    out = ws.reports_dir / f"scores-{today:%Y-%m-%d}.parquet"
    alias = "champion"
    if not all(result.champion for task, result in results.items() if task != "unmet_needs"):
        alias = "challenger"
        console.print(
            "[yellow]a model did not beat both baselines, so it is no champion;[/yellow] "
            "the demo scores with the versions just trained (alias challenger)"
        )
    with _progress() as progress:
        summary = score_workspace(ws, today, out, alias=alias, progress=progress)
    console.print(f"{summary.customers:,} customers scored into {summary.path} ({summary.seconds:.1f} s)")
    console.print(f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{ws.mlflow_dir / 'mlflow.db'}")


TaskArgument = Annotated[str, typer.Argument(help="churn | next-purchase | unmet-needs")]


def _one_task(name: str) -> str:
    from training.run import parse_tasks

    try:
        tasks = parse_tasks(name)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="TASK") from error
    if len(tasks) != 1:
        raise typer.BadParameter("name one task", param_hint="TASK")
    return tasks[0]


@app.command()
def promote(
    task: TaskArgument,
    version: Annotated[Optional[str], typer.Option(help="Candidate version (default: the challenger).")] = None,
    force: Annotated[bool, typer.Option("--force", help="Move champion even if the gate refuses.")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why (required with --force; recorded).")] = None,
    tolerance: Annotated[float, typer.Option(help="Largest AUC drop against the champion.")] = 0.01,
    ece_bound: Annotated[float, typer.Option(help="Largest expected calibration error.")] = 0.02,
    actor: Annotated[Optional[str], typer.Option(help="Who promotes (default: $USER).")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Gate a candidate against the champion on the latest held-out cutoff; move `champion` only if it passes."""
    from training.commands import promote_command
    from training.promotion import PromotionError, evaluation_sets
    from training.run import FeaturesNotReady, default_as_of, feast_features_for, load_tables, prepare_store

    _quiet_library_warnings()
    _quiet_training()
    name = _one_task(task)
    ws = _workspace(workspace)
    try:
        as_of = default_as_of(ws)
        prepare_store(ws)
        evaluation = evaluation_sets(load_tables(ws, as_of), feast_features_for(ws), as_of)
        result = promote_command(
            ws, name, version=version, force=force, reason=reason, tolerance=tolerance,
            ece_bound=ece_bound, evaluation_set=evaluation, actor=actor, console=console,
        )
    except (PromotionError, FeaturesNotReady) as error:
        console.print(f"[red]cannot promote:[/red] {error}")
        raise typer.Exit(code=2) from error
    raise typer.Exit(code=result.exit_code)


@app.command()
def rollback(
    task: TaskArgument,
    reason: Annotated[Optional[str], typer.Option(help="Why (recorded in the audit trail).")] = None,
    actor: Annotated[Optional[str], typer.Option(help="Who rolls back (default: $USER).")] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Move `champion` back to the previous champion (recorded in the audit trail)."""
    from training.commands import rollback_command
    from training.promotion import PromotionError

    name = _one_task(task)
    ws = _workspace(workspace)
    try:
        result = rollback_command(ws, name, reason=reason, actor=actor, console=console)
    except PromotionError as error:
        console.print(f"[red]cannot roll back:[/red] {error}")
        raise typer.Exit(code=2) from error
    raise typer.Exit(code=result.exit_code)


@app.command()
def models(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    history: Annotated[bool, typer.Option("--history", help="Show every alias move.")] = False,
    card: Annotated[
        Optional[tuple[str, str]], typer.Option(help="Print the model card of TASK VERSION.", show_default=False)
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Every task's registered versions, aliases, key metrics, as-of and training rows."""
    from training.commands import card_command, models_command

    ws = resolve_workspace(workspace)
    if card is not None:
        card_command(ws, _one_task(card[0]), card[1], console=console)
        return
    models_command(ws, as_json=as_json, history=history, console=console)


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
