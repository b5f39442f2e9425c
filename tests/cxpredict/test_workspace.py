"""Workspace resolution: option, then CXPREDICT_HOME, then ./.cxpredict; nothing written until asked."""

from pathlib import Path

from cxpredict.workspace import DEFAULT_HOME, HOME_VARIABLE, resolve_workspace


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
