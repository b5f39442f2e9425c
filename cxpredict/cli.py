"""The ``cxpredict`` command line: each command parses its options, calls one function of
``features``, ``training`` or ``serving`` and renders the result (``cxpredict.render``).

Command names are fixed (scripts and docs rely on them). Heavy libraries are imported inside the
commands so ``cxpredict --help`` stays instant. Results go to stdout; progress, warnings and errors
to stderr. With ``--json`` a command prints exactly one JSON document on stdout (keys: its help and
``cxpredict.documents``); an expected refusal exits 2 with one line on stderr and nothing on stdout.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager, redirect_stdout
from enum import Enum
from datetime import datetime, timezone
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape

from cxpredict import __version__
from cxpredict import documents
from cxpredict import tasks as registry
from cxpredict.workspace import HOME_VARIABLE, Workspace, resolve_workspace


class NumericIds(str, Enum):
    refuse = "refuse"
    convert = "convert"


app = typer.Typer(
    name="cxpredict",
    help="Predictive customer experience: churn, next purchase and unmet needs from unified customer data.",
    no_args_is_help=True,
)
console = Console(width=None if sys.stdout.isatty() else 150)
"""Piped output (logs, CI, README captures) gets a wide page instead of rich's 80-column default."""
errors = Console(stderr=True, width=None if sys.stderr.isatty() else 150)


def _task_names(incomplete: str = "") -> list[str]:
    """Registered task names (read when asked, so a task registered by a plugin is offered too)."""
    return [
        name
        for name in [spec.cli_name for spec in registry.known_tasks()] + ["all"]
        if name.startswith(incomplete)
    ]


def _one_task(value: str) -> str:
    try:
        return registry.get(value).name
    except registry.UnknownTask as error:
        raise typer.BadParameter(str(error)) from error


def _tasks(value: str) -> tuple[str, ...]:
    try:
        return tuple(spec.name for spec in registry.parse(value))
    except registry.UnknownTask as error:
        raise typer.BadParameter(str(error)) from error


WorkspaceOption = Annotated[
    Optional[Path],
    typer.Option("--workspace", "-w", show_default=False,
                 help=f"Folder holding all state of a run (default: ${HOME_VARIABLE} or ./.cxpredict)."),
]  # fmt: skip
DayOption = Annotated[
    Optional[str],
    typer.Option("--as-of", show_default=False,
                 help="YYYY-MM-DD (UTC midnight); only facts before it are used. 'latest' or omitted: the "
                      "as-of of the feature build (features: today)."),
]  # fmt: skip
TasksArgument = Annotated[
    str,
    typer.Argument(
        help="A registered task, or all.", callback=_tasks, metavar="TASK", autocompletion=_task_names
    ),
]
TaskArgument = Annotated[
    str,
    typer.Argument(help="A registered task.", callback=_one_task, metavar="TASK", autocompletion=_task_names),
]
AliasOption = Annotated[str, typer.Option(help="Registry alias of the model versions to use.")]
ActorOption = Annotated[Optional[str], typer.Option(help="Who acts (default: $USER).")]


def _json_option(command: str) -> object:
    """The --json option of ``command``; its help states the document (``documents.DOCUMENTS``)."""
    return typer.Option(
        "--json",
        help=f"Print one JSON document on stdout instead of tables: {documents.DOCUMENTS[command]}. "
        "Progress and warnings go to stderr; a refusal (exit 2) prints nothing on stdout.",
    )


def _version(show: bool) -> None:
    if show:
        console.print(f"cxpredict {__version__}")
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Show the version.")
    ] = False,
) -> None:
    """Predictive customer experience on Feast, MLflow, LightGBM and BentoML."""


def _workspace(path: Path | None) -> Workspace:
    ws = resolve_workspace(path).ensure()
    errors.print(f"[dim]workspace: {ws.root}[/dim]")
    return ws


def _day(value: str | None) -> datetime | None:
    """A YYYY-MM-DD day as UTC midnight, or None for 'latest'."""
    if value is None or value.strip().lower() == "latest":
        return None
    try:
        return datetime.strptime(value.strip(), "%Y-%m-%d").replace(tzinfo=timezone.utc)
    except ValueError as error:
        raise typer.BadParameter(
            f"{value!r} is not a date YYYY-MM-DD or 'latest'", param_hint="--as-of"
        ) from error


