"""ONNX Runtime backend: one tower of a CLIP-like model (CLIP, SigLIP, SigLIP 2, MetaCLIP 2)
from an exported graph, without torch.

Loads the Xenova/Transformers.js layout (see onnx_layout): the tower's own graph, or the
tower cut out of a combined `onnx/model.onnx`, so an image replica runs only vision
weights either way. Preprocessing and tokenization come from the folder's own files
through the same Checkpoint code the torch backend uses, and so does the model family
(config.json's model_type): SigLIP's texts are padded to the context length with its pad
id (engine/payloads.fit_padding, as the torch backend pads), and its sigmoid score's
logit_bias comes from the graph's metadata, which `export-onnx` writes.
"""

from __future__ import annotations

import math
import tempfile
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field, field_validator

from .base import BackendOptions, DescribedBackend
from .checkpoint import METADATA_FILES, Checkpoint, CheckpointError
from .devices import replica_threads
from .onnx_layout import (
    LOGIT_BIAS_METADATA,
    LOGIT_SCALE_METADATA,
    ONNX_DTYPES,
    ONNX_FAMILIES,
    TOWER_INPUTS,
    TOWER_OUTPUT,
    MissingGraphError,
    TowerGraph,
    canonical_onnx_dtype,
    find_tower_graph,
    graph_patterns,
    tower_candidates,
)

# Arrays arriving through Ray's object store are read-only views; we only read them.
warnings.filterwarnings("ignore", message="The given NumPy array is not writable")

_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32}
_REPORTED_DTYPE = {"fp32": "float32", "fp16": "float16"}


def _providers(device: str) -> tuple[list[str], str]:
    import onnxruntime as ort

    has_cuda = "CUDAExecutionProvider" in ort.get_available_providers()
    if device == "cuda" and not has_cuda:
        raise RuntimeError("device 'cuda' was configured but this onnxruntime has no CUDAExecutionProvider "
                           "(install onnxruntime-gpu on a machine with a CUDA device)")
    if device in ("cuda", "auto") and has_cuda:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"], "cuda"
    return ["CPUExecutionProvider"], "cpu"


def _cut_tower(graph: TowerGraph, tower: str, workdir: Path) -> tuple[Path, float | None, float | None]:
    """Extract one tower from a combined graph into `workdir`; also return its logit scale
    and (our exports of a sigmoid-scored family) its logit bias."""
    import onnx
    from onnx.utils import extract_model

    model = onnx.load(str(graph.path), load_external_data=False)
    names = {i.name for i in model.graph.input}
    outputs = {o.name for o in model.graph.output}
    inputs = [name for name in TOWER_INPUTS[tower] if name in names]
    if TOWER_OUTPUT[tower] not in outputs or not inputs:
        raise CheckpointError(
            f"{graph.relative} has inputs {sorted(names)} and outputs {sorted(outputs)}; a CLIP graph needs "
            f"{TOWER_INPUTS[tower][0]!r} in and {TOWER_OUTPUT[tower]!r} out"
        )
    scale = _combined_logit_scale(model)
    bias = _metadata_float({p.key: p.value for p in model.metadata_props}, LOGIT_BIAS_METADATA)
    del model
    out = workdir / f"{tower}.onnx"
    extract_model(str(graph.path), str(out), inputs, [TOWER_OUTPUT[tower]], check_model=False, infer_shapes=False)
    return out, scale, bias


def _metadata_float(metadata: dict[str, str], key: str) -> float | None:
    value = metadata.get(key)
    return float(value) if value else None


