"""The served model versions: resolved from a registry alias, reloaded when the alias moves (or
pinned to fixed versions, as in a Bento, and then never moved).

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
            models[task] = load_version(target, task, info["version"], alias)
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
