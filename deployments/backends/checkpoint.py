"""Find a checkpoint (local folder, OpenAI .pt archive, or Hugging Face hub id via the HF
cache) and read the metadata every backend shares: config, image preprocessing, tokenizer,
temperature, in any of the layouts `clip_layouts.py` reads.

Hub ids go through huggingface_hub.snapshot_download, so HF_HOME, HF_HUB_OFFLINE and
HF_TOKEN work as users expect; with the hub offline, a cached snapshot is used.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from functools import cached_property, lru_cache
from pathlib import Path
from typing import Any

from ..preprocess.image_spec import ImageSpec
from ..preprocess.model_family import CLIP, ModelFamily, UnsupportedFamily, family_for_model_type
from . import clip_layouts as layouts
from .base import TokenizerInfo

# What every backend needs from a repository: config, tokenizer and preprocessing.
METADATA_FILES = [
    "config.json",
    "preprocessor_config.json",
    "processor_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "spiece.model",  # SigLIP's SentencePiece tokenizer (SigLIP 2 and MetaCLIP 2 ship tokenizer.json)
    # open_clip's layout: read first, to choose which weights a hub download fetches.
    layouts.OPEN_CLIP_CONFIG,
]
# What the torch backend serves; the hub repos also carry flax/tf/pickle/onnx weights.
SERVING_FILES = [
    *METADATA_FILES,
    # transformers' own weight names; repos such as laion's also carry open_clip copies.
    "model.safetensors",
    "model-*.safetensors",
    "model.safetensors.index.json",
]
PICKLE_WEIGHTS = ("pytorch_model.bin", "pytorch_model.bin.index.json")
PICKLE_PATTERNS = ["pytorch_model.bin", "pytorch_model-*.bin", "pytorch_model.bin.index.json"]
REMOTE_CODE_PATTERNS = ["*.py"]
_SNAPSHOT = re.compile(r"[\\/]snapshots[\\/]([0-9a-f]{40})[\\/]?$")


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be found or is incomplete; the message names what is missing."""


def download_patterns(layout: str, allow_patterns: list[str]) -> list[str]:
    """What a hub download fetches for a layout: transformers' files as the backend asked,
    or open_clip's weights (its pickle copy only where the backend may read pickle)."""
    if layout != layouts.OPEN_CLIP:
        return allow_patterns
    pickle = [layouts.OPEN_CLIP_PICKLE] if any(p in allow_patterns for p in PICKLE_PATTERNS) else []
    return [*METADATA_FILES, layouts.OPEN_CLIP_WEIGHTS, *pickle]


def _looks_local(source: str) -> bool:
    return source.startswith(("/", "./", "../", "~")) or Path(source).expanduser().exists()


def resolve_source(source: str, revision: str | None = None, allow_patterns: list[str] | None = None) -> Path:
    """A hub id or local folder -> a local folder holding the checkpoint's files."""
    if _looks_local(source):
        path = Path(source).expanduser()
        if path.is_file() and path.suffix == ".pt":
            return path.resolve()  # one OpenAI archive
        if not path.is_dir():
            raise CheckpointError(f"checkpoint folder {source!r} does not exist")
        return path.resolve()
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    try:
        return Path(snapshot_download(repo_id=source, revision=revision, allow_patterns=allow_patterns or SERVING_FILES))
    except LocalEntryNotFoundError:
        raise CheckpointError(
            f"{source!r}{'@' + revision if revision else ''} is not in the Hugging Face cache at "
            f"{constants.HF_HUB_CACHE} and the hub cannot be reached (HF_HUB_OFFLINE="
            f"{int(constants.HF_HUB_OFFLINE)}); download it once with `hf download {source}` or point "
            "`source` at a local folder"
        ) from None
    except RepositoryNotFoundError:
        raise CheckpointError(f"hub repository {source!r} does not exist or needs a token (HF_TOKEN)") from None
    except HfHubHTTPError as exc:
        raise CheckpointError(f"could not download {source!r} from the hub: {exc}") from None


def local_config(source: str, revision: str | None = None, name: str = "config.json") -> dict[str, Any] | None:
    """A checkpoint's config.json (or its JSON file `name`) if it is on this machine already
    (a local folder, or the Hugging Face cache), without downloading anything; None otherwise."""
    try:
        if _looks_local(source):
            path = Path(source).expanduser() / name
        else:
            from huggingface_hub import try_to_load_from_cache

            found = try_to_load_from_cache(source, name, revision=revision)
            if not isinstance(found, str):
                return None
            path = Path(found)
        return json.loads(path.read_text()) if path.is_file() else None
    except (OSError, ValueError):
        return None


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from None


