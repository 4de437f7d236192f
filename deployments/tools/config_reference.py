"""Write docs/configuration.md from the config models (deployments/config.py): every field of
the application's `args` with its type, default and description, nested models as sections.

    python -m deployments config-reference            # (re)write docs/configuration.md
    python -m deployments config-reference --check    # exit 1 if it differs from the models (CI, tests)

The models are the one source: change a field's description or default there, then rerun.
"""

from __future__ import annotations

import argparse
import json
import types
import typing
from pathlib import Path

from . import REPO, command_parser, write_or_check


OUTPUT = "docs/configuration.md"
COMMAND = "python -m deployments config-reference"

INTRO = """\
The `args` of the Serve application (`serve_config.yaml`, `applications[].args`), validated
when the app is built: unknown keys are errors that name the field. A variant whose `id` is in
the catalogue (`python -m deployments catalogue`, [models.md](models.md)) gets the catalogue's
backend, aliases and other defaults; any field the config sets wins.

`deployments:` entries of serve_config.yaml tune each deployment by name (`Router`,
`ImageEncoder:openai--clip-vit-base-patch32`, `TextEncoder:...`): replicas, resources,
autoscaling, and `user_config` batching knobs. Re-applying the config with `serve deploy`
changes `user_config` (`max_batch_size`, `batch_wait_timeout_s`) and autoscaling bounds on
running replicas without restarting them (the tests check both). Keep an
`autoscaling_config` on every deployment you autoscale: in Ray 2.60, adding or removing a
deployment-level `autoscaling_config` (or a custom `policy`) changes the application's code
version and restarts all of its replicas; editing the values inside one does not.
For GPUs give encoders `ray_actor_options: {num_gpus: 1}` (or `device: cuda`, which
defaults to one GPU per replica). An encoder whose config names no resources gets the
catalogue's CPUs for its tower ([models.md](models.md)), else those of its checkpoint's size
class (when its config.json or open_clip_config.json is on the machine that builds the app), else one
CPU; the start-up log says which, and `/v1/models` reports what each tower's replica was
granted (`resources`). A backend's own options go under the variant's `options:` (for
example `backend: onnx` with `options: {onnx_dtype: q8}`); the same keys written directly
on the variant are still read for this release, with a deprecation warning. `torch_compile` needs a C++ compiler on CPU;
`TORCHINDUCTOR_CACHE_DIR` on a persistent volume keeps replica starts at the low end.
"""


def _models(annotation) -> list[type]:
    """The pydantic models an annotation refers to (list[X], X | None, ...)."""
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models(arg)]


def type_name(annotation) -> str:
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return type_name(args[0])
    if origin is typing.Literal:
        return " \\| ".join(json.dumps(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " \\| ".join(type_name(a) for a in args)
    if origin in (list, dict):
        return f"{origin.__name__}[{', '.join(type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    if isinstance(annotation, type):
        return annotation.__name__
    return str(annotation).replace("typing.", "")


_BOUNDS = {"ge": "≥", "gt": ">", "le": "≤", "lt": "<", "min_length": "min length "}


def bounds(field) -> str:
    """`≥1, ≤4096` from the field's constraints."""
    found = [f"{sign}{getattr(m, name)}" for m in field.metadata for name, sign in _BOUNDS.items()
             if getattr(m, name, None) is not None]
    return f" ({', '.join(found)})" if found else ""


def default_text(field) -> str:
    from pydantic import BaseModel
    from pydantic_core import PydanticUndefined

    if field.is_required():
        return "required"
    value = field.default_factory() if field.default_factory is not None else field.default
    if value is PydanticUndefined:
        return "required"
    if isinstance(value, BaseModel):
        return "(section)"
    return f"`{json.dumps(value)}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")


def render(root_model=None) -> str:
    """The reference for `root_model` (default: AppConfig) and every model below it."""
    from pydantic import BaseModel

    if root_model is None:
        from ..config import AppConfig as root_model
    sections: list[str] = []
    seen: dict[type, str] = {}
    queue: list[tuple[type, str]] = [(root_model, "args")]
    while queue:
        model, path = queue.pop(0)
        if model in seen:
            continue
        seen[model] = path
        anchor = model.__name__.lower()
        rows = ["| field | type | default | description |", "| --- | --- | --- | --- |"]
        for name, field in model.model_fields.items():
            nested = _models(field.annotation)
            kind = type_name(field.annotation)
            for sub in nested:
                kind = kind.replace(sub.__name__, f"[{sub.__name__}](#{sub.__name__.lower()})")
                many = typing.get_origin(field.annotation) is list
                queue.append((sub, f"{path}.{name}{'[]' if many else ''}"))
            rows.append(f"| `{name}` | {kind}{bounds(field)} | {default_text(field)} | {_cell(field.description or '')} |")
        doc = _cell(model.__doc__ or "") if model.__doc__ is not BaseModel.__doc__ else ""
        sections.append(f'<a id="{anchor}"></a>\n## {model.__name__}: `{path}`\n\n'
                        + (f"{doc}\n\n" if doc else "") + "\n".join(rows) + "\n")
    header = (f"# Configuration reference\n\nGenerated by `{COMMAND}` from deployments/config.py; do not edit "
              f"(the tests run `--check`).\n\n")
    return header + INTRO + "\n" + "\n".join(sections)


def build_parser() -> argparse.ArgumentParser:
    ap = command_parser("config-reference", __doc__)
    ap.add_argument("--check", action="store_true", help=f"compare with {OUTPUT} instead of writing; exit 1 if stale")
    ap.add_argument("--root", type=Path, default=REPO, help="checkout holding docs/")
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return write_or_check({OUTPUT: render()}, args.root, args.check, COMMAND)
