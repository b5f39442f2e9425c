"""Wall time of each executed notebook, shown in the terminal summary (the notebooks' CI budget)."""

from __future__ import annotations

import pytest

TIMINGS = pytest.StashKey[dict[str, float]]()


@pytest.fixture(scope="session")
def notebook_timings(request) -> dict[str, float]:
    """Notebook name -> seconds, filled by whoever executes notebooks."""
    return request.config.stash.setdefault(TIMINGS, {})


def pytest_terminal_summary(terminalreporter, config) -> None:
    timings = config.stash.get(TIMINGS, {})
    if not timings:
        return
    terminalreporter.write_sep("-", "notebook wall times")
    for name, seconds in timings.items():
        terminalreporter.write_line(f"{name}: {seconds:.1f} s")
    terminalreporter.write_line(f"total: {sum(timings.values()):.1f} s")
