"""Candidate labels and prompt templates -> the unique prompt texts to embed.

Every label is written into every template; a label's class embedding is then the
(renormalised) mean of its prompts' embeddings (prompt ensembling, as in the CLIP paper).
Each `{}` in a template is replaced by the label; nothing else in it is interpreted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .errors import APIError

PLACEHOLDER = "{}"
LABEL_AS_IS = PLACEHOLDER  # no template: the label text is the prompt
HF_DEFAULT_TEMPLATE = "This is a photo of {}."  # transformers' zero-shot-image-classification default


@dataclass(frozen=True)
class PromptLimits:
    max_labels: int
    max_templates: int
    max_prompts: int
    max_prompt_chars: int  # limits.max_text_chars
    max_total_chars: int  # limits.max_request_text_chars

    @classmethod
    def from_config(cls, limits: Any) -> PromptLimits:
        """From the app's LimitsConfig (config.py)."""
        return cls(limits.max_labels, limits.max_templates, limits.max_prompts, limits.max_text_chars,
                   limits.max_request_text_chars)


@dataclass(frozen=True)
class PromptSet:
    labels: list[str]
    templates: list[str]
    prompts: list[str]  # unique prompt texts, first-seen order
    index: list[list[int]]  # index[label][template] -> position in `prompts`
    label_params: list[str]  # where each label came from, for error messages

    def prompt_params(self) -> dict[str, str]:
        """The request field to blame for each prompt (its label's)."""
        out: dict[str, str] = {}
        for label_index, row in enumerate(self.index):
            for position in row:
                out.setdefault(self.prompts[position], self.label_params[label_index])
        return out


def _check_unique_nonempty(values: list[str], param: str, what: str) -> None:
    seen: dict[str, int] = {}
    for i, value in enumerate(values):
        if not value.strip():
            raise APIError.invalid(f"{what} must not be empty", param=f"{param}[{i}]")
        if value in seen:
            raise APIError.invalid(f"duplicate {what} {value!r} (also {param}[{seen[value]}])", param=f"{param}[{i}]")
        seen[value] = i


def _check_template(template: str, param: str) -> None:
    if not template.strip():
        raise APIError.invalid("a template must not be empty", param=param)
    if PLACEHOLDER not in template:
        raise APIError.invalid(f"template {template!r} has no {PLACEHOLDER} placeholder for the label", param=param)


def _check_prompt_chars(
    labels: list[str], templates: list[str], template_params: list[str], limits: PromptLimits, labels_param: str
) -> None:
    """Refuse prompt sets whose text is too long before writing any of it: a template with
    many placeholders times long labels stays under the prompt count yet would build
    strings without bound. Computed from the lengths alone."""
    longest_label = max(len(label) for label in labels)
    label_chars = sum(len(label) for label in labels)
    total = 0
    for template, param in zip(templates, template_params):
        slots = template.count(PLACEHOLDER)
        fixed = len(template) - len(PLACEHOLDER) * slots
        longest = fixed + slots * longest_label
        if longest > limits.max_prompt_chars:
            raise APIError.too_large(
                f"the longest label in this template makes a prompt of {longest} characters, over the limit of "
                f"{limits.max_prompt_chars} (limits.max_text_chars)", param=param,
            )
        total += fixed * len(labels) + slots * label_chars
    if total > limits.max_total_chars:
        raise APIError.too_large(
            f"the label prompts add up to {total} characters, over the limit of {limits.max_total_chars} per "
            "request (limits.max_request_text_chars)", param=labels_param,
        )


def build_prompts(
    labels: list[str],
    limits: PromptLimits,
    *,
    hypothesis_template: str | None = None,
    templates: list[str] | None = None,
    labels_param: str = "labels",
    template_param: str = "hypothesis_template",
    templates_param: str = "templates",
) -> PromptSet:
    """Validate labels and templates (every problem is a 400 naming the field)."""
    if len(labels) < 2:
        raise APIError.invalid("send at least 2 labels to choose between", param=labels_param)
    if len(labels) > limits.max_labels:
        raise APIError.invalid(
            f"{len(labels)} labels exceed the limit of {limits.max_labels} per request",
            param=labels_param, code="limit_exceeded",
        )
    _check_unique_nonempty(labels, labels_param, "label")
    if hypothesis_template is not None and templates is not None:
        raise APIError.invalid(f"send `{template_param}` or `{templates_param}`, not both", param=templates_param)
    if templates is not None:
        if not templates:
            raise APIError.invalid("`templates` must not be empty", param=templates_param)
        if len(templates) > limits.max_templates:
            raise APIError.invalid(
                f"{len(templates)} templates exceed the limit of {limits.max_templates} per request",
                param=templates_param, code="limit_exceeded",
            )
        for i, template in enumerate(templates):
            _check_template(template, f"{templates_param}[{i}]")
        _check_unique_nonempty(templates, templates_param, "template")
        chosen = list(templates)
    elif hypothesis_template is not None:
        _check_template(hypothesis_template, template_param)
        chosen = [hypothesis_template]
    else:
        chosen = [LABEL_AS_IS]
    if len(labels) * len(chosen) > limits.max_prompts:
        raise APIError.invalid(
            f"{len(labels)} labels x {len(chosen)} templates = {len(labels) * len(chosen)} prompts exceed "
            f"the limit of {limits.max_prompts} per request",
            param=templates_param if templates is not None else labels_param, code="limit_exceeded",
        )

    if templates is not None:
        template_params = [f"{templates_param}[{i}]" for i in range(len(chosen))]
    else:
        template_params = [template_param if hypothesis_template is not None else labels_param]
    _check_prompt_chars(labels, chosen, template_params, limits, labels_param)

    positions: dict[str, int] = {}
    index = [
        [positions.setdefault(template.replace(PLACEHOLDER, label), len(positions)) for template in chosen]
        for label in labels
    ]
    return PromptSet(
        labels=list(labels),
        templates=chosen,
        prompts=list(positions),
        index=index,
        label_params=[f"{labels_param}[{i}]" for i in range(len(labels))],
    )
