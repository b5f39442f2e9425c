"""Build a self-contained Bento of the prediction API, pinned to today's champion versions.

``python -m serving.bento [--workspace W]`` imports each task's champion version from the MLflow
registry into the BentoML model store (``bentoml.mlflow.import_model``, so ``bentoml models list``
shows them), then runs ``bentoml build`` on a temporary context holding the packages, the locked
requirements and a ``pinned_models.json`` with those versions, with the repository's
``bentofile.yaml`` plus the models (each aliased by its task's name) and version labels. It prints
the Bento tag. The Bento serves exactly those versions from its own models (``serving.champions``),
never follows the alias and needs no registry; it still reads the online store of the workspace
named by ``CXPREDICT_HOME`` (features are live data, not part of a release).

``bentoml build`` at the repository root uses the same ``bentofile.yaml`` without models or pins:
that Bento follows the registry's champion alias at run time, as ``cxpredict serve`` does.
"""

from __future__ import annotations

import argparse
import hashlib
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
BENTOFILE = PROJECT / "bentofile.yaml"
"""The build options of both Bentos; this module adds the models, pins and labels of a release."""
REQUIREMENTS = "requirements.txt"
"""The locked requirements the bentofile names (``uv export`` of ``uv.lock``, committed at the root)."""


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


def import_champions(ws: Workspace, versions: Mapping[str, str]) -> dict[str, str]:
    """Import each version into the BentoML model store (``BENTOML_HOME``), once: task -> model tag.

    The tag is ``cx-<task>:v<version>-<digest of the version's source and run>``: the same version
    number in two registries never shares a tag, and building again reuses the imported model.
    The metadata names the registered model and version, which the service checks before serving it.
    """
    import bentoml
    from bentoml.exceptions import NotFound

    from cxpredict import tasks as registry
    from training.tracking import resolve_tracking, tracking_session

    tags = {}
    with tracking_session(resolve_tracking(ws)) as client:
        for task, version in versions.items():
            name = registry.get(task).model_name
            found = client.get_model_version(name, str(version))
            digest = hashlib.sha256(f"{found.source}\n{found.run_id}".encode()).hexdigest()[:10]
            tag = f"{name}:v{version}-{digest}"
            try:
                bentoml.models.get(tag)
            except NotFound:
                bentoml.mlflow.import_model(
                    tag,
                    model_uri=f"models:/{name}/{version}",
                    labels={"project": "cxpredict", "task": task, "version": str(version)},
                    metadata={
                        "task": task,
                        "registered_model": name,
                        "version": str(version),
                        "run_id": found.run_id or "",
                        "source": found.source or "",
                    },
                )
            tags[task] = tag
    return tags


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


def bentofile(versions: Mapping[str, str], models: Mapping[str, str]) -> dict:
    """The repository's build options plus a release's pins, models (aliased by task) and labels."""
    base = yaml.safe_load(BENTOFILE.read_text())
    pinned = ", ".join(f"{task} v{version}" for task, version in versions.items())
    return base | {
        "description": f"CX Predict prediction API, pinned to {pinned} (models included)",
        "labels": base.get("labels", {}) | {f"{task}_version": version for task, version in versions.items()},
        "include": [*base["include"], PINNED_FILE.name],
        "models": [{"tag": tag, "alias": task} for task, tag in models.items()],
        "envs": [*base.get("envs", []), {"name": "CXPREDICT_RELOAD_SECONDS", "value": "0"}],
    }


def stage(context: Path, versions: Mapping[str, str], models: Mapping[str, str]) -> Path:
    """Copy the packages into ``context`` with the pins, requirements and bentofile; returns the bentofile."""
    for package in PACKAGES:
        shutil.copytree(PROJECT / package, context / package, ignore=shutil.ignore_patterns("__pycache__"))
    (context / PINNED_FILE.name).write_text(json.dumps(dict(versions), indent=1))
    (context / REQUIREMENTS).write_text(requirements())
    path = context / BENTOFILE.name
    path.write_text(yaml.safe_dump(bentofile(versions, models), sort_keys=False))
    return path


def _uv() -> str:
    return shutil.which("uv") or str(Path.home() / ".local" / "bin" / "uv")


def build(ws: Workspace) -> tuple[str, dict[str, str]]:
    """Import the champions and build the Bento; returns its tag and the pinned versions."""
    versions = champion_versions(ws)
    models = import_champions(ws, versions)
    environment = dict(os.environ)
    environment["PATH"] = os.pathsep.join([str(Path(_uv()).parent), environment.get("PATH", "")])
    with tempfile.TemporaryDirectory(prefix="cxpredict-bento-") as folder:
        context = Path(folder)
        path = stage(context, versions, models)
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
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")
    tag, versions = build(resolve_workspace(args.workspace))
    print(f"built {tag} pinned to " + ", ".join(f"{task} v{version}" for task, version in versions.items()))
    print("its models: bentoml models list; serve it without the registry:")
    print(f"CXPREDICT_HOME=<workspace> bentoml serve {tag}   (or: bentoml containerize {tag})")


if __name__ == "__main__":  # pragma: no cover
    main()
