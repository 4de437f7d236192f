"""Request/response shapes and input parsing. Pure pydantic: no torch, ray or fastapi."""