@dataclass
class Checkpoint:
    path: Path  # the folder holding the files
    source: str
    revision: str | None = None
    layout: str = layouts.TRANSFORMERS  # clip_layouts: transformers, open_clip or openai
    archive: Path | None = None  # openai layout: the .pt file

    @classmethod
    def open(cls, source: str, revision: str | None = None, allow_patterns: list[str] | None = None) -> Checkpoint:
        """`allow_patterns`: which repository files a hub download fetches (default: SERVING_FILES);
        for open_clip's layout, its own weight files instead of transformers'."""
        patterns = allow_patterns or SERVING_FILES
        if _looks_local(source):
            found = resolve_source(source, revision)
        else:
            # Metadata first, so that a repository with both layouts' weights downloads one.
            found = resolve_source(source, revision, METADATA_FILES)
        folder = found.parent if found.is_file() else found
        layout = layouts.OPENAI if found.is_file() else layouts.detect_layout(folder)
        if layout is None:
            raise CheckpointError(
                f"checkpoint {source!r} ({folder}) has no config.json (transformers layout), "
                f"{layouts.OPEN_CLIP_CONFIG} (open_clip) or .pt archive (OpenAI's release files)")
        if not _looks_local(source):
            folder = resolve_source(source, revision, download_patterns(layout, patterns))
        archive = None
        if layout == layouts.OPENAI:
            archive = found if found.is_file() else cls._one_archive(source, folder)
        return cls(folder, source, revision, layout, archive)

    @staticmethod
    def _one_archive(source: str, folder: Path) -> Path:
        found = layouts.openai_archives(folder)
        if len(found) > 1:
            raise CheckpointError(f"checkpoint folder {source!r} holds several OpenAI archives "
                                  f"({', '.join(p.name for p in found)}); point `source` at one of them")
        return found[0]

    def fetch(self, allow_patterns: list[str]) -> None:
        """Bring more files of a hub checkpoint into the same snapshot (no-op for folders)."""
        if not _looks_local(self.source):
            self.path = resolve_source(self.source, self.revision, download_patterns(self.layout, allow_patterns))

    @cached_property
    def config(self) -> dict[str, Any]:
        """config.json; for the other layouts, the transformers CLIPConfig equivalent of
        their architecture (ClipArch.hf_config)."""
        if self.layout == layouts.TRANSFORMERS:
            if not (self.path / "config.json").is_file():
                raise CheckpointError(f"checkpoint {self.source!r} ({self.path}) has no config.json")
            return _read_json(self.path / "config.json")
        return self.clip_arch.hf_config()

    @cached_property
    def family(self) -> ModelFamily:
        """The model family (preprocess/model_family.py) from config.json's model_type and
        tokenizer_config.json's tokenizer_class; open_clip and OpenAI checkpoints are CLIP's."""
        if self.layout != layouts.TRANSFORMERS:
            return CLIP
        try:
            return family_for_model_type(self.config.get("model_type"), self._tokenizer_config().get("tokenizer_class"))
        except UnsupportedFamily as exc:
            raise CheckpointError(f"checkpoint {self.source!r}: {exc}") from None

    @property
    def architecture(self) -> str:
        """'resnet' or 'vit' (every transformers CLIP checkpoint is a ViT)."""
        return self.config.get("architecture", "vit")

    @cached_property
    def _open_clip(self) -> layouts.OpenClipModel:
        try:
            return layouts.read_open_clip_config(self.path / layouts.OPEN_CLIP_CONFIG)
        except layouts.LayoutError as exc:
            raise CheckpointError(f"checkpoint {self.source!r}: {exc}") from None

    @property
    def clip_arch(self) -> layouts.ClipArch:
        """The architecture of an open_clip or OpenAI checkpoint."""
        if self.layout == layouts.OPEN_CLIP:
            return self._open_clip.arch
        if self._archive_arch is None:
            raise CheckpointError(
                f"the architecture of {self.source!r} is only known once its archive "
                f"{self.archive.name} is read: load_weights(allow_pickle=True) first")
        return self._archive_arch

    # What reading an OpenAI archive or a pickle file told (load_weights).
    _archive_arch: layouts.ClipArch | None = field(default=None, init=False, repr=False)
    _archive_logit_scale: float | None = field(default=None, init=False, repr=False)

    def load_weights(self, allow_pickle: bool = False) -> dict[str, Any]:
        """An open_clip or OpenAI checkpoint's whole state dict, OpenAI's key names, float32."""
        import torch

        files = self.require_safetensors(allow_pickle)
        path = files[0]
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            sd = load_file(str(path))
        elif self.layout == layouts.OPENAI:
            sd = _read_archive(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        if not isinstance(sd, dict):
            raise CheckpointError(f"{path.name} of {self.source!r} holds no state dict")
        sd = dict(sd.get("state_dict", sd))
        # open_clip's CustomTextCLIP keeps the text tower under `text.`; the same weights.
        sd = {k[len("text."):] if k.startswith("text.") else k: v for k, v in sd.items()}
        sd = {k: v.float() if v.is_floating_point() else v for k, v in sd.items() if torch.is_tensor(v)}
        if self.layout == layouts.OPENAI:
            try:
                self._archive_arch = layouts.arch_from_state_dict(sd)
            except layouts.LayoutError as exc:
                raise CheckpointError(f"{path.name} of {self.source!r}: {exc}") from None
        if "logit_scale" in sd:
            import math

            self._archive_logit_scale = math.exp(float(sd["logit_scale"].reshape(-1)[0]))
        return sd

    @property
    def text_config(self) -> dict[str, Any]:
        return self.config.get("text_config") or {}

    @property
    def vision_config(self) -> dict[str, Any]:
        return self.config.get("vision_config") or {}

    def weight_files(self) -> list[Path]:
        """The safetensors weights of the checkpoint's layout."""
        if self.layout == layouts.OPEN_CLIP:
            return [p for p in [self.path / layouts.OPEN_CLIP_WEIGHTS] if p.is_file()]
        if self.layout == layouts.OPENAI:
            return []
        return sorted(self.path.glob("model*.safetensors"))

    def require_safetensors(self, allow_pickle: bool = False) -> list[Path]:
        """The safetensors weight files; with `allow_pickle`, pickle files when there are none."""
        files = self.weight_files()
        if files:
            return files
        if self.layout == layouts.OPENAI:
            if allow_pickle:
                return [self.archive]
            raise CheckpointError(
                f"checkpoint {self.source!r} is OpenAI's release file {self.archive.name}, a TorchScript archive "
                "that is read by unpickling, which can run arbitrary code; it is only loaded when the variant "
                "sets `allow_pickle_weights: true` (command line: --allow-pickle-weights), or convert it to "
                "open_clip's safetensors layout")
        names = [layouts.OPEN_CLIP_PICKLE] if self.layout == layouts.OPEN_CLIP else PICKLE_WEIGHTS
        pickled = [self.path / name for name in names if (self.path / name).exists()]
        if pickled and allow_pickle:
            return pickled
        if pickled:
            raise CheckpointError(
                f"checkpoint {self.source!r} has only pickle weights ({pickled[0].name}); pickle can run "
                "arbitrary code, so only safetensors weights are loaded unless the variant sets "
                "`allow_pickle_weights: true` (command line: --allow-pickle-weights)"
            )
        wanted = layouts.OPEN_CLIP_WEIGHTS if self.layout == layouts.OPEN_CLIP else "model*.safetensors"
        raise CheckpointError(f"checkpoint {self.source!r} ({self.path}) has no {wanted} weights")

    def remote_code(self) -> dict[str, Any] | None:
        """The config's `auto_map` (classes from Python files in the repository), if any."""
        if self.layout != layouts.TRANSFORMERS:
            return None
        return self.config.get("auto_map") or None

    def require_no_remote_code(self, trust_remote_code: bool = False) -> None:
        code = self.remote_code()
        if code and not trust_remote_code:
            raise CheckpointError(
                f"checkpoint {self.source!r} declares its own model code (config.json auto_map: {code}); "
                "running a repository's Python is refused unless the variant sets `trust_remote_code: true`"
            )

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever the weights change: the hub commit, or file sizes and mtimes."""
        match = _SNAPSHOT.search(str(self.path))
        if match:
            return f"{self.source}@{match.group(1)}"
        digest = hashlib.sha256()
        # An archive in ~/.cache/clip shares its folder with the other variants' archives.
        for f in [self.archive] if self.archive else sorted(self.path.rglob("*")):
            if f.is_file() and f.suffix in (".safetensors", ".onnx", ".json", ".bin", ".data", ".pt"):
                stat = f.stat()
                digest.update(f"{f.relative_to(self.path)}:{stat.st_size}:{stat.st_mtime_ns}\n".encode())
        return f"{self.source}#{digest.hexdigest()[:16]}"

    def layout_preprocessor(self) -> dict[str, Any] | None:
        """An open_clip or OpenAI checkpoint's image transform in preprocessor_config.json's
        spelling (what image_spec reads, and what an ONNX export writes); None for
        transformers' layout, whose own file says it."""
        if self.layout == layouts.TRANSFORMERS:
            return None
        if self.layout == layouts.OPEN_CLIP:
            return self._open_clip.preprocessor
        return layouts.preprocessor(self.clip_arch.image_size)

    def image_spec(self) -> ImageSpec:
        if self.layout != layouts.TRANSFORMERS:
            return ImageSpec.from_preprocessor_config(self.layout_preprocessor(), self.clip_arch.image_size)
        image_size = self.vision_config.get("image_size")
        crop = self.family.center_crop
        for name in ("preprocessor_config.json", "processor_config.json"):
            if (self.path / name).is_file():
                try:
                    return ImageSpec.from_preprocessor_config(_read_json(self.path / name), image_size,
                                                              center_crop=crop)
                except ValueError as exc:
                    raise CheckpointError(f"{self.path / name}: {exc}") from None
        if image_size:
            return ImageSpec.from_preprocessor_config({}, image_size, center_crop=crop)
        raise CheckpointError(f"checkpoint {self.source!r} has no preprocessor_config.json and no vision image_size")

    def tower_preprocessing(self, tower: str) -> tuple[ImageSpec | None, TokenizerInfo | None]:
        """What the router needs to prepare inputs for `tower`, from the folder's own files."""
        if tower == "image":
            return self.image_spec(), None
        return None, self.tokenizer_info()

    def _tokenizer_config(self) -> dict[str, Any]:
        path = self.path / "tokenizer_config.json"
        return _read_json(path) if path.is_file() else {}

    def tokenizer_json(self) -> str:
        if self.family.name == "siglip" and (self.path / "spiece.model").is_file():
            # transformers' own SiglipTokenizer reads spiece.model (some repositories gained a
            # tokenizer.json later; the processor does not use it), so this is the reference.
            from .sentencepiece_tokenizer import siglip_tokenizer_json

            tcfg = self._tokenizer_config()
            try:
                return siglip_tokenizer_json(self.path / "spiece.model", _token_text(tcfg.get("eos_token", "</s>")),
                                             bool(tcfg.get("do_lower_case", True)))
            except (ValueError, ImportError) as exc:
                raise CheckpointError(f"tokenizer of {self.source!r}: {exc}") from None
        if self.family.name == "siglip2":
            return self._siglip2_tokenizer_json()
        if (self.path / "tokenizer.json").is_file():
            return (self.path / "tokenizer.json").read_text(encoding="utf-8")
        if (self.path / "vocab.json").is_file() and (self.path / "merges.txt").is_file():
            # Slow-tokenizer files only: let transformers build the equivalent fast tokenizer.
            from transformers import CLIPTokenizer

            tok = CLIPTokenizer(str(self.path / "vocab.json"), str(self.path / "merges.txt"))
            return tok.backend_tokenizer.to_str()
        if self.layout != layouts.TRANSFORMERS:
            # open_clip and OpenAI checkpoints ship no tokenizer: theirs is CLIP's BPE.
            return packaged_clip_tokenizer_json()
        raise CheckpointError(
            f"checkpoint {self.source!r} has no tokenizer (tokenizer.json, or vocab.json + merges.txt)"
        )

    def _siglip2_tokenizer_json(self) -> str:
        """Gemma's tokenizer.json with SigLIP 2's training rules (siglip2_tokenizer.py)."""
        from .siglip2_tokenizer import siglip2_tokenizer_json

        path = self.path / "tokenizer.json"
        if not path.is_file():
            raise CheckpointError(f"SigLIP 2 checkpoint {self.source!r} has no tokenizer.json (its Gemma tokenizer)")
        eos = _token_text(self._tokenizer_config().get("eos_token", self.family.eos_token)) or self.family.eos_token
        try:
            return siglip2_tokenizer_json(path.read_text(encoding="utf-8"), eos, lowercase=self.family.lowercase)
        except ValueError as exc:
            raise CheckpointError(f"tokenizer of {self.source!r}: {path.name}: {exc}") from None

    def tokenizer_info(self) -> TokenizerInfo:
        from tokenizers import Tokenizer

        text_json = self.tokenizer_json()
        tok = Tokenizer.from_str(text_json)
        tcfg = self._tokenizer_config()

        def token_id(key: str, default: str) -> int:
            value = _token_text(tcfg.get(key, default)) or default
            found = tok.token_to_id(value)
            if found is None:
                raise CheckpointError(f"tokenizer of {self.source!r} has no {key} {value!r}")
            return found

        family = self.family
        context = int(self.text_config.get("max_position_embeddings", family.context_length))
        model_max = tcfg.get("model_max_length")
        if isinstance(model_max, int) and 0 < model_max < context:
            context = model_max
        fixed_length = family.text_padding == "max_length"
        return TokenizerInfo(
            json=text_json,
            context_length=context,
            bos_id=token_id("bos_token", family.bos_token) if family.bos_token else None,
            eos_id=token_id("eos_token", family.eos_token),
            vocab_size=int(self.text_config.get("vocab_size", tok.get_vocab_size())),
            padding=family.text_padding,
            pad_id=token_id("pad_token", family.pad_token or family.eos_token) if fixed_length else None,
        )

    def _weight_scalar(self, key: str) -> float | None:
        """One scalar from the safetensors weights (`logit_scale`, `logit_bias`), read
        without loading the rest; None when no weight file holds it."""
        from safetensors import safe_open

        for f in self.weight_files():
            # numpy, not torch: backends without torch read it too (bf16 needs torch).
            with safe_open(str(f), framework="numpy") as handle:
                if key not in handle.keys():
                    continue
                try:
                    return float(handle.get_tensor(key).reshape(-1)[0])
                except (TypeError, ValueError):
                    with safe_open(str(f), framework="pt") as pt:
                        return float(pt.get_tensor(key).float().reshape(-1)[0])
        return None

    def logit_bias(self) -> float | None:
        """The learned bias of a sigmoid score (SigLIP's `logit_bias`), read from the weights."""
        return self._weight_scalar("logit_bias")

    def logit_scale(self, allow_pickle: bool = False) -> float | None:
        """exp(logit_scale) from the weights, read without loading the rest."""
        import math

        if self.layout != layouts.TRANSFORMERS and not self.weight_files():
            return self._archive_logit_scale  # read with the weights (load_weights)
        if allow_pickle and not self.weight_files():
            return self._pickled_logit_scale()
        value = self._weight_scalar("logit_scale")
        return None if value is None else float(math.exp(value))

    def _pickled_logit_scale(self) -> float | None:
        import math

        import torch

        for name in ("pytorch_model.bin",):
            if (self.path / name).is_file():
                state = torch.load(self.path / name, map_location="cpu", weights_only=True, mmap=True)
                if "logit_scale" in state:
                    return float(math.exp(float(state["logit_scale"].float().reshape(-1)[0])))
        return None


def _token_text(value: Any) -> str:
    """A special token as tokenizer_config.json spells it: a string or an AddedToken dict."""
    return value.get("content", "") if isinstance(value, dict) else str(value)


def _read_archive(path: Path) -> dict[str, Any]:
    """The weights of an OpenAI release file: a TorchScript archive (`clip.load` reads it so),
    or, as `clip.load` also accepts, a plain pickled state dict."""
    import torch

    try:
        return torch.jit.load(str(path), map_location="cpu").state_dict()
    except RuntimeError:
        return torch.load(path, map_location="cpu", weights_only=True)


@lru_cache(maxsize=1)
def packaged_clip_tokenizer_json() -> str:
    """CLIP's BPE tokenizer (the package's vocabulary) as tokenizer.json text."""
    import tempfile

    from transformers import CLIPTokenizer

    from ..preprocess.vocab import write_vocab_files

    with tempfile.TemporaryDirectory() as tmp:
        vocab, merges = write_vocab_files(Path(tmp))
        return CLIPTokenizer(str(vocab), str(merges)).backend_tokenizer.to_str()
