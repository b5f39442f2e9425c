"""`cxpredict serve` prepares the server's environment: workspace, alias, workers, and an API key kept off screen."""

import json
import stat

from serving.supervisor import serve_environment as _serve_environment
from cxpredict.workspace import resolve_workspace


def test_without_configured_keys_a_private_key_file_is_created_and_the_key_never_printed(
    tmp_path, monkeypatch, capsys
):
    monkeypatch.delenv("CXPREDICT_API_KEYS", raising=False)
    monkeypatch.delenv("CXPREDICT_API_KEYS_FILE", raising=False)
    monkeypatch.delenv("BENTOML_CONFIG_OPTIONS", raising=False)
    monkeypatch.delenv("BENTOML_CONFIG_OVERRIDES", raising=False)
    ws = resolve_workspace(tmp_path / "ws").ensure()
    env = _serve_environment(ws, "challenger", 5.0, workers=3)
    keys = ws.serving_dir / "api_keys"
    key = [line for line in keys.read_text().splitlines() if not line.startswith("#")][0]
    assert env["CXPREDICT_API_KEYS_FILE"] == str(keys) and len(key) >= 24
    assert stat.S_IMODE(keys.stat().st_mode) == 0o600
    assert key not in capsys.readouterr().out
    assert env["CXPREDICT_HOME"] == str(ws.root) and env["CXPREDICT_MODEL_ALIAS"] == "challenger"
    assert env["CXPREDICT_RELOAD_SECONDS"] == "5.0"
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {"services": {"cxpredict": {"workers": 3}}}
    # a second start keeps the same key
    _serve_environment(ws, "champion", 5.0)
    assert key in keys.read_text()


def test_configured_keys_are_used_as_they_are(tmp_path, monkeypatch):
    monkeypatch.setenv("CXPREDICT_API_KEYS", "k1,k2")
    ws = resolve_workspace(tmp_path / "ws").ensure()
    env = _serve_environment(ws, "champion", 30.0, workers=1)
    assert "CXPREDICT_API_KEYS_FILE" not in env and not (ws.serving_dir / "api_keys").exists()


def test_bentoml_overrides_are_kept_and_the_deprecated_variable_is_translated(tmp_path, monkeypatch):
    # given overrides in BentoML's JSON variable and in the variable BentoML 1.4 deprecates
    monkeypatch.setenv("CXPREDICT_API_KEYS", "k1")
    monkeypatch.setenv(
        "BENTOML_CONFIG_OVERRIDES", '{"services": {"cxpredict": {"threads": 2, "workers": 9}}}'
    )
    monkeypatch.setenv(
        "BENTOML_CONFIG_OPTIONS", "api_server.http.port=1 services.cxpredict.traffic.timeout=5"
    )
    ws = resolve_workspace(tmp_path / "ws").ensure()
    # when the server's environment is prepared
    env = _serve_environment(ws, "champion", 30.0, workers=2)
    # then every override reaches BentoML as JSON, the worker count of `serve` winning, and the
    # deprecated variable is gone (BentoML would warn about it)
    assert "BENTOML_CONFIG_OPTIONS" not in env
    assert json.loads(env["BENTOML_CONFIG_OVERRIDES"]) == {
        "api_server": {"http": {"port": 1}},
        "services": {"cxpredict": {"threads": 2, "workers": 2, "traffic": {"timeout": 5}}},
    }


def test_two_workspaces_get_two_bentoml_homes_so_their_metrics_never_mix(tmp_path, monkeypatch):
    monkeypatch.setenv("CXPREDICT_API_KEYS", "k1")
    first, second = (resolve_workspace(tmp_path / name).ensure() for name in ("a", "b"))

    homes = [_serve_environment(ws, "champion", 30.0, workers=1)["BENTOML_HOME"] for ws in (first, second)]

    assert homes[0] != homes[1]
    assert all(home.startswith(str(ws.root)) for home, ws in zip(homes, (first, second)))


def test_given_a_port_already_listened_on_serve_and_demo_refuse_it_before_any_work(tmp_path):
    import socket

    from typer.testing import CliRunner

    from cxpredict.cli import app

    # given another process listening on a port (an earlier demo's server still running, say)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = str(taken.getsockname()[1])
    try:
        # when serve and demo are asked to use it
        served = CliRunner().invoke(app, ["serve", "--port", port, "--workspace", str(tmp_path / "a")])
        demo = CliRunner().invoke(
            app, ["demo", "--customers", "100", "--port", port, "--workspace", str(tmp_path / "b")]
        )
    finally:
        taken.close()
    # then both stop with exit code 2 and one line naming the port, and the demo generated nothing
    for result in (served, demo):
        assert result.exit_code == 2, result.output
        assert f"port {port} on 127.0.0.1 is already in use" in result.stderr
    assert not (tmp_path / "b" / "raw").exists()


def test_given_a_port_whose_server_closed_it_then_it_is_free_again():
    import socket

    from serving.supervisor import ensure_port_free

    # given a port a server listened on and closed (its connections may sit in TIME_WAIT)
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    client = socket.create_connection(("127.0.0.1", port))
    accepted, _ = server.accept()
    accepted.close()
    client.close()
    server.close()
    # then it counts as free
    ensure_port_free("127.0.0.1", port)
