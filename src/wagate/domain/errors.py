"""The one error catalogue: every Graph error code with its title, HTTP status and transience.

Every error response and every retry decision reads this table, so a code means
the same thing wherever it appears (API-FACTS section 2).
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """What a Graph error code means."""

    code: int
    title: str
    http_status: int
    transient: bool
    type: str = "OAuthException"


_CATALOGUE: tuple[ErrorKind, ...] = (
    ErrorKind(0, "AuthException", 401, False),
    ErrorKind(2, "Service temporarily unavailable", 503, True),
    # Too many calls for the app; wagate answers it for a project over its rate limit.
    ErrorKind(4, "Application request limit reached", 429, True),
    ErrorKind(10, "Permission denied", 403, False),
    ErrorKind(100, "Invalid parameter", 400, False),
    ErrorKind(190, "Invalid OAuth access token", 401, False),
    ErrorKind(130429, "Rate limit hit", 400, True),
    ErrorKind(131000, "Something went wrong", 500, True),
    ErrorKind(131008, "Required parameter is missing", 400, False),
    ErrorKind(131009, "Parameter value is not valid", 400, False),
    ErrorKind(131016, "Service unavailable", 500, True),
    ErrorKind(131026, "Message undeliverable", 400, False),
    ErrorKind(
        131049,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        400,
        False,
    ),
    ErrorKind(
        131050,
        "Unable to deliver the message. This recipient has chosen to stop receiving"
        " marketing messages on WhatsApp from your business",
        400,
        False,
    ),
    ErrorKind(131055, "Method not allowed", 400, False),
    ErrorKind(131056, "(Business Account, Consumer Account) pair rate limit hit", 400, True),
    ErrorKind(
        132000, "Number of parameters does not match the expected number of params", 400, False
    ),
    ErrorKind(132001, "Template name does not exist in the translation", 404, False),
    ErrorKind(132005, "Translated text too long", 400, False),
    ErrorKind(132012, "Parameter format does not match format in the created template", 400, False),
    ErrorKind(132015, "Template is Paused", 400, False),
    ErrorKind(132016, "Template is Disabled", 400, False),
    ErrorKind(133004, "Server temporarily unavailable", 503, True),
    ErrorKind(133010, "Phone number not registered", 400, False),
    ErrorKind(134100, "Only marketing messages are supported", 400, False),
    ErrorKind(134101, "Template is still syncing", 400, False),
    ErrorKind(134102, "Template unavailable for use", 500, False),
)

CATALOGUE: dict[int, ErrorKind] = {kind.code: kind for kind in _CATALOGUE}

# Codes of the gateway's own that Meta does not define; kept apart from Meta's range.
MESSAGE_EXPIRED = 1_000_001
# A worker's lease on the message ran out too often before its outcome was recorded:
# sending it again could repeat a send Meta already accepted, so the gateway stops.
DELIVERY_ABANDONED = 1_000_002
# A network error or timeout talking to Meta: transient, and no Graph code exists for it.
NETWORK_ERROR = -1
CATALOGUE[NETWORK_ERROR] = ErrorKind(NETWORK_ERROR, "Network error", 503, True, "WagateException")

CATALOGUE[MESSAGE_EXPIRED] = ErrorKind(
    MESSAGE_EXPIRED, "Message expired before it could be sent", 400, False, "WagateException"
)
CATALOGUE[DELIVERY_ABANDONED] = ErrorKind(
    DELIVERY_ABANDONED,
    "Delivery abandoned: the outcome could not be recorded",
    500,
    False,
    "WagateException",
)


def kind_of(code: int, http_status: int | None = None) -> ErrorKind:
    """The catalogue entry for a code; an unknown code is transient only on a 5xx."""
    found = CATALOGUE.get(code)
    if found is not None:
        return found
    status = http_status if http_status is not None else 400
    return ErrorKind(code, "Unknown error", status, status >= 500)


def is_transient(code: int, http_status: int | None = None) -> bool:
    """Whether a send that failed with this code may be retried."""
    return kind_of(code, http_status).transient


class GraphError(Exception):
    """An error answered in Meta's Graph envelope: a catalogue code plus a human detail."""

    def __init__(
        self,
        code: int,
        details: str,
        *,
        http_status: int | None = None,
        subcode: int | None = None,
        message: str | None = None,
    ) -> None:
        self.kind = kind_of(code)
        self.code = code
        self.details = details
        # HTTP gives a more precise status for a few transport problems (413, 415);
        # clients key on `code`, which stays the catalogue's.
        self.http_status = http_status if http_status is not None else self.kind.http_status
        self.subcode = subcode
        self.message = message if message is not None else f"(#{code}) {self.kind.title}"
        super().__init__(f"{self.message}: {details}")


class RateLimited(GraphError):
    """Code 4: the project made more requests this minute than its rate limit allows."""

    def __init__(self, limit: int, retry_after: int) -> None:
        super().__init__(
            4,
            f"The project's rate limit is {limit} requests per minute; retry in {retry_after} s",
        )
        self.limit = limit
        self.retry_after = retry_after


def not_one_of(field: str, allowed: tuple[str, ...], got: str) -> GraphError:
    """Code 100 in Graph's own words for a value outside a field's enum.

    Graph prints the allowed values upper-cased and sorted:
    `(#100) Param messaging_product must be one of {WHATSAPP} - got "sms".`
    """
    values = ", ".join(sorted({value.upper() for value in allowed}))
    return GraphError(
        100,
        f"`{field}` must be one of: {', '.join(allowed)}; got {got!r}",
        message=f'(#100) Param {field} must be one of {{{values}}} - got "{got}".',
    )


def invalid_parameter(details: str) -> GraphError:
    """Code 100: a parameter Meta does not accept."""
    return GraphError(100, details)


def missing_parameter(details: str) -> GraphError:
    """Code 131008: a required parameter is missing."""
    return GraphError(131008, details)


def invalid_value(details: str) -> GraphError:
    """Code 131009: a parameter's value is not valid."""
    return GraphError(131009, details)
