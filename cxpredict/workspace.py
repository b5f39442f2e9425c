"""The workspace: the one folder that holds every piece of state a run writes.

Two workspaces never share state, so tests and parallel experiments each get their own. The
location comes from ``--workspace``, else ``CXPREDICT_HOME``, else ``./.cxpredict``; nothing here
touches the disk until :meth:`Workspace.ensure` is called.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from pydantic import BaseModel, ConfigDict

HOME_VARIABLE = "CXPREDICT_HOME"
DEFAULT_HOME = Path(".cxpredict")


class Workspace(BaseModel):
    """Paths of one workspace. Every writer asks this object where to write."""

    model_config = ConfigDict(frozen=True)

    root: Path

    @property
    def raw_dir(self) -> Path:
        """Raw source files as received (or as generated): input of ``ingest``."""
        return self.root / "raw"

    @property
    def truth_dir(self) -> Path:
        """Ground truth of a generated world: read by evaluation only, never by features or training."""
        return self.root / "truth"

    @property
    def canonical_dir(self) -> Path:
        """Validated, stitched tables, quarantine, identity links and the unified profile.

        A symlink to the current committed version, swapped atomically by ``ingest``.
        """
        return self.root / "canonical"

    @property
    def features_dir(self) -> Path:
        """Behavioural feature tables (Parquet) that Feast's offline store reads."""
        return self.root / "features"

    @property
    def feast_dir(self) -> Path:
        """Feast registry and SQLite online store."""
        return self.root / "feast"

    @property
    def mlflow_dir(self) -> Path:
        """MLflow tracking database and artifacts, when no ``MLFLOW_TRACKING_URI`` is set."""
        return self.root / "mlflow"

    @property
    def tracking_uri(self) -> str:
        """The workspace's own MLflow store (SQLite), used when ``MLFLOW_TRACKING_URI`` is not set."""
        return f"sqlite:///{(self.mlflow_dir / 'mlflow.db').as_posix()}"

    @property
    def reports_dir(self) -> Path:
        """Human-readable reports (ingest reports, model cards exported for reading)."""
        return self.root / "reports"

    @property
    def serving_dir(self) -> Path:
        """What the API server keeps: the API keys file ``cxpredict serve`` creates when none is configured."""
        return self.root / "serving"

    @property
    def erasure_dir(self) -> Path:
        """Right to erasure: the tombstone salt and digests, the audit, and pending requests' journals."""
        return self.root / "erasure"

    def ensure(self) -> Workspace:
        """Create the workspace root; the sub-folders are created by the steps that write them."""
        self.root.mkdir(parents=True, exist_ok=True)
        return self


def resolve_workspace(path: Path | str | None = None) -> Workspace:
    """The workspace named by the option, else by ``CXPREDICT_HOME``, else ``./.cxpredict``."""
    chosen = path if path is not None else os.environ.get(HOME_VARIABLE) or DEFAULT_HOME
    return Workspace(root=Path(chosen).expanduser().absolute())


@contextmanager
def exclusive(lock_path: Path) -> Iterator[None]:
    """Hold an exclusive lock on ``lock_path`` (created if missing) for the block, across threads
    and processes; the kernel drops it if the holder dies, so a crash never leaves it held."""
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
