"""Fixtures of the reliability tests: a server of their own, so its log holds only their requests.

The served world comes from ``tests.serving.server_fixtures`` (the same module the serving tests
import, so the session's world is built once).
"""

from __future__ import annotations

import pytest

from tests.serving.server_fixtures import served_workspace, start_server  # noqa: F401


@pytest.fixture(scope="module")
def hostile_api(served_workspace, tmp_path_factory):  # noqa: F811
    """A real server (``cxpredict serve``, default workers) on the served world; ``.log`` is its output."""
    server = start_server(served_workspace, tmp_path_factory.mktemp("hostile") / "server.log")
    yield server
    server.stop()


@pytest.fixture()
def private_workspace(served_workspace, tmp_path, copy_workspace):  # noqa: F811
    """A copy of the served world a test may change (events, snapshots, registry)."""
    return copy_workspace(served_workspace, tmp_path / "ws")
