"""Schemathesis against the live service's own OpenAPI schema (/openapi.json): requests
generated from the schema, valid and invalid (negative mode), on every operation; no
answer is a 5xx, every error is in the envelope, and answers conform to the schema.
Examples are bounded so the whole run stays within about a minute on a small machine.

(Schemathesis' pytest plugin does not load under pytest 9, so operations are driven from
its Python API: one hypothesis run per operation and generation mode.)"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance,
          response_headers_conformance]
EXAMPLES = {GenerationMode.POSITIVE: 25, GenerationMode.NEGATIVE: 15}


@pytest.fixture(scope="module")
def operations(server, client):
    assert client.get("/ready").status_code == 200
    schema = schemathesis.openapi.from_url(f"{server}/openapi.json")
    ops = [result.ok() for result in schema.get_all_operations()]
    assert len(ops) >= 10, [op.label for op in ops]
    return ops


@pytest.mark.parametrize("mode", list(EXAMPLES), ids=lambda m: m.value)
def test_no_server_errors_and_answers_match_the_schema(operations, mode):
    seen: dict[str, set[int]] = {}
    calls = []
    for operation in operations:

        @given(case=operation.as_strategy(generation_mode=mode))
        @settings(max_examples=EXAMPLES[mode], deadline=None, suppress_health_check=list(HealthCheck), database=None)
        def run(case):
            response = case.call(timeout=60)
            calls.append(response.status_code)
            seen.setdefault(operation.label, set()).add(response.status_code)
            case.validate_response(response, checks=CHECKS)
            if response.status_code >= 400:
                error = response.json()["error"]
                assert set(error) == {"message", "type", "param", "code"}, response.text

        try:
            run()
        except Unsatisfiable:  # nothing to get wrong (no parameters, no body): negative mode has no cases
            assert mode is GenerationMode.NEGATIVE and not operation.label.startswith("POST"), operation.label
    posts = {op.label for op in operations if op.label.startswith("POST")}
    assert posts <= set(seen), posts - set(seen)  # every endpoint that takes a body was exercised
    assert all(code < 500 for codes in seen.values() for code in codes), seen
    assert len(calls) >= 5 * len(posts), len(calls)
