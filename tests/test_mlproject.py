"""The MLflow project file: MLflow finds `MLproject`, the real file is `mlproject.yaml`."""

import shlex
from pathlib import Path

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
