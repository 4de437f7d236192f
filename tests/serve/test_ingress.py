"""The ingress modes (deployments/ingress.py): the environment each sets for Ray's processes,
and the session cluster really serving through the default one, HAProxy."""

from __future__ import annotations

import pytest
from support.helpers import listening_process

from deployments.ingress import DEFAULT_INGRESS, haproxy_binary, ingress_env, resolve_ingress
from deployments.serving.proxy_admission import CALLBACK, CALLBACK_ENV

HAPROXY_FLAGS = ("RAY_SERVE_ENABLE_DIRECT_INGRESS", "RAY_SERVE_ENABLE_HA_PROXY")


def test_each_mode_sets_both_flags_explicitly_so_an_inherited_setting_cannot_win():
    haproxy, proxy = ingress_env("haproxy"), ingress_env("proxy")
    assert [haproxy[f] for f in HAPROXY_FLAGS] == ["1", "1"] and haproxy[CALLBACK_ENV] == CALLBACK
    assert [proxy[f] for f in HAPROXY_FLAGS] == ["0", "0"] and proxy[CALLBACK_ENV] == CALLBACK
    with pytest.raises(ValueError, match="unknown ingress 'nginx'"):
        ingress_env("nginx")


def test_local_clusters_get_haproxy_listeners_of_their_own_and_a_short_drain():
    first, second = ingress_env("haproxy", local=True), ingress_env("haproxy", local=True)
    ports = ("RAY_SERVE_HAPROXY_STATS_PORT", "RAY_SERVE_HAPROXY_METRICS_PORT")
    assert len({first[p] for p in ports} | {second[p] for p in ports}) == 4  # no clash between two clusters
    assert float(first["RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S"]) <= 5
    assert first["RAY_SERVE_HAPROXY_OBSERVE_ERROR_LIMIT"] == "1"  # a dead local router is dropped at once
    assert "RAY_SERVE_HAPROXY_STATS_PORT" not in ingress_env("haproxy")  # Kubernetes pods keep Ray's defaults


def test_the_session_cluster_serves_http_through_haproxy(server_port, client):
    assert DEFAULT_INGRESS == "haproxy"
    assert listening_process(server_port).endswith("/haproxy")
    r = client.get("/v1/models")
    assert r.status_code == 200 and r.json()["data"], r.text


def test_auto_takes_haproxy_where_serve_can_find_it_and_the_python_proxy_elsewhere(monkeypatch, tmp_path):
    assert haproxy_binary() and resolve_ingress("auto") == "haproxy"  # ray[serve] on Linux ships one
    monkeypatch.setenv("RAY_SERVE_HAPROXY_BINARY_PATH", str(tmp_path / "missing"))
    assert haproxy_binary() is None and resolve_ingress("auto") == "proxy"
    assert resolve_ingress("haproxy") == "haproxy"  # an explicit choice is kept (Serve then says what is missing)
