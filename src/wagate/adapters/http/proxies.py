"""Links behind a reverse proxy: `X-Forwarded-Proto` and `X-Forwarded-Host` from trusted peers.

A TLS proxy talks plain HTTP to the gateway, so the URL the gateway sees is
`http://<backend>`; `paging.next` must be the URL the client used. The
forwarded headers say what it was, and are believed only from the peers listed
in `WAGATE_TRUSTED_PROXIES` (addresses or networks; `*` trusts every peer).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
# A host and optional port as a proxy forwards it: no scheme, path, user or spaces.
_HOST = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+)(:\d{1,5})?$")


@dataclass(frozen=True, slots=True)
class TrustedProxies:
    """The peers whose forwarded headers are believed."""

    networks: tuple[Network, ...] = ()
    everyone: bool = False

    @classmethod
    def parse(cls, text: str) -> TrustedProxies:
        """`"127.0.0.1,::1,10.0.0.0/8"`, `"*"`, or `""` (nobody); SystemExit on a bad entry."""
        items = [item.strip() for item in text.split(",") if item.strip()]
        if items == ["*"]:
            return cls(everyone=True)
        networks: list[Network] = []
        for item in items:
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise SystemExit(
                    f"WAGATE_TRUSTED_PROXIES: {item!r} is not an IP address or network"
                ) from None
        return cls(tuple(networks))

    def trusts(self, peer: str | None) -> bool:
        """Whether the peer at address `peer` is a trusted proxy."""
        if self.everyone:
            return True
        if not peer:
            return False
        try:
            address = ipaddress.ip_address(peer)
        except ValueError:
            return False
        return any(address in network for network in self.networks)


def _first(value: str | None) -> str:
    """The first (client-side) entry of a forwarded header that proxies may have chained."""
    return (value or "").split(",", 1)[0].strip()


def public_url(
    url: str, peer: str | None, headers: Mapping[str, str], trusted: TrustedProxies
) -> str:
    """`url` as the client addressed it: scheme and host from a trusted proxy's headers."""
    if not trusted.trusts(peer):
        return url
    parts = urlsplit(url)
    scheme = _first(headers.get("x-forwarded-proto")).lower()
    host = _first(headers.get("x-forwarded-host"))
    if scheme not in ("http", "https"):
        scheme = parts.scheme
    if not _HOST.match(host):
        host = parts.netloc
    return urlunsplit((scheme, host, parts.path, parts.query, parts.fragment))
