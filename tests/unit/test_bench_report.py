"""The served benchmark's report: a scenario in which no request succeeded is reported as
such (its errors, no per-item CPU figures) instead of failing the whole run, and the CPU
benches measure the dtype a served variant would get on this CPU."""

from __future__ import annotations

import pytest

from deployments.backends.devices import cpu_has_bf16
from deployments.bench.common import cpu_dtype
from deployments.bench.load import LoadResult
from deployments.bench.model import Rate
from deployments.bench.served import Forwards, ModelOnly, cpu_breakdown


def rate(value: float, per_cpu_s: float) -> Rate:
    r = Rate(value)
    r.per_cpu_s = per_cpu_s
    return r


def test_a_scenario_with_no_success_is_reported_not_divided_by():
    ref = {"image": ModelOnly("image", 32, 2, 1, rate(10.0, 5.0)), "text": ModelOnly("text", 64, 2, 1, rate(80.0, 40.0))}
    served = LoadResult("images, 1/request, c=16", 16, 1, 10.0, latencies=[0.5] * 40)
    failed = LoadResult("images, 16/request, c=4", 4, 16, 10.0, errors={504: 3})
    used = {"Router": 2.0, "ImageEncoder": 20.0, "machine": 26.0, "steal": 0.0}
    table = cpu_breakdown([(served.name, served, used, Forwards(20, 52)), (failed.name, failed, used, Forwards(0, 0))],
                          ref)
    header, ok_row, failed_row = table[0], table[1], table[2]
    assert header[:3] == ["scenario (CPU ms per item)", "ImageEncoder", "Router"]
    items = served.items_per_s * (served.seconds + 3.0)
    assert ok_row[1] == f"{1000 * 20.0 / items:.1f}" and ok_row[-1] == "2.6"
    assert failed_row[0] == failed.name and set(failed_row[1:-1]) == {"n/a"}
    assert table[-1][-1] == "32 / 64"


def test_auto_dtype_is_bf16_only_where_the_cpu_computes_it():
    assert cpu_dtype("auto") == ("bfloat16" if cpu_has_bf16() else "float32")
    assert cpu_dtype("bfloat16") == "bfloat16" and cpu_dtype("float32") == "float32"


def test_the_bench_defaults_to_the_auto_dtype():
    from deployments.bench.served import build_parser

    assert build_parser().parse_args([]).dtype == cpu_dtype("auto")
    with pytest.raises(SystemExit):
        build_parser().parse_args(["--dtype", "int4"])
