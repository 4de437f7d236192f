"""Load shedding and deadlines as ASGI middleware on their own (no Ray): the router's
admission control and deadline, and the proxy-level cap, against a deliberately slow app.
The live service is exercised in test_reliability_app.py and `python -m deployments bench reliability`."""

from __future__ import annotations

import asyncio
import time

import httpx

from deployments.serving.admission import AdmissionControl, Capacity, Deadline, middlewares


class SlowApp:
    """Answers 200 after `delay` seconds; records cancellations."""

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.cancelled = 0
        self.finished = 0

    async def __call__(self, scope, receive, send) -> None:
        try:
            await asyncio.sleep(self.delay)
        except asyncio.CancelledError:
            self.cancelled += 1
            raise
        self.finished += 1
        await send({"type": "http.response.start", "status": 200, "headers": [(b"content-type", b"application/json")]})
        await send({"type": "http.response.body", "body": b"{}"})


async def burst(app, paths: list[str]) -> list[tuple[httpx.Response, float]]:
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
        async def one(path: str):
            started = time.monotonic()
            r = await client.request("POST" if path.startswith("/v1") else "GET", path)
            return r, time.monotonic() - started

        return await asyncio.gather(*(one(p) for p in paths))


def test_admission_sheds_beyond_the_cap_at_once_and_spares_probes():
    slow = SlowApp(0.5)
    capacity = Capacity(limit=3)
    results = asyncio.run(burst(AdmissionControl(slow, capacity), ["/v1/embeddings"] * 8 + ["/ready", "/health"]))
    api, probes = results[:8], results[8:]
    assert sorted(r.status_code for r, _ in api) == [200] * 3 + [503] * 5
    for r, seconds in api:
        if r.status_code == 503:
            assert seconds < 0.4 and r.headers["retry-after"] == "1"
            assert r.json()["error"]["code"] == "overloaded" and r.json()["error"]["type"] == "server_error"
    assert all(r.status_code == 200 for r, _ in probes)  # probes are never shed
    assert (capacity.active, capacity.shed) == (0, 5)


def test_deadline_answers_504_in_the_envelope_and_cancels_the_work():
    slow = SlowApp(5.0)
    ((r, seconds),) = asyncio.run(burst(Deadline(slow, timeout_s=0.3), ["/v1/embeddings"]))
    assert r.status_code == 504 and seconds < 2.0
    assert r.json()["error"]["code"] == "timeout"
    assert slow.cancelled == 1 and slow.finished == 0
    quick = SlowApp(0.05)
    ((r, _),) = asyncio.run(burst(Deadline(quick, timeout_s=1.0), ["/v1/embeddings"]))
    assert r.status_code == 200


def test_proxy_cap_sheds_without_touching_the_app_and_spares_serve_and_probe_paths(monkeypatch):
    monkeypatch.setenv("CLIP_SERVE_PROXY_MAX_INFLIGHT", "2")
    slow = SlowApp(0.5)
    (middleware,) = middlewares()
    proxy = middleware.cls(slow, *middleware.args, **middleware.kwargs)  # as Serve's proxy builds it
    paths = ["/v1/embeddings"] * 6 + ["/-/healthz", "/-/routes", "/rel/ready", "/health"]
    results = asyncio.run(burst(proxy, paths))
    assert sorted(r.status_code for r, _ in results[:6]) == [200, 200] + [503] * 4
    assert all(r.status_code == 200 for r, _ in results[6:])
    assert slow.finished == 2 + 4  # shed requests never reached the app
    assert (proxy.capacity.active, proxy.capacity.shed) == (0, 4)


def test_in_a_router_process_the_serve_callback_applies_the_routers_cap_once(monkeypatch):
    """Direct ingress: Serve runs the callback in the router's own HTTP server, in front of
    the app whose AdmissionControl holds the same Capacity: counted once, shed outside."""
    from deployments.serving import admission

    monkeypatch.setenv("CLIP_SERVE_PROXY_MAX_INFLIGHT", "100")  # a proxy's cap: not what applies here
    router_cap = Capacity(limit=3)
    monkeypatch.setattr(admission, "_router_capacity", router_cap)
    slow = SlowApp(0.5)
    app = AdmissionControl(slow, router_cap)  # the router app's own admission, same cap
    (middleware,) = middlewares()
    outer = middleware.cls(app, *middleware.args, **middleware.kwargs)
    results = asyncio.run(burst(outer, ["/v1/embeddings"] * 8))
    # counted twice, the app would refuse what the outer layer let in (3 pass there, 1 here)
    assert sorted(r.status_code for r, _ in results) == [200] * 3 + [503] * 5
    assert slow.finished == 3 and (router_cap.active, router_cap.shed) == (0, 5)
    assert outer.capacity.shed == 0  # the proxy-sized fallback was not used
