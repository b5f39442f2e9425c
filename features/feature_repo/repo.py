"""Feast's entry point for this repository: the objects generated from the workspace's manifest.

Feast imports every Python file of the repo and collects Feast objects among module attributes,
so this module builds them on import (that is Feast's contract for a repo module). The workspace
is ``CXPREDICT_HOME``, the same variable ``feature_store.yaml`` expands.
"""

from cxpredict.workspace import resolve_workspace
from features.feature_repo.definitions import build_repo, ensure_push_logs, load_manifest
from features.feature_repo.workspace_registry import require_home

require_home()  # unset: Feast's CLI prints one line saying what to export (a RuntimeError in Python)

_workspace = resolve_workspace()
_manifest = load_manifest(_workspace.features_dir)
ensure_push_logs(_workspace.feast_dir, _manifest.join_key)
globals().update(build_repo(_workspace.root, _manifest).by_name())
