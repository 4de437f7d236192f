"""What `build_app(args)` accepts: the validated shape of the application config.

Pure pydantic (no torch, no ray) so configs can be checked anywhere. Unknown keys are
errors (`extra="forbid"`): a typo in a config must fail at build time, naming the field.
"""

from __future__ import annotations

import re
import warnings
from typing import Annotated, Any, Literal, Union

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .backends.registry import BACKENDS, options_models
from .catalogue import apply_catalogue

Tower = Literal["image", "text"]
TOWERS: tuple[Tower, ...] = ("image", "text")
DEPLOYMENT_PREFIX: dict[str, str] = {"image": "ImageEncoder", "text": "TextEncoder"}
ROUTER_DEPLOYMENT = "Router"

# The registry holds import strings only, so validating a config never imports torch.
KNOWN_BACKENDS = tuple(BACKENDS)
# Each backend's options model lives next to the backend; `backend` tells them apart.
_OPTIONS_MODELS = options_models()
BackendOptionsConfig = Annotated[Union[tuple(_OPTIONS_MODELS.values())], Field(discriminator="backend")]


class ConfigError(ValueError):
    """A config that cannot be built; the message names the offending field."""


class StrictModel(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BatchingConfig(StrictModel):
    """Encoder batching knobs; shipped as the deployment's `user_config`, so they change live."""

    max_batch_size: int = Field(32, ge=1, le=4096, description="Most items in one forward pass.")
    batch_wait_timeout_s: float = Field(
        0.003, ge=0.0, le=1.0, description="How long a replica waits to fill a batch after its first item."
    )

    @classmethod
    def for_tower(cls, tower: str, user_config: dict[str, Any] | None = None) -> BatchingConfig:
        """The tower's defaults with what `user_config` sets on top (knobs left out keep
        this tower's default, not the other tower's)."""
        given = cls.model_validate(user_config or {}).model_dump(exclude_unset=True)
        return TOWER_BATCHING[tower].model_copy(update=given)


# Per-tower defaults: text forwards are cheap per item, so a text batch holds more
# (docs/benchmarks.md has the measurements).
TOWER_BATCHING: dict[str, BatchingConfig] = {"image": BatchingConfig(), "text": BatchingConfig(max_batch_size=64)}


class DeploymentOptions(StrictModel):
    """Ray Serve options for one deployment; unset fields keep the deployment's defaults.

    serve_config.yaml's `deployments:` section overrides these again at deploy time.
    """

    num_replicas: int | Literal["auto"] | None = Field(None, description="Fixed replica count, or 'auto'.")
    ray_actor_options: dict[str, Any] | None = Field(None, description="num_cpus, num_gpus, resources, ...")
    autoscaling_config: dict[str, Any] | None = Field(None, description="Ray Serve autoscaling config.")
    max_ongoing_requests: int | None = Field(None, ge=1, description="Requests one replica handles at once (Serve).")
    max_queued_requests: int | None = Field(None, ge=-1, description="Requests queued per caller for this deployment "
                                            "(Serve; -1: no limit).")
    health_check_period_s: float | None = Field(None, gt=0, description="Seconds between replica health checks.")
    health_check_timeout_s: float | None = Field(None, gt=0, description="A health check slower than this fails.")
    graceful_shutdown_timeout_s: float | None = Field(None, ge=0, description="How long a stopping replica may "
                                                      "finish its requests.")

    def to_options(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class EncoderDeploymentOptions(DeploymentOptions):
    user_config: BatchingConfig | None = Field(
        None, description="Live-tunable batching; knobs left out keep the tower's default (max_batch_size: 32 image, "
        "64 text).")

    def to_options(self) -> dict[str, Any]:
        options = super().to_options()
        if self.user_config is not None:  # only what was set: the replica fills in its tower's defaults
            options["user_config"] = self.user_config.model_dump(exclude_unset=True)
        return options


_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-/]*$")


def _nest_backend_options(data: Any) -> Any:
    """Fill in `options.backend` from the variant's `backend`, and move backend options
    written directly on the variant (the layout before `options:`) into `options`, with a
    FutureWarning (Python shows it to whoever runs the server; a DeprecationWarning raised
    in a library is hidden by default). A flat option of another backend is an error when
    it is set to anything but its default, as it always was."""
    if not isinstance(data, dict):
        return data
    backend = data.get("backend", "torch")
    if backend not in _OPTIONS_MODELS or ("options" in data and not isinstance(data["options"], dict)):
        return data  # the field validators say what is wrong
    data = dict(data)
    options = dict(data.get("options") or {})
    for name in [k for k in data if k not in VariantConfig.model_fields]:
        owners = [b for b, model in _OPTIONS_MODELS.items() if name in model.model_fields and name != "backend"]
        if not owners:
            continue  # an unknown key: `extra="forbid"` names it
        value = data.pop(name)
        if backend in owners:
            warnings.warn(f"variant {data.get('id')!r}: `{name}` directly on a variant is deprecated; "
                          f"write it under `options:`", FutureWarning, stacklevel=2)
            options[name] = value
        elif value != _OPTIONS_MODELS[owners[0]].model_fields[name].default:
            raise ValueError(f"{name} applies to backend {owners[0]!r}, not {backend!r}")
    if options.setdefault("backend", backend) != backend:
        raise ValueError(f"options.backend is {options['backend']!r} but the variant's backend is {backend!r}")
    data["options"] = options
    return data


class VariantConfig(StrictModel):
    """One served model id and how to load and run it."""

    id: str = Field(description="The served model name clients put in `model`.")
    source: str | None = Field(None, description="Hub id or local folder; defaults to `id`.")
    backend: str = Field("torch", description=f"One of {list(KNOWN_BACKENDS)}.")
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = Field(
        "auto", description="auto: bf16 on CPUs with AMX/AVX512-BF16, fp16/bf16 on GPU, else fp32."
    )
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when present.")
    aliases: list[str] = Field(default_factory=list, description="Other names that resolve to this variant.")
    revision: str | None = Field(None, description="Hub revision (branch, tag or commit).")
    towers: list[Tower] = Field(default_factory=lambda: list(TOWERS), description="Which towers to serve.")
    cpu_threads: int | None = Field(
        None, ge=1, le=256, description="CPU threads of the replica's forwards (split across batches_in_flight); "
        "default: the replica's CPUs.")
    batches_in_flight: Annotated[int, Field(ge=1, le=2)] | Literal["auto"] = Field(
        "auto", description="Forward passes a replica runs at once, each on its own thread (and CUDA stream). auto: 2 "
        "on GPU (one batch's copy overlaps the other's compute); on CPU 2 for torch with 2+ threads, which are split "
        "between them, else 1.",
    )
    image_deployment: EncoderDeploymentOptions = Field(
        default_factory=EncoderDeploymentOptions, description="Ray Serve options of the image encoder deployment.")
    text_deployment: EncoderDeploymentOptions = Field(
        default_factory=EncoderDeploymentOptions, description="Ray Serve options of the text encoder deployment.")
    options: BackendOptionsConfig = Field(
        default_factory=_OPTIONS_MODELS["torch"], description="The backend's own options, one model per backend "
        "(`backend` picks it). The same keys directly on the variant are still read, with a deprecation warning.")
    logit_scale: float | None = Field(
        None, gt=0, description="exp(temperature) for zero-shot scores when the checkpoint's files lack it."
    )

    @model_validator(mode="before")
    @classmethod
    def _catalogue_defaults(cls, data: Any) -> Any:
        return _nest_backend_options(apply_catalogue(data))

    @model_validator(mode="after")
    def _check_backend_options(self) -> VariantConfig:
        self.options.check_variant(self.dtype)
        return self

    def backend_options(self) -> dict[str, Any]:
        """Keyword arguments for this backend's `load` and `serving_files`."""
        return self.options.load_kwargs()

    def __getattr__(self, name: str) -> Any:
        # Deprecated, for one release: backend options read as variant attributes.
        options = self.__dict__.get("options")
        if options is not None and name != "backend" and name in type(options).model_fields:
            return getattr(options, name)
        return super().__getattr__(name)  # type: ignore[misc]

    @field_validator("id")
    @classmethod
    def _check_id(cls, value: str) -> str:
        if not _ID_PATTERN.match(value) or "//" in value or value.endswith("/"):
            raise ValueError("must be non-empty and use only letters, digits, '.', '_', '-' and '/'")
        return value

    @field_validator("backend")
    @classmethod
    def _check_backend(cls, value: str) -> str:
        if value not in KNOWN_BACKENDS:
            raise ValueError(f"unknown backend {value!r}; known: {list(KNOWN_BACKENDS)}")
        return value

    @field_validator("towers")
    @classmethod
    def _check_towers(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("serve at least one tower")
        if len(set(value)) != len(value):
            raise ValueError("towers must be unique")
        return [t for t in TOWERS if t in value]

    @property
    def resolved_source(self) -> str:
        return self.source or self.id

    @property
    def slug(self) -> str:
        return self.id.replace("/", "--")

    def deployment_name(self, tower: str) -> str:
        return f"{DEPLOYMENT_PREFIX[tower]}:{self.slug}"

    def deployment_options(self, tower: str) -> EncoderDeploymentOptions:
        return self.image_deployment if tower == "image" else self.text_deployment

    def names(self) -> list[str]:
        return [self.id, *self.aliases]


class LimitsConfig(StrictModel):
    """Request limits enforced by the router before any model work."""

    max_request_bytes: int = Field(64 * 2**20, ge=1024, description="Request body size (also chunked bodies).")
    max_items_per_request: int = Field(2048, ge=1, description="Inputs in one request.")
    max_image_bytes: int = Field(20 * 2**20, ge=1, description="Encoded bytes of one image.")
    max_image_pixels: int = Field(40_000_000, ge=1, description="Decoded pixels of one image (width*height).")
    max_text_chars: int = Field(20_000, ge=1, description="Characters of one text input or label prompt.")
    max_request_text_chars: int = Field(
        2_000_000, ge=1, description="Characters of all texts one request has tokenized: its inputs, and (counted "
        "apart) the label prompts of a classification. Bounds the tokenizer time one request can claim."
    )
    max_request_pixels: int = Field(
        200_000_000, ge=1, description="Pixels all images of one request decode to (JPEGs at the reduced size they "
        "are decoded at for the model). Bounds the decode time one request can claim."
    )
    max_image_aspect_ratio: float = Field(
        50.0, ge=1.0, description="Longer over shorter side of one image; refused before decoding (resize bombs)."
    )
    image_formats: list[str] = Field(
        default_factory=lambda: ["JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"],
        min_length=1,
        description="Accepted image formats (Pillow names): JPEG, PNG, WEBP, GIF, BMP, TIFF.",
    )
    max_labels: int = Field(1000, ge=2, description="Candidate labels in one classify request.")
    max_templates: int = Field(100, ge=1, description="Prompt templates in one classify request.")
    max_prompts: int = Field(
        20_000, ge=2, description="Label prompts (labels x templates) one classify request may need embedded."
    )

    @field_validator("image_formats")
    @classmethod
    def _check_formats(cls, value: list[str]) -> list[str]:
        known = {"JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF"}
        upper = [f.upper() for f in value]
        unknown = sorted(set(upper) - known)
        if unknown:
            raise ValueError(f"unknown image formats {unknown}; known: {sorted(known)}")
        return upper


class RouterConfig(StrictModel):
    """The HTTP router: request handling, coalescing into encoder calls, admission."""

    coalesce_wait_ms: float = Field(
        2.0, ge=0.0, le=100.0, description="How long items for one tower are gathered into one encoder call."
    )
    max_items_per_call: int = Field(64, ge=1, le=4096, description="Most items in one router->encoder call.")
    max_inflight_calls: int = Field(
        8, ge=1, le=1024, description="Encoder calls in flight per (variant, tower); beyond it items accumulate."
    )
    decode_threads: int = Field(
        2, ge=1, le=64, description="Threads decoding and resizing images; one request keeps at most half of them "
        "(at least one) busy, so a heavy request leaves the rest to others."
    )
    tokenize_threads: int = Field(
        2, ge=1, le=64, description="Threads running the tokenizer, off the event loop; one request keeps at most "
        "half of them (at least one) busy."
    )
    truncate_default: bool = Field(
        True, description="Truncate texts over the context length unless a request says `truncate: false`."
    )
    request_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="Deadline of one request inside the router (504 in the error envelope); keep it below "
        "Serve's http_options.request_timeout_s, whose own timeout answers outside the envelope.",
    )
    max_concurrent_requests: int = Field(
        192, ge=1, le=100_000,
        description="API requests one router replica works on at once; more are refused at once with 503 "
        "(keep it below the Router's max_ongoing_requests, 256 by default).",
    )
    max_pending_items: int = Field(
        4096, ge=1, le=1_000_000,
        description="Items waiting in the router for an encoder call, per (variant, tower); a request that "
        "would queue more is refused with 503. A request always fits into an empty queue.",
    )
    encoder_retries: int = Field(
        2, ge=0, le=5, description="Retries of an encoder call whose replica died (on another replica)."
    )
    playground: bool = Field(
        True,
        description="Serve the browser playground (static files calling the public API) at `/`; "
        "false for locked-down deployments (then `/` is a 404).",
    )
    deployment: DeploymentOptions = Field(default_factory=DeploymentOptions,
                                          description="Ray Serve options of the Router deployment.")


class ImageUrlsConfig(StrictModel):
    """Fetching `http(s)://` image URLs. Off by default; when on, only public addresses of
    allowed hosts are fetched (docs/security.md)."""

    enabled: bool = Field(False, description="Fetch image URLs; off: URLs are refused with 400.")
    allow_hosts: list[str] = Field(
        default_factory=list,
        description="Hosts that may be fetched: `example.com` (exactly), `*.example.com` (subdomains) or an IP "
        "address. Empty: any host with a public address.",
    )
    deny_hosts: list[str] = Field(
        default_factory=list, description="Hosts never fetched (same forms; an address also refuses its other "
        "spellings and every name that resolves to it, on each redirect too); wins over allow."
    )
    allow_private_networks: bool = Field(
        False,
        description="Also fetch from loopback, private, link-local and CGNAT addresses (never metadata, multicast "
        "or unspecified ones). For tests and closed networks only.",
    )
    max_redirects: int = Field(3, ge=0, le=10, description="Redirects followed (each one checked again).")
    timeout_s: float = Field(10.0, gt=0, le=120, description="One deadline for DNS, connects, redirects and the body.")
    max_bytes: int = Field(
        20 * 2**20, ge=1, description="Most bytes of one fetched image after decompression (also capped by "
        "limits.max_image_bytes)."
    )
    max_urls_per_request: int = Field(16, ge=1, le=1024, description="Image URLs in one request.")
    max_concurrent_fetches: int = Field(32, ge=1, le=1024, description="Fetches in flight per router replica.")

    @field_validator("allow_hosts", "deny_hosts")
    @classmethod
    def _check_hosts(cls, value: list[str]) -> list[str]:
        from .preprocess.url_policy import normalise_host_pattern

        try:
            return [normalise_host_pattern(p) for p in value]
        except ValueError as exc:
            raise ValueError(str(exc)) from None


class AuthConfig(StrictModel):
    """API keys (`Authorization: Bearer <key>`), checked before a request body is read."""

    enabled: bool = Field(False, description="Require an API key on every API route.")
    api_keys_env: str | None = Field(
        "CLIP_SERVE_API_KEYS", description="Environment variable of the router holding keys, comma-separated."
    )
    api_keys_file: str | None = Field(
        None, description="File with one key per line (# comments); re-read when it changes (key rotation)."
    )

    @model_validator(mode="after")
    def _need_a_source(self) -> AuthConfig:
        if self.enabled and not (self.api_keys_env or self.api_keys_file):
            raise ValueError("auth is enabled: set api_keys_env or api_keys_file")
        return self


class LabelCacheConfig(StrictModel):
    """The router's cache of label/prompt text embeddings (one per router replica, LRU)."""

    max_entries: int = Field(65_536, ge=0, description="Most cached prompt embeddings; 0 disables the cache.")
    max_bytes: int = Field(
        64 * 2**20, ge=0, description="Most bytes of cached vectors plus prompt text (UTF-8); 0 disables the cache."
    )


class AppConfig(StrictModel):
    """The application's `args`."""

    variants: list[VariantConfig] = Field(min_length=1, description="The served models (ids and aliases unique).")
    router: RouterConfig = Field(default_factory=RouterConfig, description="Router settings.")
    limits: LimitsConfig = Field(default_factory=LimitsConfig, description="Request limits.")
    label_cache: LabelCacheConfig = Field(default_factory=LabelCacheConfig,
                                          description="Cached prompt embeddings, per router replica.")
    image_urls: ImageUrlsConfig = Field(default_factory=ImageUrlsConfig, description="Fetching image URLs.")
    auth: AuthConfig = Field(default_factory=AuthConfig, description="API keys.")

    @model_validator(mode="after")
    def _check_unique_names(self) -> AppConfig:
        seen: dict[str, str] = {}
        slugs: dict[str, str] = {}
        for variant in self.variants:
            for name in variant.names():
                if name in seen:
                    raise ValueError(f"model name {name!r} is used by both {seen[name]!r} and {variant.id!r}")
                seen[name] = variant.id
            if variant.slug in slugs:
                raise ValueError(f"variants {slugs[variant.slug]!r} and {variant.id!r} map to the same deployment names")
            slugs[variant.slug] = variant.id
        return self


def _format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for i, part in enumerate(loc):
        if i and loc[i - 1] == "options" and part in _OPTIONS_MODELS:
            continue  # the union's tag (the backend), not a field
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def parse_app_config(args: dict[str, Any] | AppConfig) -> AppConfig:
    """Validate `args` into an AppConfig or raise ConfigError naming every bad field."""
    if isinstance(args, AppConfig):
        return args
    if not isinstance(args, dict):
        raise ConfigError(f"clip app args must be a mapping, got {type(args).__name__}")
    try:
        return AppConfig.model_validate(args)
    except ValidationError as exc:
        problems = "; ".join(f"{_format_location(e['loc'])}: {e['msg']}" for e in exc.errors())
        raise ConfigError(f"invalid clip app config: {problems}") from None
