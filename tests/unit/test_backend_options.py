"""Backend options nested per backend (a union on `backend`), and the flat layout still read."""

from __future__ import annotations

import pytest

from deployments.config import ConfigError, parse_app_config


def variant(**fields):
    return parse_app_config({"variants": [{"id": "v", **fields}]}).variants[0]


def test_options_nest_under_the_backend_they_belong_to():
    onnx = variant(backend="onnx", options={"onnx_dtype": "quantized"})
    assert type(onnx.options).__name__ == "OnnxOptions" and onnx.backend_options() == {"onnx_dtype": "q8"}
    torch = variant(options={"torch_compile": True})
    assert torch.backend_options() == {"allow_pickle_weights": False, "trust_remote_code": False,
                                       "torch_compile": True}


def test_flat_options_still_load_with_a_deprecation_warning():
    with pytest.warns(FutureWarning, match="deprecated.*onnx_dtype|onnx_dtype.*deprecated"):
        flat = variant(backend="onnx", onnx_dtype="q8")
    assert flat.options == variant(backend="onnx", options={"onnx_dtype": "q8"}).options


@pytest.mark.parametrize("fields, field", [
    ({"backend": "onnx", "options": {"onnx_dtype": "fp8"}}, "variants[0].options.onnx_dtype"),
    ({"backend": "onnx", "options": {"onnx_dtyp": "q8"}}, "variants[0].options.onnx_dtyp"),
    ({"options": {"onnx_dtype": "q8"}}, "variants[0].options.onnx_dtype"),  # not a torch option
    ({"options": {"backend": "onnx"}}, "variants[0]"),
])
def test_bad_options_name_the_field(fields, field):
    with pytest.raises(ConfigError) as exc:
        variant(**fields)
    assert f"{field}:" in str(exc.value)
