"""Fixtures of the serving tests (defined in ``server_fixtures``, imported by package path, as the reliability tests do, so a session fixture is built once)."""

from tests.serving.server_fixtures import api, known_ids, private_workspace, served_workspace  # noqa: F401
