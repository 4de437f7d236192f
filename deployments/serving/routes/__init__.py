"""One module per API feature; each exposes an APIRouter named `router`."""

from ...protocol.errors import ErrorResponse

ERROR_RESPONSES = {
    400: {"model": ErrorResponse, "description": "Invalid request"},
    401: {"model": ErrorResponse, "description": "Missing or wrong API key (when auth is on)"},
    404: {"model": ErrorResponse, "description": "Unknown model"},
    413: {"model": ErrorResponse, "description": "Request or input too large"},
    503: {"model": ErrorResponse, "description": "Overloaded or model loading; see Retry-After"},
    504: {"model": ErrorResponse, "description": "The request ran past the server's deadline"},
}
