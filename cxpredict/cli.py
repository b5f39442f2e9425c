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
    logging.getLogger("mlflow.utils.environment").setLevel(logging.ERROR)
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
    serve_api: Annotated[
        bool, typer.Option("--serve/--no-serve", help="End by serving the API (Ctrl-C stops it).")
    ] = True,
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the API.")] = 3000,
    workspace: WorkspaceOption = None,
) -> None:
    """The whole job on the embedded defaults: generate, ingest, features, train, promote, score, serve."""
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
    console.rule("5 · promote: challenger → champion only through the gate")
    _demo_promote(ws, today, results)
    console.rule("6 · score every known customer with the champion models")
    from training.run import score_workspace
    from training.tracking import resolve_tracking, version_info

    out = ws.reports_dir / f"scores-{today:%Y-%m-%d}.parquet"
    target = resolve_tracking(ws)
    alias = "champion"
    without = [task for task in results if version_info(target, task, alias) is None]
    if without:
        alias = "challenger"
        console.print(
            f"[yellow]no champion for {', '.join(without)}[/yellow] (no version beat both baselines and passed the "
            "gate): the demo scores and serves the versions just trained (alias challenger)"
        )
    with _progress() as progress:
        summary = score_workspace(ws, today, out, alias=alias, progress=progress)
    console.print(f"{summary.customers:,} customers scored into {summary.path} ({summary.seconds:.1f} s)")
    console.print(f"MLflow UI: mlflow ui --backend-store-uri sqlite:///{ws.mlflow_dir / 'mlflow.db'}")
    if serve_api:
        console.rule("7 · serve the prediction API (BentoML)")
        _demo_serve(ws, port, out, alias)


def _demo_promote(ws: Workspace, as_of: datetime, results: dict) -> None:
    """Versions that training did not make champion (a champion already existed) go through the gate."""
    from training.commands import promote_command
    from training.promotion import PromotionError, evaluation_sets
    from training.run import feast_features_for, load_tables

    pending = [task for task, result in results.items() if result.status == "trained" and not result.champion]
    for task, result in results.items():
        if result.champion:
            console.print(f"{result.model_name} version {result.model_version}: champion ({result.decision})")
    if not pending:
        return
    evaluation = evaluation_sets(load_tables(ws, as_of), feast_features_for(ws), as_of)
    for task in pending:
        console.print(f"[bold]{results[task].model_name}[/bold] version {results[task].model_version} against the champion:")
        try:
            promote_command(ws, task, version=results[task].model_version, evaluation_set=evaluation, console=console)
        except PromotionError as error:
            console.print(f"[yellow]not promoted:[/yellow] {error}")


def _demo_serve(ws: Workspace, port: int, scores_path: Path, alias: str) -> None:
    """Start the API, show one real answer, then keep serving in the foreground until Ctrl-C."""
    import json
    import os
    import signal
    import subprocess
    import time

    import httpx
    import pandas as pd

    env = _serve_environment(ws, alias, 30.0)
    key_file = env.get("CXPREDICT_API_KEYS_FILE")
    key = (os.environ.get("CXPREDICT_API_KEYS") or "").split(",")[0].strip()
    if not key and key_file:
        key = next(line.split("#")[0].strip() for line in Path(key_file).read_text().splitlines() if line.split("#")[0].strip())
    command = _serve_command(port, "127.0.0.1")
    log_path = ws.serving_dir / "server.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = log_path.open("ab")
    server = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"

    def _terminated(*_: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _terminated)
    try:
        deadline = time.monotonic() + 180
        with console.status("starting the API server (loading champions, warming the online store)"):
            while time.monotonic() < deadline and server.poll() is None:
                try:
                    if httpx.get(f"{url}/readyz", timeout=2).status_code in (200, 503):
                        break
                except httpx.TransportError:
                    time.sleep(0.5)
        if server.poll() is not None:
            console.print(f"[red]the API server stopped[/red] (exit {server.returncode}); see {log_path}")
            raise typer.Exit(code=1)
        ready = httpx.get(f"{url}/readyz", timeout=5).json()
        if not ready["ready"]:
            console.print(f"[yellow]not ready:[/yellow] {'; '.join(ready['reasons'])}")
        scores = pd.read_parquet(scores_path, columns=["customer_id", "churn_probability"]).dropna()
        at_risk = scores.iloc[(scores["churn_probability"] - 0.65).abs().argsort()[:1]]
        sample = [at_risk["customer_id"].iloc[0], "NEW-CUSTOMER-1"]
        body = {"customer_ids": sample}
        answer = httpx.post(f"{url}/predict", json=body, headers={"Authorization": f"Bearer {key}"}, timeout=30)
        console.print(f"POST {url}/predict {json.dumps(body)}  → {answer.status_code}")
        console.print_json(answer.text)
        console.print(
            f"\nAPI: {url}  docs: {url}/docs  health: {url}/readyz  metrics: {url}/metrics\n"
            f"try: curl -s -X POST {url}/predict -H \"Authorization: Bearer $(grep -v '^#' {key_file or '<your key>'})\" "
            f"-H 'Content-Type: application/json' -d '{json.dumps(body)}'\n"
            f"server log: {log_path}   [bold]Ctrl-C stops the server[/bold]"
        )
        server.wait()
    except KeyboardInterrupt:
        console.print("stopping the API server")
    finally:
        if server.poll() is None:
            os.killpg(server.pid, signal.SIGTERM)
            try:
                server.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(server.pid, signal.SIGKILL)
        log.close()


