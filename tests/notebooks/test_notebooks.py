"""The data scientists' notebooks run top to bottom, in order, in one fresh workspace, and are
committed without outputs.

Why execute them: a renamed function or column breaks a notebook silently otherwise. They run as a
data scientist would: cwd ``notebooks/``, kernel ``python3`` (jupyter_client launches it with the
current interpreter, so the project's own environment), workspace and world size from
``CXPREDICT_HOME`` / ``CXPREDICT_NOTEBOOK_CUSTOMERS``, the workspace's own MLflow store.
Each notebook's wall time is shown in the terminal summary.
"""

from __future__ import annotations

import json
import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import nbformat
import pandas as pd
import pytest
from nbclient import NotebookClient

NOTEBOOK_DIR = Path(__file__).resolve().parents[2] / "notebooks"
CUSTOMERS = 1_500
CELL_TIMEOUT_S = 300
CONTACT_PATTERNS = {
    ("customers", "email"): re.compile(r"[\w.+-]+@[\w-]+\.[\w.-]+"),
    ("customers", "phone"): re.compile(r"\+\d{9,}"),
    ("customers", "loyalty_card"): re.compile(r"\bLC\d{8,}"),
    ("events", "device_id"): re.compile(r"\bdev-\d{8,}"),
}
"""Shapes of the generated world's contact identifiers, by the raw source and column holding them."""
CAMPAIGN_COLUMNS = [
    "customer_id",
    "churn_probability",
    "churn_risk_band",
    "unmet_need",
    "unmet_need_probability",
    "purchase_probability",
    "next_category_1",
]
AT_RISK_BANDS = {"medium", "high"}
MIN_NEED_PROBABILITY = 0.10


@dataclass(frozen=True)
class Notebook:
    """A notebook to execute, in list order. ``environment``: names of module- or session-scoped
    fixtures returning extra environment variables (``dict[str, str]``) for its kernel; each is
    requested just before the notebook runs, i.e. after the notebooks before it have filled
    ``notebook_workspace``."""

    name: str
    environment: tuple[str, ...] = ()
    plots: bool = True

    @property
    def path(self) -> Path:
        return NOTEBOOK_DIR / f"{self.name}.ipynb"


NOTEBOOKS = [
    Notebook("01_unified_profile"),
    Notebook("02_train_and_compare"),
    Notebook("03_explain_and_act"),
    Notebook("04_call_the_api", environment=("api_server",), plots=False),
    Notebook("05_decide_and_measure", environment=("api_server",)),
    Notebook("06_bring_your_own_data"),
]
API_KEY = "notebook-test-key"
READY_TIMEOUT_S = 180


@dataclass(frozen=True)
class Executed:
    notebook: nbformat.NotebookNode
    seconds: float


@dataclass(frozen=True)
class Run:
    """The shared workspace after every notebook ran, and each executed notebook by name."""

    workspace: Path
    notebooks: dict[str, Executed]


def kernel_environment(workspace: Path) -> dict[str, str]:
    """This process's environment with the notebooks' workspace and world size; without
    ``MLFLOW_TRACKING_URI``, so runs go to the workspace's own store, as on a fresh machine."""
    environment = {
        **os.environ,
        "CXPREDICT_HOME": str(workspace),
        "CXPREDICT_NOTEBOOK_CUSTOMERS": str(CUSTOMERS),
        "OMP_WAIT_POLICY": "PASSIVE",
        "MLFLOW_DISABLE_TELEMETRY": "true",
    }
    environment.pop("MLFLOW_TRACKING_URI", None)
    return environment


def execute(notebook: Notebook, environment: dict[str, str]) -> Executed:
    """Run every cell; nbclient raises ``CellExecutionError`` (with the traceback) if one fails."""
    document = nbformat.read(notebook.path, as_version=4)
    resources = {"metadata": {"path": str(NOTEBOOK_DIR)}}
    client = NotebookClient(document, timeout=CELL_TIMEOUT_S, kernel_name="python3", resources=resources)
    began = time.perf_counter()
    client.execute(env=environment)
    return Executed(document, time.perf_counter() - began)


@pytest.fixture(scope="module")
def notebook_workspace(tmp_path_factory) -> Path:
    """The one workspace all notebooks share; it does not exist until the first notebook builds it."""
    return tmp_path_factory.mktemp("notebooks") / "ws"


