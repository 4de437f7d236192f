"""The import path of Serve's HTTP callback (RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH) in
each Ray node's environment; manifests already deployed name it, so it stays. Admission
itself lives in serving/admission.py."""

from .admission import guard_only, middlewares

__all__ = ["guard_only", "middlewares"]
