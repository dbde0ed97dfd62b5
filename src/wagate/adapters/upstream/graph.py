"""The Graph API client (aiohttp): POST a marketing message, read Meta's answer or error."""

from __future__ import annotations

import aiohttp
import msgspec

from wagate.domain.delivery import UpstreamResult
from wagate.domain.errors import (
    INVALID_PARAMETER,
    NETWORK_ERROR,
    SOMETHING_WENT_WRONG,
    THROUGHPUT_RATE_LIMIT,
    kind_of,
)
from wagate.domain.meta_errors import meta_error


class _MessageRef(msgspec.Struct):
    id: str
    message_status: str = "accepted"


class _SendAnswer(msgspec.Struct):
    messages: list[_MessageRef]


class _Throughput(msgspec.Struct):
    level: str
    # Only the sandbox says its limit outright (its limit need not be a Meta tier).
    mps: float | None = None


class _NumberFields(msgspec.Struct):
    throughput: _Throughput | None = None


# Meta's throughput levels (API-FACTS section 4): 80 msg/s by default, 1,000 after
# the automatic upgrade. Numbers shared with the Business app (20/s) report no level
# we know of; for them, and on any failure, the configured --mps is the only cap.
TIERS = {"STANDARD": 80, "HIGH": 1000}


_answer = msgspec.json.Decoder(_SendAnswer)
_fields = msgspec.json.Decoder(_NumberFields)


def read_answer(status: int, body: bytes) -> UpstreamResult:
    """Meta's HTTP answer as a result; an error without an envelope still gets a code."""
    if status == 200:
        try:
            message = _answer.decode(body).messages[0]
            return UpstreamResult(wamid=message.id, message_status=message.message_status)
        except (msgspec.DecodeError, IndexError):
            return UpstreamResult(
                error_code=SOMETHING_WENT_WRONG,
                error_title=kind_of(SOMETHING_WENT_WRONG).title,
                error_details=f"Upstream answered 200 without a message id: {body[:200]!r}",
                http_status=status,
            )
    error = meta_error(body)
    if error is not None:
        # The catalogue's title: Meta's `message` here is "(#code) title", not a title.
        return UpstreamResult(
            error_code=error.code,
            error_title=kind_of(error.code, status).title,
            error_details=error.details or error.message or "",
            http_status=status,
        )
    if status == 429:
        code = THROUGHPUT_RATE_LIMIT
    else:
        code = SOMETHING_WENT_WRONG if status >= 500 else INVALID_PARAMETER
    return UpstreamResult(
        error_code=code,
        error_title=kind_of(code, status).title,
        error_details=f"Upstream answered HTTP {status}: {body[:200]!r}",
        http_status=status,
    )


class GraphClient:
    """POSTs to `{base}/{version}/{phone_number_id}/marketing_messages` with the number's token."""

    def __init__(self, *, timeout_s: float = 30.0, connections: int = 256) -> None:
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._connections = connections
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                timeout=self._timeout,
                connector=aiohttp.TCPConnector(limit=self._connections),
            )
        return self._session

    async def send(
        self, base_url: str, version: str, phone_number_id: str, token: str, payload: bytes
    ) -> UpstreamResult:
        """Send one message; network errors and timeouts come back as NETWORK_ERROR."""
        url = f"{base_url.rstrip('/')}/{version}/{phone_number_id}/marketing_messages"
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        try:
            async with self._client().post(url, data=payload, headers=headers) as response:
                return read_answer(response.status, await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            return UpstreamResult(
                error_code=NETWORK_ERROR,
                error_title="Network error",
                error_details=f"{type(exc).__name__}: {exc}",
            )

    async def throughput(
        self, base_url: str, version: str, phone_number_id: str, token: str
    ) -> int | None:
        """`GET /{phone_number_id}?fields=throughput` as msg/s; None when unknown or failed."""
        url = f"{base_url.rstrip('/')}/{version}/{phone_number_id}"
        headers = {"Authorization": f"Bearer {token}"}
        try:
            async with self._client().get(
                url, params={"fields": "throughput"}, headers=headers
            ) as response:
                if response.status != 200:
                    return None
                found = _fields.decode(await response.read()).throughput
        except (aiohttp.ClientError, TimeoutError, msgspec.DecodeError):
            return None
        if found is None:
            return None
        if found.mps is not None:
            return max(1, int(found.mps))
        return TIERS.get(found.level)

    async def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            await self._session.close()