def _today() -> datetime:
    return datetime.now(timezone.utc).replace(hour=0, minute=0, second=0, microsecond=0)


@contextmanager
def _refusal(what: str, *kinds: type[BaseException]):
    """An expected failure of ``kinds`` ends the command with one line on stderr and exit code 2."""
    from features.contract import ContractError
    from features.snapshots import FutureAsOf
    from training.data import FeaturesNotReady
    from training.promotion import PromotionError

    try:
        yield
    except (
        *kinds,
        ContractError,
        FutureAsOf,
        FeaturesNotReady,
        PromotionError,
        FileNotFoundError,
        LookupError,
    ) as error:
        errors.print(f"[red]{what}:[/red] {escape(str(error))}", soft_wrap=True)  # one line, for grep
        raise typer.Exit(code=2) from error


@contextmanager
def _stdout_for(as_json: bool) -> Iterator[None]:
    """With --json, stdout carries the document only: whatever is printed meanwhile (a library's
    chatter) goes to stderr."""
    if not as_json:
        yield
        return
    with redirect_stdout(sys.stderr):
        yield


def _show(as_json: bool, result: object, view: Callable[[object], object], document: Callable) -> None:
    """The result on stdout: ``document(result)`` as one JSON document with --json, else ``view(result)``."""
    if as_json:
        sys.stdout.write(documents.json_text(document(result)))
    else:
        console.print(view(result))


@app.command()
def generate(
    customers: Annotated[int, typer.Option(min=10, help="Number of customers in the world.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same world.")] = 1,
    days: Annotated[int, typer.Option(min=120, help="Length of the history in days.")] = 730,
    end: Annotated[
        Optional[str], typer.Option(help="End of the history, exclusive, YYYY-MM-DD (default: today).")
    ] = None,
    shift: Annotated[
        Optional[str],
        typer.Option(
            help="Shift behaviour from a date on, to rehearse monitoring and retraining: "
            "start=YYYY-MM-DD[,channels=organic+store][,purchase=0.35][,sessions=0.5] multiplies the "
            "purchases and browsing sessions of the customers acquired through those channels."
        ),
    ] = None,
    campaigns: Annotated[
        bool,
        typer.Option(
            "--campaigns",
            help="Add a history of randomised campaigns (retention offer, service call-back, cross-sell, "
            "win-back, control) with known heterogeneous effects: the decision log and outcomes uplift "
            "models learn from, and the truth they are judged against.",
        ),
    ] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Generate a synthetic omnichannel retailer: raw sources into raw/, ground truth into truth/."""
    from pydantic import ValidationError

    from cxpredict import render
    from features.synthetic import CampaignHistory, Shift, WorldConfig, generate as generate_world

    try:
        config = WorldConfig(
            customers=customers,
            seed=seed,
            days=days,
            end=(_day(end) or _today()).date(),
            shift=Shift.parse(shift) if shift else None,
            campaign_history=CampaignHistory() if campaigns else None,
        )
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise typer.BadParameter(
            f"{where}: {first['msg']}" if where else first["msg"], param_hint="--shift"
        ) from None
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--shift") from None
    ws = _workspace(workspace)
    with render.progress(errors) as progress:
        summary = generate_world(ws, config, progress=progress)
    console.print(render.generated(summary))


SOURCE_HELP = "CSV or Parquet file of the {} source."
SOURCES_HELP = (
    "YAML file saying, per source, where its rows are (path: CSV/Parquet files, globs allowed; or url + "
    "query: a database), which of its columns is which (columns: {customer_id: CustomerID, ...}) and how "
    "times and numbers are written (timezone, date_format, decimal, delimiter, encoding). A documented "
    "example: docs/sources.example.yaml. Cannot be combined with --transactions and the other source files."
)


@app.command()
def ingest(
    transactions: Annotated[Optional[Path], typer.Option(help=SOURCE_HELP.format("transactions"))] = None,
    customers: Annotated[Optional[Path], typer.Option(help=SOURCE_HELP.format("customers"))] = None,
    events: Annotated[Optional[Path], typer.Option(help=SOURCE_HELP.format("events"))] = None,
    support_tickets: Annotated[
        Optional[Path], typer.Option(help=SOURCE_HELP.format("support tickets"))
    ] = None,
    surveys: Annotated[Optional[Path], typer.Option(help=SOURCE_HELP.format("surveys"))] = None,
    marketing: Annotated[Optional[Path], typer.Option(help=SOURCE_HELP.format("marketing"))] = None,
    consents: Annotated[Optional[Path], typer.Option(help=SOURCE_HELP.format("consents"))] = None,
    sources: Annotated[Optional[Path], typer.Option("--sources", help=SOURCES_HELP)] = None,
    numeric_ids: Annotated[
        NumericIds,
        typer.Option(
            help="Numeric identifier columns in typed files (Parquet): refuse them, or convert to text."
        ),
    ] = NumericIds.refuse,
    customer_id_width: Annotated[
        Optional[int],
        typer.Option(
            min=1, help="With --numeric-ids convert: zero-pad converted customer ids to this many digits."
        ),
    ] = None,
    as_json: Annotated[bool, _json_option("ingest")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Validate, quarantine, de-duplicate and stitch raw sources into canonical tables and the unified
    profile. With no file given, reads the workspace's raw/ folder. Only transactions are required,
    and they must yield rows: when none is accepted (say every row quarantined) the ingest is refused
    (exit 2, the top quarantine rules on stderr) and nothing is written. Identifiers are text: a
    numeric id column is refused unless --numeric-ids convert says how.

    --sources sources.yaml reads your own files and database tables under your own column names and
    formats; a documented example is docs/sources.example.yaml."""
    from cxpredict import render
    from features.ingest import ingest as run_ingest

    given = dict(transactions=transactions, customers=customers, events=events, support_tickets=support_tickets,
                 surveys=surveys, marketing=marketing, consents=consents)  # fmt: skip
    paths = {source: path for source, path in given.items() if path is not None} or None
    if sources is not None and paths:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in paths)
        errors.print(f"[red]refused:[/red] give --sources or {flags}, not both: declare every source in "
                     f"{escape(str(sources))}", soft_wrap=True)  # fmt: skip
        raise typer.Exit(code=2)
    ws = _workspace(workspace)
    with _refusal("refused"), _stdout_for(as_json), render.progress(errors) as progress:
        if sources is not None:
            from features.sources import ingest_sources

            report = ingest_sources(ws, sources, progress=progress, numeric_ids=numeric_ids.value,
                                    customer_id_width=customer_id_width)  # fmt: skip
        else:
            report = run_ingest(ws, paths, progress=progress, numeric_ids=numeric_ids.value,
                                customer_id_width=customer_id_width)  # fmt: skip
    if as_json:
        for warning in report.warnings:
            errors.print(f"[yellow]warning:[/] {escape(warning)}")
    _show(as_json, report, render.ingest_report, documents.ingest_document)