def _api_keys_file(ws: Workspace) -> Path:
    """The workspace's API keys file, created with one random key when no key is configured.

    The key is written to a file readable by the owner only and never printed, so it does not end
    up in terminal logs; callers read it from the file."""
    import secrets

    path = ws.serving_dir / "api_keys"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"# API keys of this workspace's server, one per line\n{secrets.token_urlsafe(24)}\n")
        path.chmod(0o600)
    return path


def _default_workers() -> int:
    import os

    return max(1, min(os.cpu_count() or 1, 4))


def _serve_command(port: int, host: str) -> list[str]:
    return [sys.executable, "-m", "bentoml", "serve", "serving.service:CXPredict", "--port", str(port), "--host", host]


def _serve_environment(ws: Workspace, alias: str, reload_seconds: float, workers: int | None = None) -> dict[str, str]:
    import os

    env = dict(os.environ, CXPREDICT_HOME=str(ws.root), CXPREDICT_MODEL_ALIAS=alias)
    env["CXPREDICT_RELOAD_SECONDS"] = str(reload_seconds)
    workers = workers or _default_workers()
    overrides = [part for part in env.get("BENTOML_CONFIG_OPTIONS", "").split() if part]
    env["BENTOML_CONFIG_OPTIONS"] = " ".join([*overrides, f"services.cxpredict.workers={workers}"])
    env.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    env.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if not env.get("CXPREDICT_API_KEYS") and not env.get("CXPREDICT_API_KEYS_FILE"):
        keys = _api_keys_file(ws)
        env["CXPREDICT_API_KEYS_FILE"] = str(keys)
        console.print(f"API keys: {keys} (set CXPREDICT_API_KEYS or CXPREDICT_API_KEYS_FILE to use your own)")
    return env


@app.command()
def serve(
    port: Annotated[int, typer.Option(min=1, max=65535, help="Port of the HTTP API.")] = 3000,
    host: Annotated[str, typer.Option(help="Interface to listen on (0.0.0.0 for every interface).")] = "127.0.0.1",
    alias: Annotated[str, typer.Option(help="Registry alias served for every task.")] = "champion",
    reload_seconds: Annotated[
        float, typer.Option(min=0, help="How often to check the registry alias for a new version (0: never).")
    ] = 30.0,
    workers: Annotated[
        Optional[int], typer.Option(min=1, help="Worker processes (default: one per CPU, at most 4).", show_default=False)
    ] = None,
    workspace: WorkspaceOption = None,
) -> None:
    """Serve churn, next purchase and unmet needs over HTTP (BentoML), with the champion models."""
    import os

    ws = _workspace(workspace)
    env = _serve_environment(ws, alias, reload_seconds, workers)
    console.print(f"API docs: http://{host}:{port}/docs   health: /livez /readyz   metrics: /metrics")
    sys.stdout.flush()
    os.execvpe(sys.executable, _serve_command(port, host), env)


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
