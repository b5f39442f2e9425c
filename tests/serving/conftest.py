"""Fixtures of the serving tests (defined in ``server_fixtures``, imported by bare name as elsewhere)."""

from server_fixtures import api, known_ids, private_workspace, served_workspace  # noqa: F401
