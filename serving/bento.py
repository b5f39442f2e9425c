"""Build a Bento of the prediction API pinned to the registry's current champion versions.

``python -m serving.bento [--workspace W]`` stages the project's packages, a
``pinned_models.json`` with the champion versions (the service serves exactly those and never
follows the alias) and the locked requirements into a temporary build context, then runs
``bentoml build``; it prints the Bento tag. The Bento holds code and pins, not data: at run time it
reads the online store and downloads the pinned versions from the MLflow registry named by
``CXPREDICT_HOME`` / ``MLFLOW_TRACKING_URI``, like ``cxpredict serve``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Mapping
from importlib import metadata
from pathlib import Path

import yaml

from cxpredict.workspace import Workspace, resolve_workspace
from serving.settings import PINNED_FILE

PROJECT = Path(__file__).resolve().parents[1]
PACKAGES = ("cxpredict", "features", "training", "serving")
SOURCE_PATTERNS = ("*.py", "*.yaml", ".feastignore")


def champion_versions(ws: Workspace) -> dict[str, str]:
    """Task -> champion version now; refuses when a task has none (a Bento must serve every block)."""
    from cxpredict import tasks as registry
    from training.tracking import resolve_tracking, version_info

    target = resolve_tracking(ws)
    versions, missing = {}, []
    for spec in registry.all_tasks():
        info = version_info(target, spec.name)
        if info is None:
            missing.append(spec.model_name)
        else:
            versions[spec.name] = info["version"]
    if missing:
        raise LookupError(f"no champion for {', '.join(missing)}: promote one before building a Bento")
    return versions


def requirements() -> str:
    """The locked third-party requirements (``uv export`` of ``uv.lock``), else the installed ones."""
    uv = _uv()
    if (PROJECT / "uv.lock").exists() and Path(uv).exists():
        exported = subprocess.run(
            [uv, "export", "--frozen", "--no-hashes", "--no-dev", "--no-emit-project"],
            cwd=PROJECT, check=True, capture_output=True, text=True,
        )  # fmt: skip
        return exported.stdout
    installed = sorted(
        f"{d.metadata['Name']}=={d.version}" for d in metadata.distributions() if d.metadata["Name"]
    )
    return "\n".join(installed) + "\n"


def bentofile(versions: Mapping[str, str]) -> dict:
    return {
        "service": "serving.service:CXPredict",
        "description": "CX Predict prediction API (churn, next purchase, unmet needs), pinned to "
        + ", ".join(f"{task} v{version}" for task, version in versions.items()),
        "labels": {f"{task}_version": version for task, version in versions.items()}
        | {"project": "cxpredict"},
        "include": [f"{package}/**/{pattern}" for package in PACKAGES for pattern in SOURCE_PATTERNS]
        + [PINNED_FILE.name],
        "exclude": ["**/__pycache__/**"],
        "python": {"requirements_txt": "requirements.txt", "lock_packages": False},
        "envs": [{"name": "CXPREDICT_RELOAD_SECONDS", "value": "0"}],
    }


def stage(context: Path, versions: Mapping[str, str]) -> Path:
    """Copy the packages into ``context`` with the pins, requirements and bentofile; returns the bentofile."""
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    (context / PINNED_FILE.name).write_text(json.dumps(dict(versions), indent=1))
    (context / "requirements.txt").write_text(requirements())
    path = context / "bentofile.yaml"
    path.write_text(yaml.safe_dump(bentofile(versions), sort_keys=False))
    return path


def _uv() -> str:
    return shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")


def build(ws: Workspace) -> tuple[str, dict[str, str]]:
    """Build the Bento; returns its tag and the pinned versions."""
    versions = champion_versions(ws)
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(_uv()).parent), environment.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="cxpredict-bento-") as folder:
        context = Path(folder)
        path = stage(context, versions)
        done = subprocess.run(
            [sys.executable, "-m", "bentoml", "build", "-f", str(path), "--output", "tag", str(context)],
            check=False, capture_output=True, text=True, env=environment,
        )  # fmt: skip
        if done.returncode:
            raise RuntimeError(f"bentoml build failed: {done.stderr.strip().splitlines()[-1]}")
    tag = done.stdout.strip().splitlines()[-1].removeprefix("__tag__:").strip()
    return tag, versions


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workspace", type=Path, default=None)
    args = parser.parse_args()
    tag, versions = build(resolve_workspace(args.workspace))
    print(f"built {tag} pinned to " + ", ".join(f"{task} v{version}" for task, version in versions.items()))
    print(f"serve it: CXPREDICT_HOME=<workspace> bentoml serve {tag}   (or: bentoml containerize {tag})")


if __name__ == "__main__":  # pragma: no cover
    main()
