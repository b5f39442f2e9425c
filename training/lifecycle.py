"""How a training process ends its MLflow runs, and how the next one tells a dead run from a live one.

- A run ended by an exception, Ctrl-C or SIGTERM ends FAILED: ``sigterm_as_interrupt`` turns
  SIGTERM into ``Terminated`` (a ``KeyboardInterrupt``) for the duration of training, so the same
  unwinding ends the runs (``tracking.task_run``); the previous handler is restored afterwards.
- ``kill -9`` runs no handler, so every run records who runs it (``process_tags``: pid, host and,
  where ``/proc`` tells, the process's start time, which detects a reused pid). A later train marks
  runs left RUNNING by a process that is gone from this host FAILED (``reap_abandoned_runs``); runs
  of live processes, of other hosts and runs without these tags are left alone: nobody can tell.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import mlflow
from mlflow.entities import Run

PID_TAG = "cxpredict.pid"
HOST_TAG = "cxpredict.host"
STARTED_TAG = "cxpredict.pid_started"  # start time of the process (clock ticks after boot), Linux only
FAILURE_TAG = "cxpredict.failure"  # why a run ended FAILED: the exception, or the reaped process
MAX_FAILURE = 1_000

_log = logging.getLogger(__name__)


class Terminated(KeyboardInterrupt):
    """SIGTERM received during training: unwinds like Ctrl-C, so runs end FAILED on the way out."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"terminated by signal {signal.Signals(signum).name}")
        self.signum = signum


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """For the block, SIGTERM raises ``Terminated`` in the main thread; the previous handler is
    restored on exit. Only the first SIGTERM raises: later ones are ignored until the block exits,
    so they cannot cut short the cleanup the first one started (``kill -9`` still works). Outside
    the main thread (where Python cannot install handlers) the block runs unchanged."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGTERM)

    def interrupt(signum: int, frame: object) -> None:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        raise Terminated(signum)

    signal.signal(signal.SIGTERM, interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous if previous is not None else signal.SIG_DFL)


def _proc_stat(pid: int) -> tuple[str, str] | None:
    """(state, start time) of ``pid`` from ``/proc/<pid>/stat``, None where there is no such file."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as stat:
            text = stat.read()
    except OSError:
        return None
    fields = text[text.rfind(")") + 2 :].split()  # the command name may hold spaces and parentheses
    return (fields[0], fields[19]) if len(fields) > 19 else None


def process_tags() -> dict[str, str]:
    """Run tags naming this process, so a later train can tell whether the run's process is gone."""
    tags = {PID_TAG: str(os.getpid()), HOST_TAG: socket.gethostname()}
    stat = _proc_stat(os.getpid())
    if stat is not None:
        tags[STARTED_TAG] = stat[1]
    return tags


def process_alive(pid: int, started: str | None = None) -> bool:
    """Whether process ``pid`` of this host is still the one that was started at ``started``:
    False when it does not exist, is a zombie, or is another process that reused the pid."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # exists, owned by someone else
    stat = _proc_stat(pid)
    if stat is None:
        return True  # no /proc to say more
    state, start = stat
    return state != "Z" and (started is None or start == started)


def abandoned(run: Run, host: str | None = None) -> str | None:
    """Why ``run`` is RUNNING with nobody running it (its process on this host is gone), else None."""
    tags = run.data.tags
    here = host or socket.gethostname()
    if run.info.status != "RUNNING" or tags.get(HOST_TAG) != here:
        return None
    try:
        pid = int(tags[PID_TAG])
    except (KeyError, ValueError):
        return None
    if process_alive(pid, tags.get(STARTED_TAG)):
        return None
    return f"process {pid} on {here} ended without ending the run (killed?)"


def reap_abandoned_runs(client: mlflow.MlflowClient, experiment_ids: Iterable[str]) -> list[str]:
    """Mark FAILED every run of ``experiment_ids`` left RUNNING by a process gone from this host
    (``abandoned``), with the reason in ``cxpredict.failure``. Returns the run ids marked."""
    ids = list(experiment_ids)
    if not ids:
        return []
    reaped, token = [], None
    while True:
        page = client.search_runs(ids, "attributes.status = 'RUNNING'", max_results=1000, page_token=token)
        for run in page:
            reason = abandoned(run)
            if reason is None:
                continue
            client.set_tag(run.info.run_id, FAILURE_TAG, reason[:MAX_FAILURE])
            client.set_terminated(run.info.run_id, "FAILED")
            _log.warning("marked run %s FAILED: %s", run.info.run_id, reason)
            reaped.append(run.info.run_id)
        token = page.token
        if not token:
            return reaped
