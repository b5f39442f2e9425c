"""Feast's entry point for this repository: the objects generated from the workspace's manifest.

Feast imports every Python file of the repo and collects Feast objects among module attributes,
so this module builds them on import (that is Feast's contract for a repo module). The workspace
is ``CXPREDICT_HOME``, the same variable ``feature_store.yaml`` expands.
"""

import os

from cxpredict.workspace import HOME_VARIABLE, resolve_workspace
from features.feature_repo.definitions import build_repo, ensure_realtime_log, load_manifest

if not os.environ.get(HOME_VARIABLE):
    raise RuntimeError(f"set {HOME_VARIABLE} to the workspace before running feast on this repository")

_workspace = resolve_workspace()
_manifest = load_manifest(_workspace.features_dir)
ensure_realtime_log(_workspace.feast_dir, _manifest.join_key)
globals().update(build_repo(_workspace.root, _manifest).by_name())
