"""The embedded sandbox as an upstream: sends to it are answered in process, not over HTTP.

`wagate serve` runs the sandbox in the same process and on the same event loop as
the worker that sends to it. Over loopback HTTP each send cost that loop an
aiohttp request, a server-side parse and a response (about a third of what
delivery costs the process at 80 msg/s), and the sandbox stamped a send when the
busy loop got to its request rather than when it left: a send that left on time
could be counted in the next second beside the on-time ones of that second, so
the sandbox saw more than the limit in a second that the worker had kept to it.
Called in process, the sandbox runs the very checks, counters, limits and
webhooks of its HTTP route (`SandboxApp.answer_send`) at the moment the send
leaves, and its answer is read by the same `read_answer` as Meta's.

The sandbox's status webhooks come back the same way: `Services.start` hands its
`WebhookSender` the ingest itself (signature checked as on `POST /webhooks/meta`).

Only sends to the embedded sandbox's own address take this path (a
`WAGATE_SANDBOX_URL` naming another sandbox is called over HTTP, as is Meta),
and only while the gateway serves the sandbox; throughput lookups (one per number
every ten minutes) stay on HTTP.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import msgspec

from wagate.adapters.http.graph import error_body
from wagate.adapters.sandbox.app import SandboxApp
from wagate.adapters.sandbox.templates import parse_create
from wagate.adapters.upstream.graph import read_answer
from wagate.adapters.upstream.templates import Answer
from wagate.domain.delivery import UpstreamResult
from wagate.domain.errors import MISSING_PARAMETER, GraphError
from wagate.ports import TemplateSource, TemplatesUnavailable, Upstream, UpstreamAnswer


class EmbeddedSandboxUpstream:
    """`inner` for every upstream but the embedded `sandbox` at `base_url`, called directly.

    `served` says whether the sandbox is served now (the gateway serves it only
    while it is on or a sandbox number exists), so a send finds what HTTP would
    have found: the sandbox, or no route at all.
    """

    def __init__(
        self,
        inner: Upstream,
        base_url: str,
        sandbox: SandboxApp,
        served: Callable[[], Awaitable[bool]],
    ) -> None:
        """Send to `sandbox` in process when a send's base URL is `base_url` and `served()`."""
        self.inner = inner
        self.base_url = base_url.rstrip("/")
        self.sandbox = sandbox
        self._served = served

    async def send(
        self, base_url: str, version: str, phone_number_id: str, token: str, payload: bytes
    ) -> UpstreamResult:
        """Send one message: in process to the embedded sandbox, else through `inner`."""
        if base_url.rstrip("/") == self.base_url:
            # The send arrives now, as over loopback it would within microseconds; the
            # sandbox counts it against its limits at this time, whatever comes after.
            arrived = self.sandbox.state.clock.now()
            if await self._served():
                status, body, _ = await self.sandbox.answer_send(
                    phone_number_id, token, payload, arrived=arrived
                )
                return read_answer(status, body)
        return await self.inner.send(base_url, version, phone_number_id, token, payload)

    async def throughput(
        self, base_url: str, version: str, phone_number_id: str, token: str
    ) -> int | None:
        """The number's tier, always through `inner` (rare: one lookup per number per TTL)."""
        return await self.inner.throughput(base_url, version, phone_number_id, token)

    async def close(self) -> None:
        """Close `inner`'s connections."""
        await self.inner.close()


class EmbeddedSandboxTemplates:
    """`inner` for every upstream but the embedded `sandbox`, whose templates are read and
    changed in process (a listing over HTTP to this very process would need its public URL
    to be right, and would queue behind the sends it is checked for)."""

    def __init__(self, inner: TemplateSource, base_url: str, sandbox: SandboxApp) -> None:
        """Answer in process when a call's base URL is `base_url`: whether the sandbox is
        served does not matter (unlike a send's): a number of it exists, it is what is being
        checked, even in the seconds before the gateway's cached "any sandbox number?" says
        so."""
        self.inner = inner
        self.base_url = base_url.rstrip("/")
        self.sandbox = sandbox

    def _here(self, base_url: str) -> bool:
        return base_url.rstrip("/") == self.base_url

    async def list_templates(
        self, base_url: str, version: str, waba_id: str, token: str
    ) -> list[dict[str, Any]]:
        """Every template of the WABA."""
        if not self._here(base_url):
            return await self.inner.list_templates(base_url, version, waba_id, token)
        state = self.sandbox.state
        try:
            return [t.to_json() for t in state.templates.list(waba_id, state.clock.now())]
        except GraphError as error:
            raise TemplatesUnavailable(error.message) from None

    async def create_template(
        self, base_url: str, version: str, waba_id: str, token: str, body: bytes
    ) -> UpstreamAnswer:
        """Create a template in the sandbox (PENDING, approved after its delay)."""
        if not self._here(base_url):
            return await self.inner.create_template(base_url, version, waba_id, token, body)
        state = self.sandbox.state
        try:
            created = state.templates.create(waba_id, parse_create(body), state.clock.now())
        except GraphError as error:
            return _refused(error)
        answer = {"id": created.id, "status": created.status, "category": created.category}
        return Answer(200, msgspec.json.encode(answer))

    async def delete_template(
        self, base_url: str, version: str, waba_id: str, token: str, query: Mapping[str, str]
    ) -> UpstreamAnswer:
        """Delete a template of the sandbox by name (and id)."""
        if not self._here(base_url):
            return await self.inner.delete_template(base_url, version, waba_id, token, query)
        name = query.get("name")
        if not name:
            return _refused(GraphError(MISSING_PARAMETER, "Parameter name is required"))
        try:
            self.sandbox.state.templates.delete(waba_id, name, query.get("hsm_id"))
        except GraphError as error:
            return _refused(error)
        return Answer(200, b'{"success":true}')

    async def close(self) -> None:
        """Close `inner`'s connections."""
        await self.inner.close()


def _refused(error: GraphError) -> Answer:
    return Answer(error.http_status, error_body(error, "sandbox"))
