"""Meta's Graph error envelope and the per-request trace id (`fbtrace_id`)."""

from __future__ import annotations

import base64
import os

import msgspec

from wagate.domain.errors import GraphError
from wagate.domain.requests import GraphErrorBody, GraphErrorData, GraphErrorResponse

_encoder = msgspec.json.Encoder()


def new_trace_id() -> str:
    """A per-request id, shaped like Meta's fbtrace_id; it is also written to the logs."""
    return base64.urlsafe_b64encode(os.urandom(12)).decode()


def error_body(error: GraphError, trace_id: str) -> bytes:
    """The JSON envelope for an error."""
    return _encoder.encode(
        GraphErrorResponse(
            error=GraphErrorBody(
                message=error.message,
                type=error.kind.type,
                code=error.code,
                error_data=GraphErrorData(details=error.details),
                error_subcode=error.subcode,
                fbtrace_id=trace_id,
                is_transient=True if error.kind.transient else None,
            )
        )
    )
