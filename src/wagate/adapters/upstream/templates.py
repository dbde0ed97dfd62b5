"""A WABA's message templates at the upstream: list (every page), create, delete.

`GET {base}/{version}/{waba_id}/message_templates` is read page by page with its
`after` cursor against the configured base URL (a `paging.next` URL is never
followed: the upstream names the data, not where this process connects).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

import aiohttp
import msgspec

from wagate.ports import TemplatesUnavailable

PAGE: Final = 100
# Meta allows 250 templates a WABA (6,000 with translations): far below this.
MAX_PAGES: Final = 100


class _Cursors(msgspec.Struct):
    after: str | None = None


class _Paging(msgspec.Struct):
    cursors: _Cursors | None = None
    next: str | None = None


class _Page(msgspec.Struct):
    data: list[dict[str, Any]]
    paging: _Paging | None = None


_page = msgspec.json.Decoder(_Page)


@dataclass(frozen=True, slots=True)
class Answer:
    """The upstream's HTTP answer, passed on as it came."""

    status: int
    body: bytes


class GraphTemplates:
    """The `TemplateSource` port over aiohttp, one pooled session."""

    def __init__(self, *, timeout_s: float = 30.0) -> None:
        """Calls time out after `timeout_s` seconds."""
        self._timeout = aiohttp.ClientTimeout(total=timeout_s)
        self._session: aiohttp.ClientSession | None = None

    def _client(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(timeout=self._timeout)
        return self._session

    @staticmethod
    def _url(base_url: str, version: str, waba_id: str) -> str:
        return f"{base_url.rstrip('/')}/{version}/{waba_id}/message_templates"

    async def list_templates(
        self, base_url: str, version: str, waba_id: str, token: str
    ) -> list[dict[str, Any]]:
        """Every template of the WABA; TemplatesUnavailable when the upstream cannot say."""
        url = self._url(base_url, version, waba_id)
        headers = {"Authorization": f"Bearer {token}"}
        found: list[dict[str, Any]] = []
        after: str | None = None
        for _ in range(MAX_PAGES):
            params = {"limit": str(PAGE), **({"after": after} if after else {})}
            try:
                async with self._client().get(url, params=params, headers=headers) as response:
                    body = await response.read()
                    status = response.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                raise TemplatesUnavailable(f"{type(exc).__name__}: {exc}") from None
            if status != 200:
                raise TemplatesUnavailable(f"HTTP {status}: {body[:300]!r}")
            try:
                page = _page.decode(body)
            except msgspec.DecodeError as exc:
                raise TemplatesUnavailable(f"not a template list: {exc}") from None
            found.extend(page.data)
            cursors = page.paging.cursors if page.paging else None
            after = cursors.after if cursors else None
            if not page.data or not after or page.paging is None or page.paging.next is None:
                return found
        raise TemplatesUnavailable(f"more than {MAX_PAGES} pages of templates")

    async def create_template(
        self, base_url: str, version: str, waba_id: str, token: str, body: bytes
    ) -> Answer:
        """POST a creation; the upstream's answer (a network failure raises)."""
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
        url = self._url(base_url, version, waba_id)
        try:
            async with self._client().post(url, data=body, headers=headers) as response:
                return Answer(response.status, await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TemplatesUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def delete_template(
        self, base_url: str, version: str, waba_id: str, token: str, query: Mapping[str, str]
    ) -> Answer:
        """DELETE by `name` (and `hsm_id`); the upstream's answer (a network failure raises)."""
        headers = {"Authorization": f"Bearer {token}"}
        url = self._url(base_url, version, waba_id)
        try:
            async with self._client().delete(url, params=dict(query), headers=headers) as response:
                return Answer(response.status, await response.read())
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise TemplatesUnavailable(f"{type(exc).__name__}: {exc}") from None

    async def close(self) -> None:
        """Close the session."""
        if self._session is not None:
            await self._session.close()
            self._session = None
