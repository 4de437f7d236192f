"""clip-serve: CLIP models on Ray Serve behind an OpenAI-compatible API."""

__version__ = "0.1.0"
