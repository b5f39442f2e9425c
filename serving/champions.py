"""The served model versions: resolved from a registry alias, reloaded when the alias moves (or
pinned to fixed versions, as in a Bento, and then never moved).

A pinned version comes from the BentoML model store when the running Bento carries it (a Bento
built by ``serving.bento`` names each task's model by the task, as a model alias), so a Bento
serves without the MLflow registry; otherwise, and always when following an alias, it is
downloaded from the registry.

A reload builds a complete new :class:`ModelSet` (unchanged versions are reused, new ones downloaded
and loaded) and swaps it in with one assignment; a request in flight keeps the set it started with,
so a swap never fails it. The bundle is loaded with this code's ``ModelBundle`` (not the copy logged
with the model), so old versions get the fast serving path too.
"""

from __future__ import annotations

import logging
import tempfile
import threading
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path

import mlflow

from cxpredict import tasks as registry
from serving.predictor import ModelSet, ServedModel
from training.model_bundle import ModelBundle
from training.tracking import TrackingTarget, tracking_session, version_info

log = logging.getLogger(__name__)


def load_version(target: TrackingTarget, task: str, version: str, alias: str) -> ServedModel:
    """Download ``models:/cx-<task>/<version>`` and load its bundle."""
    spec = registry.get(task)
    name = spec.model_name
    with tracking_session(target), tempfile.TemporaryDirectory(prefix="cxpredict-model-") as folder:
        local = Path(
            mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder)
        )
        bundle = ModelBundle.load(local / "artifacts" / "bundle")
    return ServedModel.of(task, name, str(version), alias, spec.feature_service, bundle)


MLFLOW_MODULE = "bentoml.mlflow"
MLFLOW_FOLDER = "mlflow_model"
"""Where ``bentoml.mlflow.import_model`` keeps the MLflow model inside a BentoML model."""


def stored_version(task: str, version: str, alias: str) -> ServedModel | None:
    """The task's model carried by the running Bento, when it is ``version``; else None.

    The Bento's ``models:`` give each imported champion the task's name as alias, which
    ``bentoml.models.get`` resolves in the Bento's model store only; outside a Bento (or for another
    version than the Bento's) nothing matches and the caller falls back to the registry."""
    import bentoml
    from bentoml.exceptions import BentoMLException

    spec = registry.get(task)
    try:
        stored = bentoml.models.get(task)
    except (BentoMLException, ValueError):  # not in a Bento, or no such model
        return None
    metadata = stored.info.metadata
    if (
        stored.info.module != MLFLOW_MODULE
        or metadata.get("registered_model") != spec.model_name
        or str(metadata.get("version")) != str(version)
    ):
        return None
    bundle = ModelBundle.load(Path(stored.path_of(MLFLOW_FOLDER)) / "artifacts" / "bundle")
    log.info("loaded %s version %s from the BentoML model store (%s)", spec.model_name, version, stored.tag)
    return ServedModel.of(task, spec.model_name, str(version), alias, spec.feature_service, bundle)


PINNED = "pinned"


def resolve(
    target: TrackingTarget,
    alias: str,
    current: ModelSet | None = None,
    tasks: Iterable[str] | None = None,
    pinned: Mapping[str, str] | None = None,
) -> ModelSet:
    """The set the alias points to now (or the ``pinned`` versions); versions already in ``current``
    are reused, not reloaded."""
    models: dict[str, ServedModel] = {}
    missing: dict[str, str] = {}
    alias = PINNED if pinned else alias
    for task in registry.names() if tasks is None else tasks:
        name = registry.get(task).model_name
        if pinned:
            if task not in pinned:
                missing[task] = f"no version of {name} is pinned"
                continue
            info = {"version": pinned[task]}
        else:
            info = version_info(target, task, alias)
        if info is None:
            missing[task] = f"no {alias} version of {name} in the registry"
            continue
        kept = current.models.get(task) if current else None
        if kept is not None and kept.version == info["version"] and kept.alias == alias:
            models[task] = kept
            continue
        try:
            stored = stored_version(task, info["version"], alias) if pinned else None
            models[task] = stored or load_version(target, task, info["version"], alias)
        except Exception as error:  # a broken version must not take the others down
            log.exception("loading %s version %s failed", name, info["version"])
            missing[task] = f"{name} version {info['version']} failed to load: {type(error).__name__}"
    return ModelSet(models, missing)


class Champions:
    """The current :class:`ModelSet` and the background poll that keeps it on the alias."""

    def __init__(
        self,
        target: TrackingTarget,
        alias: str,
        on_swap: Callable[[ModelSet, ModelSet], None] | None = None,
        pinned: Mapping[str, str] | None = None,
    ) -> None:
        self.target, self.alias, self.on_swap = target, alias, on_swap
        self.pinned = dict(pinned or {})
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.current = ModelSet()
        self.reload()

    def reload(self) -> tuple[ModelSet, bool]:
        """Check the alias now; returns the set served afterwards and whether it changed."""
        with self._lock:
            before = self.current
            after = resolve(self.target, self.alias, before, pinned=self.pinned)
            changed = after.versions() != before.versions() or dict(after.missing) != dict(before.missing)
            if changed:
                self.current = after
                if self.on_swap:
                    self.on_swap(before, after)
            return self.current, changed

    def watch(self, every_s: float) -> None:
        """Poll the alias every ``every_s`` seconds in a daemon thread (0: never)."""
        if every_s <= 0 or self._thread is not None or self.pinned:
            return

        def loop() -> None:
            while not self._stop.wait(every_s):
                try:
                    self.reload()
                except Exception:  # the registry may be briefly unreachable; keep serving what we have
                    log.exception("checking the model registry failed; still serving the loaded versions")

        self._thread = threading.Thread(target=loop, name="cxpredict-champion-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
