"""Meta's Graph conventions: the version in a path, the error envelope, the trace id."""

from __future__ import annotations

import base64
import itertools
import os
import re

import msgspec

from wagate.domain.errors import INVALID_PARAMETER, GraphError
from wagate.domain.requests import GraphErrorBody, GraphErrorData, GraphErrorResponse

_encoder = msgspec.json.Encoder()

# A Graph API version as a path segment: `v24.0`.
GRAPH_VERSION = re.compile(r"^v\d{1,3}\.\d{1,2}$")


def is_graph_version(segment: str, *, minor_optional: bool = False) -> bool:
    """Whether a path segment names a Graph API version: `v24.0`, or `v24` if `minor_optional`.

    The gateway wants the minor, as Kapso documents; the sandbox, like Graph
    itself, also takes `v24`.
    """
    if minor_optional and "." not in segment:
        segment += ".0"
    return GRAPH_VERSION.match(segment) is not None


def require_graph_version(version: str) -> None:
    """Refuse (code 100) a path whose version segment is not a Graph version."""
    if not is_graph_version(version):
        raise GraphError(
            INVALID_PARAMETER, f"Unknown Graph API version {version!r}; use e.g. v24.0"
        )


# A random per-process prefix and a counter: unique across processes, and cheaper
# than a random id per request (every response carries one).
_PREFIX = base64.urlsafe_b64encode(os.urandom(6)).decode()
_counter = itertools.count(1)


def _new_prefix() -> None:
    global _PREFIX, _counter
    _PREFIX = base64.urlsafe_b64encode(os.urandom(6)).decode()
    _counter = itertools.count(1)


# Forked workers must not share the parent's prefix and counter.
os.register_at_fork(after_in_child=_new_prefix)


def new_trace_id() -> str:
    """A per-request id, shaped like Meta's fbtrace_id; it is also written to the logs."""
    return f"{_PREFIX}{next(_counter):08x}"


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
