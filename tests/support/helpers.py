"""Test inputs and the transformers reference the served results are compared with."""

from __future__ import annotations

import base64
import io
from functools import lru_cache
from pathlib import Path

import numpy as np
from PIL import Image

from deployments.client import wait_ready  # noqa: F401  (tests poll /ready through it)
from deployments.ingress import free_port  # noqa: F401  (tests and their helper scripts bind through it)

REPO = Path(__file__).resolve().parents[2]
# The hub id the session cluster serves, resolved from the offline cache (tiny weights).
HUB_ID = "openai/clip-vit-base-patch32"
SHARED_BPE = REPO.parent / "shared" / "data" / "clip-bpe" / "bpe_simple_vocab_16e6.txt.gz"


def bpe_path() -> Path | None:
    """The shared CLIP BPE file when the checkout has ../shared beside it (CI does)."""
    return SHARED_BPE if SHARED_BPE.exists() else None


def listening_process(port: int) -> str:
    """The command line (argv[0]) of the process listening on TCP `port` on this machine."""
    return listening_command_line(port)[0]


def listening_command_line(port: int) -> list[str]:
    """The command line of the process listening on TCP `port` on this machine."""
    inodes = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if int(fields[1].rsplit(":", 1)[1], 16) == port and fields[3] == "0A":  # 0A: LISTEN
                inodes.add(f"socket:[{fields[9]}]")
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if any(str(fd.readlink()) in inodes for fd in (proc / "fd").iterdir()):
                return [arg.decode() for arg in (proc / "cmdline").read_bytes().split(b"\0")]
        except OSError:
            continue
    raise LookupError(f"nothing listens on port {port}")


def natural_image(width: int, height: int, seed: int = 0) -> Image.Image:
    """Smooth gradients plus noise: compresses like a photo, differs per seed."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    phase = rng.uniform(0, 6.28, size=3)
    channels = [
        127 + 100 * np.sin(x / (7 + 5 * c) + phase[c]) * np.cos(y / (11 + 3 * c) - phase[c]) for c in range(3)
    ]
    arr = np.stack(channels, -1) + rng.normal(0, 12, size=(height, width, 3))
    return Image.fromarray(np.clip(arr, 0, 255).astype(np.uint8))


def encode(img: Image.Image, fmt: str = "PNG", **save_kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, fmt, **save_kwargs)
    return buf.getvalue()


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def data_uri(data: bytes, mime: str = "image/png") -> str:
    return f"data:{mime};base64,{b64(data)}"


def cosine(a, b) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


class Reference:
    """transformers CLIPModel + CLIPProcessor on the same folder: the parity bar."""

    def __init__(self, folder: Path) -> None:
        import torch
        from transformers import CLIPModel, CLIPProcessor

        self.torch = torch
        self.model = CLIPModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.processor = CLIPProcessor.from_pretrained(folder)

    def image(self, data: bytes) -> np.ndarray:
        with self.torch.no_grad():
            pixels = self.processor(images=Image.open(io.BytesIO(data)), return_tensors="pt").pixel_values
            out = self.model.get_image_features(pixel_values=pixels).pooler_output
        return self.torch.nn.functional.normalize(out, dim=-1)[0].numpy()

    def texts(self, texts: list[str], truncate: bool = True) -> np.ndarray:
        with self.torch.no_grad():
            enc = self.processor(text=texts, return_tensors="pt", padding=True, truncation=truncate, max_length=77)
            out = self.model.get_text_features(**enc).pooler_output
        return self.torch.nn.functional.normalize(out, dim=-1).numpy()

    def token_ids(self, text: str) -> list[int]:
        return self.processor.tokenizer(text).input_ids

    def zero_shot(self, images: list[bytes], prompts: list[str]) -> np.ndarray:
        """transformers' own zero-shot distribution: logits_per_image.softmax(-1)."""
        pil = [Image.open(io.BytesIO(d)) for d in images]
        with self.torch.no_grad():
            enc = self.processor(text=prompts, images=pil, return_tensors="pt", padding=True)
            return self.model(**enc).logits_per_image.softmax(-1).numpy()

    @property
    def logit_scale(self) -> float:
        return float(self.model.logit_scale.detach().exp())


def run_json_scenario(command: list[str], budget_s: float) -> dict:
    """Run a scenario script in its own process group (it starts its own Ray cluster) and
    return the JSON report on its last stdout line; past the budget, kill it all and fail."""
    import json
    import os
    import signal
    import subprocess

    import pytest

    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=budget_s)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the scenario and the Ray processes it started
        out, err = proc.communicate()
        pytest.fail(f"{command[1]} ran over {budget_s} s:\n{err[-3000:]}")
    assert proc.returncode == 0, err[-3000:]
    return json.loads(out.strip().splitlines()[-1])


def make_tokenizer(folder):
    """The serving tokenizer of a checkpoint folder (built once per folder and file version:
    parsing CLIP's vocabulary takes a noticeable part of a second)."""
    files = tuple((f.name, f.stat().st_mtime_ns) for f in sorted(Path(folder).glob("*.json")))
    return _tokenizer(str(folder), files)


@lru_cache(maxsize=8)
def _tokenizer(folder: str, files: tuple):
    from deployments.backends.checkpoint import Checkpoint
    from deployments.preprocess.tokenizer import ClipTokenizer

    info = Checkpoint.open(folder).tokenizer_info()
    return ClipTokenizer(info.json, info.context_length, info.bos_id, info.eos_id, info.vocab_size)
