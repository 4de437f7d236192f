"""One module per API feature; each exposes an APIRouter named `router`, made by `api_router`."""

from fastapi import APIRouter

from ...protocol.errors import ErrorResponse
from ..json_body import StrictJSONRoute

ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (when auth is on)"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    413: {"model": ErrorResponse, "description": "Request or input too large"},
    503: {"model": ErrorResponse, "description": "Overloaded or model loading; see Retry-After"},
    504: {"model": ErrorResponse, "description": "The request ran past the server's deadline"},
}


def api_router() -> APIRouter:
    """Every route decodes its JSON body strictly (json_body.py)."""
    return APIRouter(route_class=StrictJSONRoute)
