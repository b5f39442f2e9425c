"""The workspace check of Feast's own CLI: ``feast -c features/feature_repo ...`` needs ``CXPREDICT_HOME``.

``feature_store.yaml`` puts the registry and the online store under ``${CXPREDICT_HOME}``. Feast
expands environment variables with ``os.path.expandvars``, which leaves an unset one as it is, so
without a check the CLI would look for ``features/feature_repo/${CXPREDICT_HOME}/feast/registry.db``
and end in a traceback. Two hooks stop it first, with one line (click, Feast's CLI framework,
prints a :class:`click.ClickException` as ``Error: <message>`` and exits 1):

- ``registry_store_type`` in ``feature_store.yaml`` names :class:`WorkspaceRegistryStore`, which
  Feast builds before any command reads or writes the registry (``feature-views list``, ``ui``,
  ``serve``, ``materialize``...);
- ``repo.py`` calls :func:`require_home` when ``feast apply`` or ``feast plan`` imports it.

In-process code (:func:`features.store.repo_config`) substitutes the workspace itself, so there
the check never fires; both paths get the store's atomic registry writes.
"""

from __future__ import annotations

import os
import tempfile
import uuid
from datetime import UTC, datetime
from pathlib import Path

import click

from cxpredict.workspace import HOME_VARIABLE
from features.feast_internals import FileRegistryStore

PLACEHOLDER = "${" + HOME_VARIABLE + "}"
MESSAGE = (
    f"{HOME_VARIABLE} is not set: export {HOME_VARIABLE}=/path/to/workspace "
    "(the folder `cxpredict` writes, e.g. ./.cxpredict)"
)


class WorkspaceNotSet(click.ClickException, RuntimeError):
    """``CXPREDICT_HOME`` is unset: one line from Feast's CLI, a ``RuntimeError`` for Python callers."""

    def __init__(self) -> None:
        super().__init__(MESSAGE)


def require_home() -> None:
    """Raise :class:`WorkspaceNotSet` unless ``CXPREDICT_HOME`` names a workspace."""
    if not os.environ.get(HOME_VARIABLE):
        raise WorkspaceNotSet()


class WorkspaceRegistryStore(FileRegistryStore):
    """Feast's file registry store, refusing a path whose ``${CXPREDICT_HOME}`` was left unexpanded,
    and replacing the registry file whole instead of rewriting it in place."""

    def __init__(self, registry_config, repo_path: Path):  # a feast RegistryConfig
        if PLACEHOLDER in str(registry_config.path):
            raise WorkspaceNotSet()
        super().__init__(registry_config, repo_path)

    def _write_registry(self, registry_proto) -> None:
        """Feast truncates and rewrites the file, so a serving worker that notices the change can
        parse an empty or partial registry (and answer "feature service not found"). Written to a
        temporary file, fsynced and renamed over the old one, every read sees one whole registry."""
        registry_proto.version_id = str(uuid.uuid4())
        registry_proto.last_updated.FromDatetime(datetime.now(UTC))
        folder = self._filepath.parent
        folder.mkdir(exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=folder, prefix=f".{self._filepath.name}.")
        try:
            with os.fdopen(handle, "wb") as out:
                out.write(registry_proto.SerializeToString())
                out.flush()
                os.fsync(out.fileno())
            os.replace(temporary, self._filepath)
        except BaseException:
            Path(temporary).unlink(missing_ok=True)
            raise
        directory = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(directory)
        finally:
            os.close(directory)
