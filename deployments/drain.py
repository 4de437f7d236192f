"""Drain this Ray node before its pod stops: the Kubernetes `preStop` hook.

    python -m deployments.drain --deadline-s 60

Asks Ray to drain the node: nothing new is scheduled on it, Serve starts replacements for
its replicas on other nodes before stopping these, and its HTTP proxy starts failing
health checks so load balancers stop sending it requests. Then waits until no Serve
replica is left on the node (or the deadline passes), so in-flight requests finish before
Kubernetes sends SIGTERM. Never fails the hook: a pod must stop even if draining cannot.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time

REASON = "DRAIN_NODE_REASON_PREEMPTION"  # "this node goes away"; Ray's other reason is idle termination


def serve_replicas_on(node_id: str) -> list[str]:
    """Serve replica actors still alive on the node (uses the head's state API)."""
    from ray.util.state import list_actors

    actors = list_actors(filters=[("node_id", "=", node_id), ("state", "=", "ALIVE")], limit=10_000)
    return [a.class_name for a in actors if a.class_name.startswith("ServeReplica")]


def drain(address: str, node_id: str | None, deadline_s: float, poll_s: float = 1.0) -> dict:
    import ray

    context = ray.init(address=address, log_to_driver=False, logging_level="WARNING")
    node_id = node_id or ray.get_runtime_context().get_node_id()
    started = time.monotonic()
    request = subprocess.run(
        ["ray", "drain-node", "--address", context.address_info["gcs_address"], "--node-id", node_id,
         "--reason", REASON, "--reason-message", "pod is terminating (preStop)",
         "--deadline-remaining-seconds", str(int(deadline_s))],
        capture_output=True, text=True,
    )
    report = {"node_id": node_id, "accepted": request.returncode == 0, "error": request.stderr.strip()[-500:] or None}
    remaining = serve_replicas_on(node_id)
    while remaining and report["accepted"] and time.monotonic() - started < deadline_s:
        time.sleep(poll_s)
        remaining = serve_replicas_on(node_id)
    report.update(replicas_left=remaining, waited_s=round(time.monotonic() - started, 1))
    return report


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--deadline-s", type=float, default=60, help="Stop waiting after this long (keep it below "
                        "the pod's terminationGracePeriodSeconds).")
    parser.add_argument("--address", default="auto", help="Ray cluster address (default: the local node's cluster).")
    parser.add_argument("--node-id", default=None, help="Node to drain (default: this one).")
    args = parser.parse_args(argv)
    try:
        report = drain(args.address, args.node_id, args.deadline_s)
    except Exception as exc:  # the pod must still stop
        report = {"accepted": False, "error": repr(exc)[:500]}
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