@pytest.fixture(scope="module")
def api_server(notebook_workspace) -> Iterator[dict[str, str]]:
    """``cxpredict serve`` on the notebooks' workspace (started once 01–03 have filled it), serving
    the alias the notebooks read (champion, else the challenger just trained)."""
    import signal
    import socket
    import subprocess
    import sys

    import httpx

    from cxpredict import tasks as registry
    from training.tracking import resolve_tracking, version_info

    from cxpredict.workspace import resolve_workspace

    target = resolve_tracking(resolve_workspace(notebook_workspace))
    alias = "champion" if all(version_info(target, task) for task in registry.names()) else "challenger"
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        sys.executable,
        "-m",
        "cxpredict.cli",
        "serve",
        "--workspace",
        str(notebook_workspace),
        "--port",
        str(port),
        "--alias",
        alias,
        "--reload-seconds",
        "0",
        "--workers",
        "1",
    ]
    environment = kernel_environment(notebook_workspace) | {"CXPREDICT_API_KEYS": API_KEY}
    log = notebook_workspace / "server.log"
    with log.open("wb") as handle:
        server = subprocess.Popen(
            command, stdout=handle, stderr=subprocess.STDOUT, env=environment, start_new_session=True
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while time.monotonic() < deadline:
            assert server.poll() is None, log.read_text()[-3000:]
            try:
                if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(0.3)
        else:
            pytest.fail(f"the API server was not ready in {READY_TIMEOUT_S} s: {log.read_text()[-3000:]}")
        yield {"CXPREDICT_API_URL": url, "CXPREDICT_API_KEY": API_KEY}
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(60)


@pytest.fixture(scope="module")
def run(request, notebook_workspace, notebook_timings) -> Run:
    """Every notebook of ``NOTEBOOKS`` executed in order; the first failing cell fails the fixture."""
    workspace = notebook_workspace
    base = kernel_environment(workspace)
    executed: dict[str, Executed] = {}
    for notebook in NOTEBOOKS:
        extra = {}
        for fixture in notebook.environment:
            extra.update(request.getfixturevalue(fixture))
        executed[notebook.name] = execute(notebook, {**base, **extra})
        notebook_timings[notebook.name] = executed[notebook.name].seconds
    return Run(workspace, executed)


def code_cells(document: nbformat.NotebookNode) -> list[nbformat.NotebookNode]:
    return [cell for cell in document.cells if cell.cell_type == "code"]


def output_texts(document: nbformat.NotebookNode) -> Iterator[str]:
    for cell in code_cells(document):
        for output in cell.outputs:
            if output.output_type == "stream":
                yield output.text
            for mime, value in output.get("data", {}).items():
                if mime.startswith("text/"):
                    yield value


# --------------------------------------------------------------------------- committed form (fast)


@pytest.mark.parametrize("path", sorted(NOTEBOOK_DIR.glob("*.ipynb")), ids=lambda path: path.stem)
def test_given_a_committed_notebook_then_it_has_no_outputs_and_no_execution_counts(path):
    document = nbformat.read(path, as_version=4)
    nbformat.validate(document)
    cells = code_cells(document)
    assert cells
    assert [cell.execution_count for cell in cells] == [None] * len(cells)
    assert [cell.outputs for cell in cells] == [[]] * len(cells)
    assert document.metadata["kernelspec"]["name"] == "python3"


def test_given_the_notebooks_folder_then_ci_executes_every_notebook_in_it():
    assert sorted(path.stem for path in NOTEBOOK_DIR.glob("*.ipynb")) == sorted(n.name for n in NOTEBOOKS)


# --------------------------------------------------------------------------- executed in order (slow)


@pytest.mark.slow
def test_given_a_fresh_workspace_when_the_notebooks_run_in_order_then_every_cell_runs_and_plots(run):
    for name, executed in run.notebooks.items():
        cells = code_cells(executed.notebook)
        assert all(cell.execution_count is not None for cell in cells), name
        outputs = [output for cell in cells for output in cell.outputs]
        assert not [output for output in outputs if output.output_type == "error"], name
        if next(n for n in NOTEBOOKS if n.name == name).plots:
            assert any("image/png" in output.get("data", {}) for output in outputs), f"{name} drew no plot"


@pytest.mark.slow
def test_given_the_executed_notebooks_then_no_output_shows_a_contact_identifier(run):
    for (source, column), pattern in CONTACT_PATTERNS.items():
        raw = pd.read_parquet(run.workspace / "raw" / f"{source}.parquet", columns=[column])[column].dropna()
        assert len(raw) and raw.str.fullmatch(pattern.pattern).all(), f"{column}: the pattern misses values"
    for name, executed in run.notebooks.items():
        for text in output_texts(executed.notebook):
            assert not any(pattern.search(text) for pattern in CONTACT_PATTERNS.values()), f"{name} shows one"


@pytest.mark.slow
def test_given_notebook_02_then_every_task_has_logged_runs_against_baselines_and_oracle_and_one_version(run):
    import mlflow

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{run.workspace / 'mlflow' / 'mlflow.db'}")
    for name in ("cx-churn", "cx-next-purchase", "cx-unmet-needs"):
        experiment = client.get_experiment_by_name(name)
        assert experiment is not None, name
        runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'FINISHED'")
        assert runs, name
        for logged in runs:
            assert {"auc", "auc_logistic", "auc_rf_heuristic", "auc_oracle"} <= set(logged.data.metrics), name
        assert len(client.search_model_versions(f"name = '{name}'")) == 1, f"{name}: a notebook retrained"


@pytest.mark.slow
def test_given_notebook_03_then_the_campaign_holds_exactly_the_consenting_at_risk_customers_with_a_need(run):
    from cxpredict.workspace import resolve_workspace
    from features.catalog import read_profile
    from training.data import withheld_consent

    ws = resolve_workspace(run.workspace)
    reports = ws.reports_dir
    [campaign_path] = reports.glob("campaign-*.csv")
    [scores_path] = reports.glob("scores-*.parquet")
    campaign = pd.read_csv(campaign_path)
    scores = pd.read_parquet(scores_path)
    profile = read_profile(ws).set_index("customer_id")
    as_of = pd.Timestamp(scores_path.stem.removeprefix("scores-"), tz="UTC")

    assert list(campaign.columns) == CAMPAIGN_COLUMNS
    assert len(campaign) > 0
    assert not campaign["customer_id"].isin(withheld_consent(ws, as_of)).any()
    assert profile.loc[campaign["customer_id"], "consent_marketing"].eq(True).all()

    needs = scores.filter(regex=r"^need_.*_probability$")
    may_contact = scores["customer_id"].map(profile["consent_marketing"].eq(True)).fillna(False).astype(bool)
    at_risk = scores["churn_risk_band"].isin(AT_RISK_BANDS)
    wanted = scores[at_risk & (needs.max(axis=1) >= MIN_NEED_PROBABILITY) & may_contact]
    assert sorted(campaign["customer_id"]) == sorted(wanted["customer_id"])

    exported = campaign.merge(scores, on="customer_id", suffixes=("", "_scored"), validate="one_to_one")
    best = exported[needs.columns].max(axis=1).to_numpy()
    named = [row[f"need_{row['unmet_need']}_probability"] for _, row in exported.iterrows()]
    assert exported["unmet_need_probability"].to_numpy() == pytest.approx(best)
    assert named == pytest.approx(best)
    scored_churn = exported["churn_probability_scored"].to_numpy()
    assert exported["churn_probability"].to_numpy() == pytest.approx(scored_churn)


@pytest.mark.slow
def test_given_notebook_06_then_the_custom_sql_features_are_trained_on_and_explain_scores(run):
    texts = "\n".join(output_texts(run.notebooks["06_bring_your_own_data"].notebook))
    assert "custom views: ['returns']; refused: []" in texts
    assert "custom features in the model: ['days_since_last_return', 'spend_60d']" in texts
    counts = re.search(r"\{'days_since_last_return': (\d+), 'spend_60d': (\d+)\}", texts)
    assert counts and int(counts.group(1)) + int(counts.group(2)) > 0, "no custom feature among the drivers"


@pytest.mark.slow
def test_given_notebook_05_then_outcomes_count_once_and_every_decision_is_pending(run):
    from cxpredict.workspace import resolve_workspace
    from features.decision_log import DecisionLog

    ws = resolve_workspace(run.workspace)
    log = DecisionLog.of(ws)
    try:
        decisions, by_kind = log.decisions(), log.outcome_counts()
    finally:
        log.close()
    [path] = ws.reports_dir.glob("impact-*.json")
    impact = json.loads(path.read_text())
    holdout = [d for d in decisions if d["holdout"]]
    texts = "\n".join(output_texts(run.notebooks["05_decide_and_measure"].notebook))

    assert holdout and not [d for d in holdout if d["actions"]]
    assert any(d["withheld"] for d in holdout), "no holdout decision logged what the policy would have done"
    assert any(d["actions"] for d in decisions if not d["holdout"])
    assert by_kind == {"delivered": 1, "opened": 1, "converted": 1}, "a repeated outcome was counted twice"
    counted = (impact["decisions"], impact["holdout_decisions"], impact["outcomes"])
    assert counted == (len(decisions), len(holdout), 3)
    assert impact["pending_decisions"] == len(decisions) and impact["measured_customers"] == 0
    assert re.search(r"placebo: [1-9][\d,]* customers measured, 0 pending", texts)
