"""Readiness decisions (deployments/readiness.py) on Serve's own status schema, built by hand:
progress lines, a replica no node can hold, a replica that failed to load, the app that never
built. The real cluster case is tests/serve/test_readiness_cluster.py."""

from __future__ import annotations

import pytest
from ray.serve._private.common import DeploymentStatus, DeploymentStatusTrigger, ReplicaState
from ray.serve.schema import ApplicationDetails, ApplicationStatus, DeploymentDetails, ReplicaDetails

from deployments.readiness import NotReady, check, deployment_line, error_summary, hub_download_bytes, unplaceable

NODES = [{"CPU": 4.0, "memory": 8 * 2**30}, {"CPU": 2.0, "GPU": 1.0, "memory": 4 * 2**30}]
FREE = {"CPU": 3.0, "GPU": 1.0, "memory": 6 * 2**30}


def replica(n: int, state: ReplicaState, pid: int | None) -> ReplicaDetails:
    return ReplicaDetails(replica_id=f"r{n}", state=state, pid=pid, start_time_s=0.0)


def deployment(name: str, status=DeploymentStatus.UPDATING, replicas=(), required=None, message="", target=1):
    return DeploymentDetails(name=name, status=status, status_trigger=DeploymentStatusTrigger.CONFIG_UPDATE_STARTED,
                             message=message, deployment_config={"name": name}, target_num_replicas=target,
                             required_resources=required or {"CPU": 1}, replicas=list(replicas))


def app(*deployments: DeploymentDetails, status=ApplicationStatus.DEPLOYING, message="") -> ApplicationDetails:
    return ApplicationDetails(name="clip", route_prefix="/", docs_path=None, status=status, message=message,
                              last_deployed_time_s=0.0, source="declarative", external_scaler_enabled=False,
                              deployments={d.name: d for d in deployments})


def test_a_replica_fits_when_one_node_has_everything_it_asks_for():
    assert unplaceable({"CPU": 2, "GPU": 1}, NODES, FREE) is None
    assert unplaceable({"CPU": 0}, [], {}) is None


def test_the_shortfall_names_the_resource_asked_and_available():
    short = unplaceable({"CPU": 64, "memory": 2**30}, NODES, FREE)
    assert (short.resource, short.asked, short.largest_node, short.available) == ("CPU", 64, 4, 3)
    text = short.describe()
    assert "CPU 64" in text and "largest node: CPU 4" in text and "free in the cluster now: CPU 3" in text
    assert "16.0 GiB" in unplaceable({"memory": 16 * 2**30}, NODES, FREE).describe()
    # Every resource exists somewhere, but not together on one node.
    assert unplaceable({"CPU": 3, "GPU": 1}, NODES, FREE).resource == "CPU"
    assert unplaceable({"CPU": 1, "TPU": 1}, NODES, FREE).resource == "TPU"


def test_progress_lines_say_what_each_replica_is_doing():
    dep = deployment("ImageEncoder:x", replicas=[replica(0, ReplicaState.RUNNING, 1), replica(1, ReplicaState.STARTING, None),
                                             replica(2, ReplicaState.STARTING, 7)], required={"CPU": 4}, target=3)
    line = deployment_line("ImageEncoder:x", dep, FREE)
    assert line == ("ImageEncoder:x  1/3 replicas running: 1 scheduling (waiting for resources: CPU 4 asked, 3 free); "
                    "1 loading")
    assert "1 downloading weights (300 MiB so far)" in deployment_line("ImageEncoder:x", dep, FREE, 300 * 2**20)
    assert deployment_line("Router", deployment("Router"), FREE) == "Router  0/1 replicas running: no replica started yet"


def test_running_when_every_application_runs():
    ok = app(deployment("Router", DeploymentStatus.HEALTHY, [replica(0, ReplicaState.RUNNING, 1)]),
             status=ApplicationStatus.RUNNING)
    assert check({"clip": ok}, ["clip"], NODES, FREE)[0]
    assert not check({"clip": ok}, ["clip", "other"], NODES, FREE)[0]
    assert not check({"clip": app(deployment("Router", replicas=[replica(0, ReplicaState.STARTING, None)]))},
                     ["clip"], NODES, FREE)[0]


def test_an_unplaceable_replica_fails_at_once_unless_the_cluster_can_grow():
    apps = {"clip": app(deployment("ImageEncoder:x", replicas=[replica(0, ReplicaState.STARTING, None)],
                                   required={"CPU": 64}))}
    with pytest.raises(NotReady, match=r"ImageEncoder:x in application 'clip' cannot be placed: .*CPU 64"):
        check(apps, ["clip"], NODES, FREE)
    assert check(apps, ["clip"], NODES, FREE, cluster_can_grow=True)[0] is False


TRACEBACK = """The deployment failed to start 3 times in a row. This may be due to a problem with its constructor.
Traceback (most recent call last):
  File "/x/replica.py", line 10, in __init__
    self.load()
  File "/x/backend.py", line 3, in load
    raise CheckpointError(msg)
deployments.backends.checkpoint.CheckpointError: /models/missing has no model.safetensors"""


def test_a_replica_that_fails_to_load_is_reported_without_its_traceback():
    assert error_summary(TRACEBACK) == (
        "The deployment failed to start 3 times in a row. This may be due to a problem with its constructor. "
        "deployments.backends.checkpoint.CheckpointError: /models/missing has no model.safetensors")
    assert error_summary("plain message") == "plain message"
    apps = {"clip": app(deployment("TextEncoder:x", DeploymentStatus.DEPLOY_FAILED, message=TRACEBACK),
                        status=ApplicationStatus.DEPLOY_FAILED)}
    with pytest.raises(NotReady, match=r"TextEncoder:x .* failed to start \(DEPLOY_FAILED\): .*has no model") as exc:
        check(apps, ["clip"], NODES, FREE)
    assert "Traceback" not in str(exc.value)


def test_an_application_that_never_built_is_reported():
    failed = app(status=ApplicationStatus.DEPLOY_FAILED, message="ConfigError: variants[0].dtype: unknown 'f8'")
    with pytest.raises(NotReady, match="application 'clip' failed to deploy: ConfigError"):
        check({"clip": failed}, ["clip"], NODES, FREE)


def test_downloads_show_up_from_the_hub_cache(tmp_path):
    blobs = tmp_path / "models--org--name" / "blobs"
    assert hub_download_bytes("ImageEncoder:org--name", tmp_path) is None
    blobs.mkdir(parents=True)
    (blobs / "abc.incomplete").write_bytes(b"x" * 1000)
    assert hub_download_bytes("ImageEncoder:org--name", tmp_path) == 1000
    assert hub_download_bytes("Router", tmp_path) is None
