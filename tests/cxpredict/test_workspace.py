"""Workspace resolution: option, then CXPREDICT_HOME, then ./.cxpredict; nothing written until asked."""

import multiprocessing
import threading
import time
from pathlib import Path

from cxpredict.workspace import DEFAULT_HOME, HOME_VARIABLE, exclusive, resolve_workspace


def test_option_wins_over_environment(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path / "from-env"))
    ws = resolve_workspace(tmp_path / "from-option")
    assert ws.root == tmp_path / "from-option"


def test_environment_used_when_no_option(tmp_path, monkeypatch):
    monkeypatch.setenv(HOME_VARIABLE, str(tmp_path / "from-env"))
    assert resolve_workspace(None).root == tmp_path / "from-env"


def test_default_is_dot_cxpredict_in_the_current_folder(tmp_path, monkeypatch):
    monkeypatch.delenv(HOME_VARIABLE, raising=False)
    monkeypatch.chdir(tmp_path)
    assert resolve_workspace().root == tmp_path / DEFAULT_HOME


def test_resolving_writes_nothing_and_every_path_stays_inside_the_root(tmp_path):
    ws = resolve_workspace(tmp_path / "ws")
    assert not ws.root.exists()
    paths = [ws.raw_dir, ws.truth_dir, ws.canonical_dir, ws.features_dir, ws.feast_dir, ws.mlflow_dir]
    assert len(set(paths)) == len(paths)
    assert all(Path(p).is_relative_to(ws.root) for p in paths)
    ws.ensure()
    assert ws.root.is_dir()


def _hold(path: Path, held, release) -> None:
    with exclusive(path):
        held.set()
        release.wait(30)


def test_given_a_process_holding_a_lock_then_another_enters_only_after_it_lets_go(tmp_path):
    # given another process holding the lock
    path = tmp_path / "locks" / "view.lock"
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(path, held, release))
    holder.start()
    assert held.wait(60)

    # when this process asks for it, then it waits until the holder releases
    entered = threading.Event()

    def enter() -> None:
        with exclusive(path):
            entered.set()

    waiter = threading.Thread(target=enter)
    waiter.start()
    time.sleep(0.5)
    assert not entered.is_set()
    release.set()
    holder.join(30)
    waiter.join(30)
    assert entered.is_set()


def test_given_a_holder_that_dies_then_the_lock_is_free(tmp_path):
    # given a process that takes the lock and is killed without releasing it
    path = tmp_path / "view.lock"
    context = multiprocessing.get_context("spawn")
    held, release = context.Event(), context.Event()
    holder = context.Process(target=_hold, args=(path, held, release))
    holder.start()
    assert held.wait(60)
    holder.kill()
    holder.join(30)

    # then the next writer gets it at once
    started = time.monotonic()
    with exclusive(path):
        assert time.monotonic() - started < 1
