"""Set-up shared by every tier: the checkout under test on sys.path and PYTHONPATH, a Hugging
Face cache that resolves hub ids offline, tiny real CLIP checkpoints (real BPE vocabulary),
and each test's tier marker from its folder (tests/unit, tests/serve, tests/ops).

The tests that need the demo model run last: it trains in the background, at idle CPU
priority, from the end of collection on (tests/support/demo_build.py says why).

Fixtures that need Ray (the session cluster and the app on it) live in tests/support/cluster.py,
loaded below as a plugin: they are defined for every tier, since serve and ops tests share one
session cluster, but start nothing until a test asks for them, and tests/unit/conftest.py
fails any unit test after which Ray is running."""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# Ray workers (replicas, the Serve controller) must import the checkout under test, not
# whatever `pip install -e` points at: they inherit PYTHONPATH from this process.
_TESTS = Path(__file__).resolve().parent
_REPO = _TESTS.parent
sys.path.insert(0, str(_REPO))
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH")) if p)
sys.path.insert(0, str(_TESTS))  # tests import their helpers as `support.<module>`

# huggingface_hub reads HF_HOME and HF_HUB_OFFLINE once, at import: set them before
# anything imports it. Nothing in the test session may reach a model hub.
_HF_HOME = Path(tempfile.mkdtemp(prefix="clip-serve-hf-"))
os.environ["HF_HOME"] = str(_HF_HOME)
os.environ["HF_HUB_OFFLINE"] = "1"

pytest_plugins = ["support.cluster", "support.onnx_fixtures", "support.cpu_report"]

from support.helpers import HUB_ID, Reference, bpe_path  # noqa: E402

TIERS = ("unit", "serve", "ops")
DEMO_FIXTURE = "demo_model_dir"
_DEMO_BUILD = pytest.StashKey["BackgroundDemoBuild"]()


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """The unit tier on its own (`pytest tests/unit`) runs on one worker process
    per core (pytest-xdist): its tests are independent and mostly single-threaded Python, so
    a second process uses the second core. A run that includes the serve or ops tiers stays
    in one process: they share one Ray cluster per session. An explicit `-n` wins."""
    if (os.environ.get("PYTEST_XDIST_WORKER") or not config.pluginmanager.hasplugin("xdist")
            or config.option.numprocesses is not None or config.getoption("collectonly")
            or config.getoption("usepdb", False)):
        return
    unit = _TESTS / "unit"
    paths = [Path(config.invocation_params.dir, arg.split("::")[0]).resolve() for arg in config.args]
    workers = min(os.cpu_count() or 1, 4)
    if paths and workers > 1 and all(path == unit for path in paths):  # one file: not worth the start-up
        config.option.numprocesses = workers
        config.option.dist = "worksteal"  # long and short tests mixed: idle workers take over queued ones
        config.option.tx = ["popen"] * workers


def pytest_collection_modifyitems(config, items):
    """Mark each test with its folder's tier, so `-m unit` (or serve, ops) selects it."""
    for item in items:
        tier = Path(str(item.fspath)).relative_to(_TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
    items[:] = sorted(items, key=_needs_demo)  # stable: each group keeps its order


def _needs_demo(item) -> bool:
    return DEMO_FIXTURE in getattr(item, "fixturenames", ())


def _demo_build(config):
    """The session's one demo build: started at the end of collection when a selected test
    needs the model, else when a fixture first asks for it."""
    build = config.stash.get(_DEMO_BUILD, None)
    if build is None:
        from deployments.demo import DEMO_VERSION
        from support.demo_build import BackgroundDemoBuild

        home = Path(tempfile.mkdtemp(prefix="clip-serve-home-"))
        build = config.stash[_DEMO_BUILD] = BackgroundDemoBuild(home / f"demo-{DEMO_VERSION}")
    return build


def pytest_collection_finish(session):
    if not session.config.getoption("collectonly") and any(_needs_demo(item) for item in session.items):
        _demo_build(session.config)


def pytest_sessionfinish(session):
    build = session.config.stash.get(_DEMO_BUILD, None)
    if build is not None:
        build.stop()
        shutil.rmtree(build.folder.parent, ignore_errors=True)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory) -> Path:
    """ViT-B/32-shaped in miniature: 32 px, patch 8, 16-d embeddings."""
    from deployments.checkpoint_builder import build_clip_checkpoint

    return build_clip_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny-b32", seed=0, bpe_path=bpe_path())


@pytest.fixture(scope="session")
def wide_model_dir(tmp_path_factory) -> Path:
    """A second shape (48 px, patch 16, 24-d) served beside the first from a local folder."""
    from deployments.checkpoint_builder import build_clip_checkpoint

    return build_clip_checkpoint(
        tmp_path_factory.mktemp("ckpt") / "tiny-wide",
        seed=1,
        bpe_path=bpe_path(),
        hidden_size=48,
        heads=3,
        image_size=48,
        patch_size=16,
        projection_dim=24,
    )


@pytest.fixture(scope="session")
def hf_home(model_dir):
    """An HF cache holding `openai/clip-vit-base-patch32` (the tiny weights), hub offline.
    Set before Ray starts so every replica inherits it."""
    from deployments.checkpoint_builder import install_in_hf_cache

    install_in_hf_cache(model_dir, HUB_ID, _HF_HOME / "hub")
    yield _HF_HOME
    shutil.rmtree(_HF_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def reference(model_dir) -> Reference:
    return Reference(model_dir)


@pytest.fixture(scope="session")
def wide_reference(wide_model_dir) -> Reference:
    return Reference(wide_model_dir)


@pytest.fixture(scope="session")
def demo_home(request) -> Path:
    """CLIP_SERVE_HOME for this session: the demo model is trained into it once and
    reused by every test that needs it (test_quickstart's server included)."""
    return _demo_build(request.config).folder.parent


@pytest.fixture(scope="session")
def demo_model_dir(request) -> Path:
    return _demo_build(request.config).result(timeout_s=540)  # within pytest-timeout's 600 s


@pytest.fixture(scope="session")
def siglip_model_dir(tmp_path_factory) -> Path:
    """A tiny random SigLIP in google/siglip-*'s files (tests/support/siglip_fixtures.py),
    shared by the jobs, ONNX and serving tests of the SigLIP family."""
    pytest.importorskip("sentencepiece")
    from support.siglip_fixtures import build_siglip_checkpoint

    return build_siglip_checkpoint(tmp_path_factory.mktemp("siglip") / "tiny-siglip", seed=5)