@app.command()
def features(
    as_of: DayOption = None,
    features_dir: Annotated[
        Optional[Path],
        typer.Option(
            "--features-dir",
            show_default=False,
            help="Folder of custom feature views (*.sql, one SELECT each; default: <workspace>/features.d).",
        ),
    ] = None,  # fmt: skip
    engine: Annotated[
        Optional[str],
        typer.Option(
            "--engine",
            envvar="CXPREDICT_ENGINE",
            show_default=False,
            help="SQL engine computing the families: duckdb (default) or spark (PySpark; master from "
            "CXPREDICT_SPARK_MASTER, default local[2]). Custom SQL views build on duckdb only.",
        ),
    ] = None,  # fmt: skip
    workspace: WorkspaceOption = None,
) -> None:
    """Build feature snapshots up to --as-of (incrementally), apply the Feast repo and materialise online."""
    from cxpredict import render
    from features.snapshots import resolve_engine
    from features.spark_engine import SparkUnavailable
    from features.store import refresh_features

    try:
        chosen = resolve_engine(engine)
    except ValueError as error:
        raise typer.BadParameter(str(error), param_hint="--engine") from None
    render.quiet_libraries()
    ws = _workspace(workspace)
    with _refusal("cannot build features", SparkUnavailable), render.progress(errors) as progress:
        build, materialized = refresh_features(
            ws, _day(as_of) or _today(), progress, custom_dir=features_dir, engine=chosen
        )
    console.print(render.features_built(build, materialized))


