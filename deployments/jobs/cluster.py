"""Connecting a job script to Ray so that every worker imports this same code."""

from __future__ import annotations

import os
from pathlib import Path

# Set by `ray job submit` in the entrypoint's environment: the job's runtime env applies.
_SUBMITTED_JOB_ENV = "RAY_JOB_CONFIG_JSON_ENV_VAR"


def init_ray(address: str | None = None) -> None:
    """Inside `ray job submit`, the job's runtime env (working_dir) already ships this
    package to every worker. Run directly (`python -m deployments finetune ...`), workers get this
    checkout through `py_modules`, so they never import a different installed copy."""
    import ray

    if ray.is_initialized():
        return
    if _SUBMITTED_JOB_ENV in os.environ:
        ray.init(address=address, log_to_driver=True)
        return
    package = Path(__file__).resolve().parents[1]
    ray.init(address=address, runtime_env={"py_modules": [str(package)]})
