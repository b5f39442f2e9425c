"""The ``cxpredict`` command line. Command names are fixed by DESIGN §6: scripts and docs rely on them.

Each command only parses options, resolves the workspace and calls into ``features``/``training``/
``serving``; heavy libraries are imported inside the commands so ``cxpredict --help`` stays instant.
"""

from __future__ import annotations

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
console = Console()

WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option(
        "--workspace",
        "-w",
        help=f"Folder holding all state of a run (default: ${HOME_VARIABLE} or ./.cxpredict).",
        show_default=False,
    ),
]


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


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