@app.command()
def train(
    task: TasksArgument = "all",
    as_of: DayOption = None,
    horizon_days: Annotated[
        Optional[int],
        typer.Option(min=1, max=730, help="Label horizon H in days (default: each task's own)."),
    ] = None,
    tune: Annotated[
        int, typer.Option(min=0, help="Optuna trials on the validation cutoff (0: no tuning).")
    ] = 0,
    as_json: Annotated[bool, _json_option("train")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Train on rolling cutoffs (Feast point-in-time features), log runs and register models in MLflow.
    Exits 1 when no task could be trained."""
    from cxpredict import render
    from training.run import train_workspace

    render.quiet_libraries()
    ws = _workspace(workspace)
    with _refusal("cannot train"), _stdout_for(as_json), render.progress(errors) as progress:
        results = train_workspace(ws, task, _day(as_of), horizon_days, tune, progress=progress)
    _show(as_json, results, render.trained_all, documents.train_document)
    if not any(result.status == "trained" for result in results.values()):
        raise typer.Exit(code=1)


@app.command()
def evaluate(
    task: Annotated[
        str, typer.Option("--task", help="A task or all.", callback=_tasks, autocompletion=_task_names)
    ] = "all",
    alias: AliasOption = "champion",
    as_of: DayOption = None,
    as_json: Annotated[bool, _json_option("evaluate")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Re-evaluate registered models on the latest complete held-out cutoff (vs the oracle on generated
    worlds). Exits 1 when no task has a version behind the alias."""
    from cxpredict import render
    from training.evaluate import evaluate_workspace

    render.quiet_libraries()
    ws = _workspace(workspace)
    with _refusal("cannot evaluate"), _stdout_for(as_json):
        results = evaluate_workspace(ws, task, alias, _day(as_of))
    _show(as_json, results, render.evaluated_all, documents.evaluate_document)
    if not any(result.status == "evaluated" for result in results.values()):
        raise typer.Exit(code=1)


@app.command()
def score(
    out: Annotated[Path, typer.Option(help="Output file: .parquet or .csv.")],
    as_of: DayOption = None,
    alias: AliasOption = "champion",
    as_json: Annotated[bool, _json_option("score")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Score every known customer with the champion models; one row per customer into --out."""
    from cxpredict import render
    from training.scoring import SCORE_FORMATS, score_workspace

    if out.suffix.lower() not in SCORE_FORMATS:
        raise typer.BadParameter(f"the output must end in {' or '.join(SCORE_FORMATS)}", param_hint="--out")
    render.quiet_libraries()
    ws = _workspace(workspace)
    with _refusal("cannot score"), _stdout_for(as_json), render.progress(errors) as progress:
        summary = score_workspace(ws, _day(as_of), out, alias, progress=progress)
    _show(as_json, summary, render.scored, documents.score_document)


@app.command()
def demo(
    customers: Annotated[int, typer.Option(min=100, help="Customers in the generated world.")] = 20_000,
    seed: Annotated[int, typer.Option(help="Random seed of the world.")] = 1,
    serve_api: Annotated[
        bool, typer.Option("--serve/--no-serve", help="End by serving the API (Ctrl-C stops it).")
    ] = True,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the API.")] = 3000,
    workspace: WorkspaceOption = None,
) -> None:
    """The whole job on the embedded defaults: generate, ingest, features, train, promote, score, serve."""
    from cxpredict import render
    from serving.demo import run_demo
    from serving.supervisor import PortInUse

    render.quiet_libraries()
    ws = _workspace(workspace)
    with render.progress(console) as progress, _refusal("the demo stopped", PortInUse):
        for title, kind, payload in run_demo(
            ws, customers, seed, _today(), progress, port if serve_api else None
        ):
            console.rule(title)
            console.print(render.demo_step(kind, payload))
    if serve_api and payload["answered"]:
        payload["server"].serve_until_interrupted(lambda: console.print("stopping the API server"))
    elif serve_api:
        payload["server"].stop()
        errors.print(f"[red]the API server stopped[/red]; see {payload['server'].log_path}")
        raise typer.Exit(code=1)


@app.command()
def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the HTTP API.")] = 3000,
    host: Annotated[
        str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")
    ] = "127.0.0.1",
    alias: AliasOption = "champion",
    reload_seconds: Annotated[
        float, typer.Option(min=0, help="How often to check the alias for a new version (0: never).")
    ] = 30.0,
    workers: Annotated[
        Optional[int],
        typer.Option(min=1, show_default=False, help="Worker processes (default: one per CPU, at most 4)."),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve every task's model over HTTP (BentoML), with the champion versions."""
    import os

    from serving.supervisor import PortInUse, ensure_port_free, serve_command, serve_environment

    with _refusal("cannot serve", PortInUse):
        ensure_port_free(host, port)
    env = serve_environment(_workspace(workspace), alias, reload_seconds, workers)
    errors.print(f"API keys: {env.get('CXPREDICT_API_KEYS_FILE') or 'from CXPREDICT_API_KEYS'}")
    console.print(f"API docs: http://{host}:{port}/docs   health: /livez /readyz   metrics: /metrics")
    sys.stdout.flush()
    os.execvpe(sys.executable, serve_command(port, host), env)


@app.command()
def promote(
    task: TaskArgument,
    version: Annotated[
        Optional[str], typer.Option(help="Candidate version (default: the challenger).")
    ] = None,
    force: Annotated[bool, typer.Option("--force", help="Move champion even if the gate refuses.")] = False,
    reason: Annotated[Optional[str], typer.Option(help="Why (required with --force; recorded).")] = None,
    tolerance: Annotated[Optional[float], typer.Option(help="Largest AUC drop against the champion.")] = None,
    ece_bound: Annotated[Optional[float], typer.Option(help="Largest expected calibration error.")] = None,
    actor: ActorOption = None,
    as_json: Annotated[bool, _json_option("promote")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Gate a candidate against the champion on the latest held-out cutoff; move `champion` only if it
    passes. Exits 0 when the candidate is champion afterwards, 1 when the gate refused it."""
    from cxpredict import render
    from training.commands import promote_command
    from training.promotion import GateConfig

    render.quiet_libraries()
    limits = {"auc_tolerance": tolerance, "ece_bound": ece_bound}
    gate = GateConfig(**{name: value for name, value in limits.items() if value is not None})
    ws = _workspace(workspace)
    with _refusal("cannot promote"), _stdout_for(as_json):
        result = promote_command(ws, task, version, force, reason, gate, actor=actor)
    _show(as_json, result, render.decided, documents.promote_document)
    raise typer.Exit(code=result.exit_code)


@app.command()
def rollback(
    task: TaskArgument,
    reason: Annotated[Optional[str], typer.Option(help="Why (recorded in the audit trail).")] = None,
    actor: ActorOption = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Move `champion` back to the previous champion (recorded in the audit trail)."""
    from cxpredict import render
    from training.commands import rollback_command

    ws = _workspace(workspace)
    with _refusal("cannot roll back"):
        result = rollback_command(ws, task, reason=reason, actor=actor)
    console.print(render.decided(result))
    raise typer.Exit(code=result.exit_code)


@app.command()
def models(
    as_json: Annotated[bool, _json_option("models")] = False,
    history: Annotated[bool, typer.Option("--history", help="Show every alias move.")] = False,
    card: Annotated[
        Optional[tuple[str, str]],
        typer.Option(help="Print the model card of TASK VERSION.", show_default=False),
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Every task's registered versions, aliases, key metrics, as-of and training rows. --card prints
    the Markdown as stored (never re-wrapped), so `> card.md` keeps every table row whole."""
    from cxpredict import render
    from training import commands

    ws = resolve_workspace(workspace)
    if card is not None:
        with _refusal("cannot show", registry.UnknownTask), _stdout_for(True):
            text = commands.card_command(ws, registry.get(card[0]).name, card[1])
        sys.stdout.write(text)
        return
    with _refusal("cannot show"), _stdout_for(as_json):
        data = commands.models_command(ws, history=history)
    _show(as_json, data, lambda found: render.models(found, history), lambda found: found)


# --- right to erasure ------------------------------------------------------------------------------


@app.command()
def forget(
    customer_id: Annotated[
        Optional[list[str]], typer.Option("--customer-id", help="A customer id (repeatable).")
    ] = None,
    email: Annotated[Optional[list[str]], typer.Option(help="An email address (repeatable).")] = None,
    phone: Annotated[Optional[list[str]], typer.Option(help="A phone number (repeatable).")] = None,
    loyalty_card: Annotated[Optional[list[str]], typer.Option(help="A loyalty card (repeatable).")] = None,
    file: Annotated[
        Optional[Path],
        typer.Option(
            help="CSV whose header names a kind per column (customer_id, email, phone, loyalty_card, "
            "device_id), or one customer id per line."
        ),
    ] = None,
    resume: Annotated[
        bool, typer.Option("--resume", help="Finish requests a killed run left pending.")
    ] = False,
    audit: Annotated[
        bool, typer.Option("--audit", help="Show the erasure audit instead of erasing.")
    ] = False,
    actor: ActorOption = None,
    as_json: Annotated[bool, _json_option("forget")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Right to erasure: remove customers (found through the identity links) from every place the
    workspace holds them, write tombstones so re-ingested files do not bring them back, and record
    one audit entry (hashed subject, time, actor, counts). Identifiers are never printed."""
    from cxpredict import render
    from features import erasure

    given = {"customer_id": customer_id, "email": email, "phone": phone, "loyalty_card": loyalty_card}
    identifiers = {kind: values for kind, values in given.items() if values}
    if sum(bool(x) for x in (identifiers or file, resume, audit)) != 1:
        raise typer.BadParameter("give identifiers (or --file), or --resume, or --audit")
    ws = _workspace(workspace)
    if audit:
        entries = erasure.read_audit(ws)
        _show(as_json, entries, render.erasure_audit, documents.forget_document)
        return
    with _refusal("cannot forget", erasure.ErasureError), _stdout_for(as_json):
        if resume:
            entries = erasure.resume(ws)
        else:
            request = erasure.read_request_file(file) if file is not None else erasure.Request(identifiers={})
            for kind, values in identifiers.items():
                request.identifiers.setdefault(kind, []).extend(values)
            entries = [erasure.forget(ws, request, actor=actor)]
    _show(as_json, entries, render.forgotten, documents.forget_document)


# ---- monitor and retrain ----------------------------------------------------------------------


@app.command()
def monitor(
    as_of: DayOption = None,
    task: Annotated[
        str, typer.Option("--task", help="A task or all.", callback=_tasks, autocompletion=_task_names)
    ] = "all",
    reference_rows: Annotated[
        int, typer.Option(min=100, help="Rows sampled from each champion's training reference.")
    ] = 20_000,
    current_rows: Annotated[
        int, typer.Option(min=100, help="Customers sampled from the current snapshot.")
    ] = 50_000,
    drift_share: Annotated[
        float,
        typer.Option(min=0.01, max=1.0, help="Share of a task's features drifting that raises its alarm."),
    ] = 0.5,
    as_json: Annotated[bool, _json_option("monitor")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Drift and realised performance of every champion: exit 0 healthy, 3 a threshold crossed.

    Feature drift: each champion's training reference vs the snapshot at --as-of (Evidently's
    normed Wasserstein / Jensen-Shannon distances, threshold 0.1). Prediction drift: the latest
    kept score output vs the champion's held-out predictions. Realised performance: kept score
    outputs whose horizon has passed, against the labels matured since; for uplift, each action's
    Qini on the decisions logged since the version's as-of (alarm: below random targeting). Writes
    reports/monitor-<as-of>.html and .json and logs a run to the MLflow experiment cx-monitoring.
    Exit codes: 0 healthy; 3 a threshold crossed (drift or degraded performance); 2 nothing to
    monitor (no champion) or the workspace not ready."""
    from cxpredict import render
    from training.monitor import MonitorConfig, monitor_workspace

    render.quiet_libraries()
    config = MonitorConfig(reference_rows=reference_rows, current_rows=current_rows, drift_share=drift_share)
    ws = _workspace(workspace)
    with _refusal("cannot monitor"), _stdout_for(as_json):
        result = monitor_workspace(ws, _day(as_of), task, config)
    _show(as_json, result, render.monitored, documents.monitor_document)
    raise typer.Exit(code=result.exit_code)


@app.command()
def retrain(
    reason: Annotated[Optional[str], typer.Option(help="Why (recorded on promotions).")] = None,
    transactions: Annotated[
        Optional[list[Path]],
        typer.Option(help="New transactions file(s) to ingest first (CSV or Parquet; repeatable)."),
    ] = None,
    as_of: Annotated[
        Optional[str],
        typer.Option(
            "--as-of",
            show_default=False,
            help="YYYY-MM-DD (UTC midnight) of the features and training; omitted or 'latest': today.",
        ),
    ] = None,
    actor: ActorOption = None,
    as_json: Annotated[bool, _json_option("retrain")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Ingest, features, train what changed, gate, promote: the one job a scheduler runs.

    Ingests new transaction files (if given), builds features, trains every task whose data,
    cutoffs, features or code changed, gates each new version against its champion and promotes
    what passes. A run with nothing new trains nothing. Exits 1 when no task could be trained, 2 on
    a refusal."""
    from cxpredict import render
    from features.ingest import IngestError
    from training.retrain import retrain_workspace

    render.quiet_libraries()
    ws = _workspace(workspace)
    with _refusal("cannot retrain", IngestError), _stdout_for(as_json), render.progress(errors) as progress:
        result = retrain_workspace(
            ws, reason, transactions or (), _day(as_of), actor=actor, progress=progress
        )
    _show(as_json, result, render.retrained, documents.retrain_document)
    raise typer.Exit(code=result.exit_code)


@app.command()
def impact(
    since: Annotated[
        Optional[str],
        typer.Option("--since", show_default=False, help="YYYY-MM-DD: only decisions from this day on."),
    ] = None,
    horizon_days: Annotated[
        int, typer.Option("--horizon-days", min=1, max=365, help="days after a decision its outcomes count")
    ] = 30,
    as_json: Annotated[bool, _json_option("impact")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """Decisions against the holdout, measured from transactions: purchase, retention and revenue
    within the horizon of each decision, overall and per action, with bootstrap intervals; written to
    reports/impact-<as-of>.json and .png and logged to the MLflow experiment cx-impact."""
    from cxpredict import render
    from serving.impact import impact_workspace

    render.quiet_libraries()
    ws = _workspace(workspace)
    with _refusal("cannot measure impact"), _stdout_for(as_json):
        report = impact_workspace(ws, _day(since), horizon_days)
    _show(as_json, report, render.impact, documents.impact_document)


@app.command()
def simulate(
    days: Annotated[int, typer.Option(min=7, max=365, help="Simulated days (the world's last days).")] = 60,
    customers: Annotated[int, typer.Option(min=500, help="Customers in the generated world.")] = 5_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same run.")] = 1,
    end: Annotated[
        Optional[str], typer.Option(help="End of the world, exclusive, YYYY-MM-DD (default: today).")
    ] = None,
    refresh_every: Annotated[
        int, typer.Option("--refresh-every", min=1, help="Days between feature refreshes.")
    ] = 7,
    retrain_every: Annotated[
        int, typer.Option("--retrain-every", min=1, help="Days between runs of retrain.")
    ] = 30,
    catalogue: Annotated[
        Optional[Path],
        typer.Option(
            help="Action catalogue to decide with (default: the shipped one with every success worth one "
            "purchase, no cost and no eligibility rule, so the policy optimises what is measured).",
            exists=True,
            dir_okay=False,
        ),
    ] = None,
    as_json: Annotated[bool, _json_option("simulate")] = False,
    workspace: WorkspaceOption = None,
) -> None:
    """The closed loop on a generated world, day by day: decisions for the day's triggers through the
    /decide code, the world's true response, outcomes posted, data ingested, features refreshed and
    retrain on a schedule; ends with the impact report and the value of our policy against random
    targeting, churn-risk targeting and the oracle's best, with intervals. Needs an empty workspace."""
    from cxpredict import render
    from serving.simulate import SimulateConfig, simulate as run_simulation

    ws = _workspace(workspace)
    if ws.raw_dir.exists() and any(ws.raw_dir.iterdir()):
        raise typer.BadParameter(
            f"{ws.root} already holds data: simulate generates its own world, give an empty workspace",
            param_hint="--workspace",
        )
    render.quiet_libraries()
    config = SimulateConfig(days=days, customers=customers, seed=seed, end=(_day(end) or _today()).date(),
                            refresh_every_days=refresh_every, retrain_every_days=retrain_every,
                            catalogue=catalogue)  # fmt: skip
    with render.progress(errors) as progress, _refusal("the simulation stopped"), _stdout_for(as_json):
        report = run_simulation(ws, config, progress)
    _show(as_json, report, render.simulated, documents.simulate_document)


if __name__ == "__main__":  # pragma: no cover
    app()