def _param_count(path: Path) -> int:
    """Weights in the graph as loaded (a quantized graph counts its int8 weights)."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    return sum(math.prod(init.dims) for init in model.graph.initializer)


def _combined_logit_scale(model: Any) -> float | None:
    """The temperature a combined graph multiplies its logits with: our metadata, else the
    scalar feeding `logits_per_text = Mul(cosines, [Cast|Exp](scale))`."""
    from onnx import numpy_helper

    meta = {p.key: p.value for p in model.metadata_props}
    if meta.get(LOGIT_SCALE_METADATA):
        return float(meta[LOGIT_SCALE_METADATA])
    producers = {out: node for node in model.graph.node for out in node.output}
    scalars = {i.name: i for i in model.graph.initializer if not i.external_data and math.prod(i.dims) == 1}
    scalars.update({n.output[0]: a.t for n in model.graph.node if n.op_type == "Constant"
                    for a in n.attribute if a.name == "value" and math.prod(a.t.dims) == 1})
    mul = producers.get("logits_per_text")
    if mul is None or mul.op_type != "Mul":
        return None
    for name in mul.input:
        exp = False
        while name not in scalars and name in producers and producers[name].op_type in ("Cast", "Exp", "Identity"):
            exp |= producers[name].op_type == "Exp"
            name = producers[name].input[0]
        if name in scalars:
            value = float(numpy_helper.to_array(scalars[name]).reshape(-1)[0])
            return math.exp(value) if exp else value
    return None


class OnnxOptions(BackendOptions):
    """Options of backend `onnx` (a variant's `options:` when `backend: onnx`)."""

    backend: Literal["onnx"] = Field("onnx", description="Filled in from the variant's `backend`.")
    onnx_dtype: Literal[ONNX_DTYPES] = Field(  # type: ignore[valid-type]
        "fp32", description="Which graph file, by Transformers.js dtype (fp32: onnx/vision_model.onnx, q8 or "
        "quantized: *_quantized.onnx, fp16, int8, uint8, q4, q4f16, bnb4: *_<dtype>.onnx)."
    )

    @field_validator("onnx_dtype")
    @classmethod
    def _canonical(cls, value: str) -> str:
        return canonical_onnx_dtype(value)

    def check_variant(self, dtype: str) -> None:
        if dtype not in ("auto", "float32"):
            raise ValueError("backend 'onnx' runs the precision of its graph file: choose it with onnx_dtype, "
                             "not dtype")


class OnnxBackend(DescribedBackend):
    name = "onnx"
    Options = OnnxOptions

    def __init__(self, checkpoint: Checkpoint, tower: str, device: str, threads: int | None, onnx_dtype: str) -> None:
        import onnxruntime as ort

        self.family = checkpoint.family
        if self.family.name not in ONNX_FAMILIES:
            raise CheckpointError(f"checkpoint {checkpoint.source!r}: the onnx backend serves the "
                                  f"{', '.join(ONNX_FAMILIES)} families, not {self.family.name} (use backend torch)")
        self.checkpoint = checkpoint
        self.tower = tower
        self.onnx_dtype = canonical_onnx_dtype(onnx_dtype)
        self.graph = self._locate(checkpoint, tower)
        self.providers, self.device = _providers(device)
        self.threads = threads or replica_threads()

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle workers would spin on cores the router shares with this replica.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        combined_scale = combined_bias = None
        with tempfile.TemporaryDirectory(prefix="clip-onnx-") as workdir:
            path = self.graph.path
            if self.graph.combined:
                path, combined_scale, combined_bias = _cut_tower(self.graph, tower, Path(workdir))
            try:
                # The session holds the weights once created, so the cut-out copy can go.
                self.session = ort.InferenceSession(str(path), options, providers=self.providers)
            except Exception as exc:  # ORT names the missing external-data file or bad node
                raise CheckpointError(
                    f"onnxruntime cannot load {self.graph.relative} of {checkpoint.source!r}: {exc}") from None
            self.param_count = _param_count(path)
        self._inputs = {i.name: i for i in self.session.get_inputs()}
        self._check_io()
        metadata = self.session.get_modelmeta().custom_metadata_map
        self._logit_scale = _metadata_float(metadata, LOGIT_SCALE_METADATA) or combined_scale
        self._logit_bias = None
        if self.family.score_function == "sigmoid":
            found = _metadata_float(metadata, LOGIT_BIAS_METADATA)
            self._logit_bias = found if found is not None else combined_bias
            if self._logit_bias is None:
                self._logit_bias = checkpoint.logit_bias()  # weights kept beside the graphs, if any
            if self._logit_bias is None:
                # Without it every sigmoid score would be wrong (the bias shifts each logit).
                raise CheckpointError(
                    f"{self.graph.relative} of {checkpoint.source!r} is a {self.family.name} graph without its "
                    f"logit_bias (graph metadata {LOGIT_BIAS_METADATA!r}, which `python -m deployments export-onnx` "
                    "writes): export the checkpoint with it, or serve it with backend torch")
        self.image_spec, self.tokenizer_info = checkpoint.tower_preprocessing(tower)
        if self.image_spec is not None:
            scale, bias = self.image_spec.channel_affine()
            self._scale = np.asarray(scale, dtype=np.float32).reshape(1, 3, 1, 1)
            self._bias = np.asarray(bias, dtype=np.float32).reshape(1, 3, 1, 1)

    def _locate(self, checkpoint: Checkpoint, tower: str) -> TowerGraph:
        try:
            return find_tower_graph(checkpoint.path, checkpoint.source, tower, self.onnx_dtype)
        except MissingGraphError:
            # Hub checkpoints: the split graph was asked for first; fetch the combined one.
            checkpoint.fetch([*METADATA_FILES, *graph_patterns(tower_candidates(tower, self.onnx_dtype)[1])])
        try:
            return find_tower_graph(checkpoint.path, checkpoint.source, tower, self.onnx_dtype)
        except MissingGraphError as exc:
            raise CheckpointError(str(exc)) from None

    def _check_io(self) -> None:
        wanted = TOWER_OUTPUT[self.tower]
        outputs = [o.name for o in self.session.get_outputs()]
        if wanted not in outputs:
            raise CheckpointError(f"{self.graph.relative} of {self.checkpoint.source!r} has outputs {outputs}, "
                                  f"not {wanted!r}: it is not a CLIP {self.tower} tower export")
        unknown = sorted(set(self._inputs) - set(TOWER_INPUTS[self.tower]))
        if unknown or TOWER_INPUTS[self.tower][0] not in self._inputs:
            raise CheckpointError(f"{self.graph.relative} of {self.checkpoint.source!r} takes inputs "
                                  f"{sorted(self._inputs)}; the {self.tower} tower feeds {list(TOWER_INPUTS[self.tower])}")
        shape = next(o.shape for o in self.session.get_outputs() if o.name == wanted)
        dim = shape[-1] if shape and isinstance(shape[-1], int) else None
        self.embed_dim = int(dim or self.checkpoint.config.get("projection_dim") or 0)

    @classmethod
    def serving_files(cls, tower: str, onnx_dtype: str = "fp32") -> list[str]:
        """Hub files for one tower: metadata and the tower's own graph (the combined graph
        is fetched only when that is missing)."""
        return [*METADATA_FILES, *graph_patterns(tower_candidates(tower, onnx_dtype)[0])]

    @classmethod
    def load(cls, checkpoint: Checkpoint, tower: str, *, device: str = "auto", dtype: str = "auto",
             threads: int | None = None, onnx_dtype: str = "fp32") -> OnnxBackend:
        if dtype not in ("auto", "float32"):
            raise ValueError("the onnx backend runs the precision of its graph file; choose it with onnx_dtype, "
                             f"not dtype={dtype!r}")
        return cls(checkpoint, tower, device, threads, onnx_dtype)

    def _feed(self, name: str, array: np.ndarray) -> np.ndarray:
        return array.astype(_NUMPY_TYPES.get(self._inputs[name].type, array.dtype), copy=False)

    def _run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        (out,) = self.session.run([TOWER_OUTPUT[self.tower]], {k: self._feed(k, v) for k, v in feeds.items()})
        out = out.astype(np.float32, copy=False)
        # Split exports give projected embeddings, combined graphs normalised ones: normalise both.
        return out / np.maximum(np.linalg.norm(out, axis=-1, keepdims=True), 1e-12)

    def embed_images(self, pixels: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(pixels.transpose(0, 3, 1, 2), dtype=np.float32)
        x *= self._scale
        x += self._bias
        return self._run({"pixel_values": x})

    def embed_texts(self, ids: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        from ..engine.payloads import fit_padding

        tok = self.tokenizer_info
        ids = fit_padding(ids, lengths, tok.padding, tok.context_length, tok.pad_id)  # as the torch backend pads
        feeds = {"input_ids": ids}
        if "attention_mask" in self._inputs:
            if tok.padding == "max_length":
                # SigLIP attends over its padding, as it was trained (transformers passes no mask).
                feeds["attention_mask"] = np.ones(ids.shape, dtype=np.int64)
            else:
                feeds["attention_mask"] = (np.arange(ids.shape[1])[None, :] < lengths[:, None]).astype(np.int64)
        return self._run(feeds)

    @property
    def device_name(self) -> str:
        return self.device

    @property
    def dtype_name(self) -> str:
        return _REPORTED_DTYPE.get(self.onnx_dtype, self.onnx_dtype)

    def own_logit_scale(self) -> float | None:
        return self._logit_scale or self.checkpoint.logit_scale()

    def own_logit_bias(self) -> float | None:
        return self._logit_bias

    def extra_info(self) -> dict[str, Any]:
        return {"graph": self.graph.relative, "combined_graph": self.graph.combined,
                "providers": self.providers, "threads": self.threads, "layout": "onnx",
                "architecture": self.checkpoint.architecture, "family": self.family.name}
