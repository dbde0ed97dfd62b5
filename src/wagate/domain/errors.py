"""The one error catalogue: every Graph error code with its title, HTTP status and transience.

Every error response and every retry decision reads this table, so a code means
the same thing wherever it appears (API-FACTS section 2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Final


@dataclass(frozen=True, slots=True)
class ErrorKind:
    """What a Graph error code means."""

    code: int
    title: str
    http_status: int
    transient: bool
    type: str = "OAuthException"


# Meta's codes, one name each: code elsewhere says which error it means, not its number.
AUTH_EXCEPTION: Final = 0
TEMPORARILY_UNAVAILABLE: Final = 2
APPLICATION_REQUEST_LIMIT: Final = 4
PERMISSION_DENIED: Final = 10
INVALID_PARAMETER: Final = 100
INVALID_ACCESS_TOKEN: Final = 190
THROUGHPUT_RATE_LIMIT: Final = 130429
SOMETHING_WENT_WRONG: Final = 131000
MISSING_PARAMETER: Final = 131008
INVALID_PARAMETER_VALUE: Final = 131009
SERVICE_UNAVAILABLE: Final = 131016
UNDELIVERABLE: Final = 131026
HEALTHY_ECOSYSTEM: Final = 131049
MARKETING_OPT_OUT: Final = 131050
METHOD_NOT_ALLOWED: Final = 131055
PAIR_RATE_LIMIT: Final = 131056
PARAMETER_COUNT_MISMATCH: Final = 132000
TEMPLATE_NOT_FOUND: Final = 132001
TRANSLATION_TOO_LONG: Final = 132005
PARAMETER_FORMAT_MISMATCH: Final = 132012
TEMPLATE_PAUSED: Final = 132015
TEMPLATE_DISABLED: Final = 132016
SERVER_UNAVAILABLE: Final = 133004
NUMBER_NOT_REGISTERED: Final = 133010
MARKETING_ONLY: Final = 134100
TEMPLATE_SYNCING: Final = 134101
TEMPLATE_UNAVAILABLE: Final = 134102

_CATALOGUE: tuple[ErrorKind, ...] = (
    ErrorKind(AUTH_EXCEPTION, "AuthException", 401, False),
    ErrorKind(TEMPORARILY_UNAVAILABLE, "Service temporarily unavailable", 503, True),
    # Too many calls for the app; wagate answers it for a project over its rate limit.
    ErrorKind(APPLICATION_REQUEST_LIMIT, "Application request limit reached", 429, True),
    ErrorKind(PERMISSION_DENIED, "Permission denied", 403, False),
    ErrorKind(INVALID_PARAMETER, "Invalid parameter", 400, False),
    ErrorKind(INVALID_ACCESS_TOKEN, "Invalid OAuth access token", 401, False),
    ErrorKind(THROUGHPUT_RATE_LIMIT, "Rate limit hit", 400, True),
    ErrorKind(SOMETHING_WENT_WRONG, "Something went wrong", 500, True),
    ErrorKind(MISSING_PARAMETER, "Required parameter is missing", 400, False),
    ErrorKind(INVALID_PARAMETER_VALUE, "Parameter value is not valid", 400, False),
    ErrorKind(SERVICE_UNAVAILABLE, "Service unavailable", 500, True),
    ErrorKind(UNDELIVERABLE, "Message undeliverable", 400, False),
    ErrorKind(
        HEALTHY_ECOSYSTEM,
        "This message was not delivered to maintain healthy ecosystem engagement.",
        400,
        False,
    ),
    ErrorKind(
        MARKETING_OPT_OUT,
        "Unable to deliver the message. This recipient has chosen to stop receiving"
        " marketing messages on WhatsApp from your business",
        400,
        False,
    ),
    ErrorKind(METHOD_NOT_ALLOWED, "Method not allowed", 400, False),
    ErrorKind(
        PAIR_RATE_LIMIT, "(Business Account, Consumer Account) pair rate limit hit", 400, True
    ),
    ErrorKind(
        PARAMETER_COUNT_MISMATCH,
        "Number of parameters does not match the expected number of params",
        400,
        False,
    ),
    ErrorKind(TEMPLATE_NOT_FOUND, "Template name does not exist in the translation", 404, False),
    ErrorKind(TRANSLATION_TOO_LONG, "Translated text too long", 400, False),
    ErrorKind(
        PARAMETER_FORMAT_MISMATCH,
        "Parameter format does not match format in the created template",
        400,
        False,
    ),
    ErrorKind(TEMPLATE_PAUSED, "Template is Paused", 400, False),
    ErrorKind(TEMPLATE_DISABLED, "Template is Disabled", 400, False),
    ErrorKind(SERVER_UNAVAILABLE, "Server temporarily unavailable", 503, True),
    ErrorKind(NUMBER_NOT_REGISTERED, "Phone number not registered", 400, False),
    ErrorKind(MARKETING_ONLY, "Only marketing messages are supported", 400, False),
    ErrorKind(TEMPLATE_SYNCING, "Template is still syncing", 400, False),
    ErrorKind(TEMPLATE_UNAVAILABLE, "Template unavailable for use", 500, False),
)

CATALOGUE: dict[int, ErrorKind] = {kind.code: kind for kind in _CATALOGUE}

# Codes of the gateway's own that Meta does not define; kept apart from Meta's range.
MESSAGE_EXPIRED: Final = 1_000_001
# A worker's lease on the message ran out too often before its outcome was recorded:
# sending it again could repeat a send Meta already accepted, so the gateway stops.
DELIVERY_ABANDONED: Final = 1_000_002
# The project's frequency cap: this recipient got its N marketing messages in 24 h.
FREQUENCY_CAP_REACHED: Final = 1_000_003
# A network error or timeout talking to Meta: transient, and no Graph code exists for it.
NETWORK_ERROR: Final = -1
CATALOGUE[NETWORK_ERROR] = ErrorKind(NETWORK_ERROR, "Network error", 503, True, "WagateException")

CATALOGUE[MESSAGE_EXPIRED] = ErrorKind(
    MESSAGE_EXPIRED, "Message expired before it could be sent", 400, False, "WagateException"
)
CATALOGUE[FREQUENCY_CAP_REACHED] = ErrorKind(
    FREQUENCY_CAP_REACHED,
    "Frequency cap reached for this recipient",
    400,
    False,
    "WagateException",
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
            APPLICATION_REQUEST_LIMIT,
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
        INVALID_PARAMETER,
        f"`{field}` must be one of: {', '.join(allowed)}; got {got!r}",
        message=f'(#100) Param {field} must be one of {{{values}}} - got "{got}".',
    )


def invalid_parameter(details: str) -> GraphError:
    """Code 100: a parameter Meta does not accept."""
    return GraphError(INVALID_PARAMETER, details)


def missing_parameter(details: str) -> GraphError:
    """Code 131008: a required parameter is missing."""
    return GraphError(MISSING_PARAMETER, details)


def invalid_value(details: str) -> GraphError:
    """Code 131009: a parameter's value is not valid."""
    return GraphError(INVALID_PARAMETER_VALUE, details)
