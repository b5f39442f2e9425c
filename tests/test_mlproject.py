"""The MLflow project file: MLflow finds `MLproject`, the real file is `mlproject.yaml`."""

import os
import shlex
import subprocess
from pathlib import Path

import mlflow
import pytest
from mlflow.projects import _project_spec

from cxpredict.cli import app

ROOT = Path(__file__).resolve().parents[1]


def _cli_commands() -> set[str]:
    import typer.main

    return set(typer.main.get_command(app).commands)


def test_mlproject_is_a_symlink_to_mlproject_yaml():
    link = ROOT / "MLproject"
    assert link.is_symlink()
    assert link.resolve() == (ROOT / "mlproject.yaml").resolve()


def test_mlflow_loads_every_entry_point_and_each_calls_a_real_cli_command():
    # given the project folder, when MLflow loads it as a project
    project = _project_spec.load_project(str(ROOT))
    entry_points = project._entry_points
    # then it finds the pipeline's entry points, each rendering a cxpredict command that exists
    assert {"generate", "ingest"} <= set(entry_points)
    commands = _cli_commands()
    for name, entry in entry_points.items():
        rendered = shlex.split(entry.compute_command({}, storage_dir="/tmp"))
        assert rendered[0] == "cxpredict", name
        assert rendered[1] in commands, f"entry point {name} calls unknown command {rendered[1]}"
        assert "--workspace" in rendered, f"entry point {name} must pin the workspace"


def test_entry_point_parameters_reach_the_command():
    project = _project_spec.load_project(str(ROOT))
    command = project.get_entry_point("generate").compute_command(
        {"customers": "123", "seed": "7"}, storage_dir="/tmp"
    )
    assert "--customers 123" in command and "--seed 7" in command


def test_every_pipeline_step_has_an_entry_point_pinned_to_a_workspace():
    project = _project_spec.load_project(str(ROOT))
    assert {"generate", "ingest", "features", "train", "evaluate", "score"} <= set(project._entry_points)
    command = project.get_entry_point("train").compute_command(
        {"task": "next-purchase", "as_of": "2026-10-01", "workspace": "/tmp/w"}, storage_dir="/tmp"
    )
    assert shlex.split(command)[:3] == ["cxpredict", "train", "next-purchase"]
    assert "--as-of 2026-10-01" in command and "--workspace /tmp/w" in command


@pytest.mark.slow
def test_mlflow_run_of_the_train_entry_point_registers_a_churn_model(
    featurised_world, copy_workspace, tmp_path
):
    # given a featurised workspace of our own and the locked environment's tools on PATH
    ws = copy_workspace(featurised_world.ws, tmp_path / "ws")
    env = {key: value for key, value in os.environ.items() if not key.startswith("MLFLOW_")}
    env["PATH"] = f"{ROOT / '.venv' / 'bin'}{os.pathsep}{env.get('PATH', '')}"
    env.update(OMP_WAIT_POLICY="PASSIVE", MLFLOW_DISABLE_TELEMETRY="true", CXPREDICT_HOME=str(ws.root))
    env["MLFLOW_TRACKING_URI"] = ws.tracking_uri  # `mlflow run` records its own run there too
    # when MLflow runs the train entry point for churn
    completed = subprocess.run(
        ["mlflow", "run", ".", "-e", "train", "-P", "task=churn", "-P", "as_of=2026-10-01",
         "-P", f"workspace={ws.root}", "--env-manager", "local"],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    # then the command succeeded and the registry holds a churn version
    assert completed.returncode == 0, completed.stderr[-3000:]
    client = mlflow.MlflowClient(tracking_uri=env["MLFLOW_TRACKING_URI"])
    versions = client.search_model_versions("name = 'cx-churn'")
    assert [str(v.version) for v in versions] == ["1"]
    assert str(client.get_model_version_by_alias("cx-churn", "champion").version) == "1"
    # and the project's run points at the task run it produced
    churn_run = versions[0].run_id
    project_runs = client.search_runs([client.get_experiment_by_name("Default").experiment_id])
    assert [r.data.tags.get("cxpredict.churn.run_id") for r in project_runs] == [churn_run]
    assert not (ROOT / "mlruns").exists()


def test_the_retrain_and_monitor_entry_points_run_the_scheduler_commands():
    # given the project, when the retrain entry point is rendered with a reason holding spaces
    project = _project_spec.load_project(str(ROOT))
    command = project.get_entry_point("retrain").compute_command(
        {"reason": "new month of data", "workspace": "/tmp/w"}, storage_dir="/tmp"
    )
    # then it is one `cxpredict retrain` with the reason kept whole and the workspace pinned
    rendered = shlex.split(command)
    assert rendered[:2] == ["cxpredict", "retrain"]
    assert rendered[rendered.index("--reason") + 1] == "new month of data"
    assert rendered[rendered.index("--workspace") + 1] == "/tmp/w"
    assert shlex.split(project.get_entry_point("monitor").compute_command({}, storage_dir="/tmp"))[:2] == [
        "cxpredict",
        "monitor",
    ]
