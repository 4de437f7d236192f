"""The ingress modes (deployments/ingress.py): the environment each sets for Ray's processes,
the HAProxy launcher that adds the header-read timeout, and the session cluster really
serving through the default one, HAProxy. (tests/test_bad_inputs.py sends slow and huge
request heads to both ingresses.)"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest
from support.helpers import listening_command_line, listening_process

from deployments.http_limits import DEFAULT_HEADER_TIMEOUT_S, DEFAULT_MAX_HEADER_BYTES
from deployments.ingress import LAUNCHER, DEFAULT_INGRESS, haproxy_binary, ingress_env, resolve_ingress
from deployments.serving.admission import CALLBACK, CALLBACK_ENV

HAPROXY_FLAGS = ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY")


def test_each_mode_sets_both_flags_explicitly_so_an_inherited_setting_cannot_win():
    haproxy, proxy = ingress_env("haproxy"), ingress_env("proxy")
    assert [haproxy[f] for f in HAPROXY_FLAGS] == ["1", "1"] and haproxy[CALLBACK_ENV] == CALLBACK
    assert [proxy[f] for f in HAPROXY_FLAGS] == ["0", "0"] and proxy[CALLBACK_ENV] == CALLBACK
    with pytest.raises(ValueError, match="unknown ingress 'nginx'"):
        ingress_env("nginx")


def test_both_modes_carry_the_header_limits_and_haproxy_runs_through_the_launcher(monkeypatch):
    for mode in ("haproxy", "proxy"):
        env = ingress_env(mode)
        assert float(env["CLIP_SERVE_HEADER_TIMEOUT_S"]) == DEFAULT_HEADER_TIMEOUT_S
        assert int(env["CLIP_SERVE_MAX_HEADER_BYTES"]) == DEFAULT_MAX_HEADER_BYTES
    haproxy = ingress_env("haproxy")
    assert haproxy["RAY_SERVE_HAPROXY_BINARY_PATH"] == str(LAUNCHER) and os.access(LAUNCHER, os.X_OK)
    assert int(haproxy["RAY_SERVE_HAPROXY_TUNE_BUFSIZE"]) == DEFAULT_MAX_HEADER_BYTES + 1024  # + tune.maxrewrite
    assert "RAY_SERVE_HAPROXY_BINARY_PATH" not in ingress_env("proxy")
    pods = ingress_env("haproxy", app_dir="/home/ray/clip-serve/")
    assert pods["RAY_SERVE_HAPROXY_BINARY_PATH"] == "/home/ray/clip-serve/deployments/haproxy_launcher.sh"
    monkeypatch.setenv("CLIP_SERVE_HEADER_TIMEOUT_S", "4.5")  # an operator's setting reaches the cluster
    monkeypatch.setenv("CLIP_SERVE_MAX_HEADER_BYTES", "32768")
    assert ingress_env("haproxy")["CLIP_SERVE_HEADER_TIMEOUT_S"] == "4.5"
    assert ingress_env("haproxy")["RAY_SERVE_HAPROXY_TUNE_BUFSIZE"] == str(32768 + 1024)
    monkeypatch.setenv("CLIP_SERVE_HEADER_TIMEOUT_S", "0")
    with pytest.raises(ValueError, match="positive"):
        ingress_env("proxy")


SERVE_LIKE_CONFIG = """global
    maxconn 100
defaults
    mode http
    timeout connect 5s
    timeout client 3600s
    timeout server 60s
frontend http_frontend
    bind 127.0.0.1:{port}
    default_backend default_backend
backend default_backend
    http-request return status 404
"""


def run_launcher(config: Path, timeout_s: str) -> subprocess.CompletedProcess:
    """The launcher as Serve runs it, with HAProxy's check-only flag (-c): no listener."""
    env = {**os.environ, "CLIP_SERVE_HEADER_TIMEOUT_S": timeout_s, "CLIP_SERVE_HAPROXY_BINARY": haproxy_binary()}
    return subprocess.run([str(LAUNCHER), "-c", "-f", str(config)], env=env, capture_output=True, text=True,
                          timeout=60)


def test_the_launcher_adds_the_header_timeout_to_serves_config_once_and_haproxy_accepts_it(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(SERVE_LIKE_CONFIG.format(port=1))
    done = run_launcher(config, "2.5")
    assert done.returncode == 0, done.stderr
    lines = config.read_text().splitlines()
    assert lines[lines.index("defaults") + 1].split()[:3] == ["timeout", "http-request", "2500ms"]
    assert run_launcher(config, "7").returncode == 0  # a reload: Serve rewrote the file, or not
    assert [line.split()[:3] for line in config.read_text().splitlines() if "http-request" in line and
            "timeout" in line] == [["timeout", "http-request", "2500ms"]]  # never twice
    assert (tmp_path / "haproxy.cfg.lock").exists()  # edited under Serve's lock


def test_the_launcher_refuses_to_run_without_its_settings(tmp_path):
    config = tmp_path / "haproxy.cfg"
    config.write_text(SERVE_LIKE_CONFIG.format(port=1))
    env = {k: v for k, v in os.environ.items() if k != "CLIP_SERVE_HEADER_TIMEOUT_S"}
    done = subprocess.run([str(LAUNCHER), "-c", "-f", str(config)], env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "CLIP_SERVE_HEADER_TIMEOUT_S" in done.stderr


def test_local_clusters_get_haproxy_listeners_of_their_own_and_a_short_drain():
    first, second = ingress_env("haproxy", local=True), ingress_env("haproxy", local=True)
    ports = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT", "RAY_SERVE_FALLBACK_PROXY_HTTP_PORT",
             "RAY_SERVE_FALLBACK_PROXY_GRPC_PORT")
    assert len({first[p] for p in ports} | {second[p] for p in ports}) == 8  # no clash between two clusters
    assert first["CLIP_SERVE_HAPROXY_BINARY"] == haproxy_binary()  # the launcher need not look for it
    assert float(first["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5
    assert first["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] == "1"  # a dead local router is dropped at once
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in ingress_env("haproxy")  # Kubernetes pods keep Ray's defaults


def test_the_session_cluster_serves_http_through_haproxy(server_port, client, cluster_env):
    assert DEFAULT_INGRESS == "haproxy"
    assert listening_process(server_port).endswith("/haproxy")
    r = client.get("/v1/models")
    assert r.status_code == 200 and r.json()["data"], r.text
    # started through the launcher, whose timeout is in the configuration HAProxy runs
    argv = listening_command_line(server_port)
    config = Path(argv[argv.index("-f") + 1]).read_text()
    timeout_ms = round(float(cluster_env["CLIP_SERVE_HEADER_TIMEOUT_S"]) * 1000)
    assert f"timeout http-request {timeout_ms}ms" in config
    assert f"tune.bufsize {cluster_env['RAY_SERVE_HAPROXY_TUNE_BUFSIZE']}" in config
