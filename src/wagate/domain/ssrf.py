"""Which addresses a customer webhook may reach, and which URLs may be registered at all.

A webhook URL is chosen by a customer, so without a policy it is a way into the
gateway's own network: the admin port on loopback, a database on 10.x, or the cloud
metadata service that hands out credentials. The poster checks the address it
actually connects to (after DNS) against an `AddressPolicy`; `check_url` only refuses
URLs that cannot be a webhook at all.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

Network = ipaddress.IPv4Network | ipaddress.IPv6Network
Address = ipaddress.IPv4Address | ipaddress.IPv6Address

MAX_URL_CHARS: Final = 2000
SCHEMES: Final = frozenset({"http", "https"})
# Shared address space (RFC 6598): carrier NAT, and Tailscale. Python counts it neither
# private nor global, so it is named here.
CGNAT: Final = ipaddress.ip_network("100.64.0.0/10")
# Where clouds serve instance credentials (AWS, GCP and Azure on IPv4, AWS on IPv6,
# Alibaba). They sit inside link-local, ULA and CGNAT, and stay refused even when
# private addresses are allowed: a gateway on a private network still must not hand
# its instance role to a customer. Listing one in `allow_cidrs` is the only way in.
METADATA: Final = frozenset(
    ipaddress.ip_address(a) for a in ("169.254.169.254", "fd00:ec2::254", "100.100.100.200")
)
# What `allow_private` opens: loopback, RFC 1918 and IPv6 unique-local addresses.
# Link-local, CGNAT, multicast, reserved and unspecified (0.0.0.0 reaches loopback on
# Linux) stay refused: nothing honest lives there that allow_cidrs cannot name.
PRIVATE: Final = tuple(
    ipaddress.ip_network(n)
    for n in ("127.0.0.0/8", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "::1/128", "fc00::/7")
)
_NAT64: Final = ipaddress.ip_network("64:ff9b::/96")


def _embedded_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 one stands for (mapped, 6to4, NAT64), if any."""
    if address.ipv4_mapped is not None:
        return address.ipv4_mapped
    if address.sixtofour is not None:
        return address.sixtofour
    if address in _NAT64:
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)
    return None


def _is_public(address: Address) -> bool:
    # `is_global` alone lets multicast through on some Python versions.
    return (
        address.is_global
        and not address.is_multicast
        and not address.is_reserved
        and not address.is_link_local
        and address not in CGNAT
    )


@dataclass(frozen=True, slots=True)
class AddressPolicy:
    """Which resolved addresses a webhook may connect to."""

    allow_private: bool = False
    allow_cidrs: tuple[Network, ...] = ()

    def allows(self, ip: str) -> bool:
        """Whether connecting to `ip` (an IPv4 or IPv6 literal, zone id allowed) is allowed."""
        try:
            address = ipaddress.ip_address(ip.partition("%")[0])
        except ValueError:
            return False
        if self._listed(address):
            return True
        if isinstance(address, ipaddress.IPv6Address):
            inner = _embedded_ipv4(address)
            if inner is not None:
                # ::ffff:127.0.0.1 (and its 6to4 and NAT64 forms) reaches 127.0.0.1: judge
                # what is reached. The IPv6 forms themselves count as reserved, which would
                # refuse every IPv4-only host behind DNS64.
                return self._allows_one(inner)
        return self._allows_one(address)

    def _listed(self, address: Address) -> bool:
        return any(address in network for network in self.allow_cidrs)

    def _allows_one(self, address: Address) -> bool:
        if self._listed(address):
            return True
        if address in METADATA:
            return False
        if self.allow_private and any(address in network for network in PRIVATE):
            return True
        return _is_public(address)


def check_url(url: str) -> str | None:
    """Why `url` cannot be a webhook URL (None: it can); addresses are checked when posting."""
    if len(url) > MAX_URL_CHARS:
        return f"the URL is longer than {MAX_URL_CHARS} characters"
    if any(c.isspace() or ord(c) < 0x20 or ord(c) == 0x7F for c in url):
        return "the URL contains whitespace or control characters"
    port_problem = "the URL's port must be a number from 1 to 65535"
    try:
        parts = urlsplit(url)
    except ValueError as exc:
        return f"the URL cannot be parsed: {exc}"
    try:
        port = parts.port
    except ValueError:
        return port_problem
    if parts.scheme.lower() not in SCHEMES:
        return "the URL must start with http:// or https://"
    if not parts.hostname:
        return "the URL has no host"
    if parts.username is not None or parts.password is not None:
        return "the URL must not carry a user name or password"
    if port is not None and not 1 <= port <= 65535:
        return port_problem
    return None


def parse_allow_cidrs(text: str) -> tuple[Network, ...]:
    """`WAGATE_WEBHOOKS_ALLOW_CIDRS` (comma-separated CIDRs) as networks; ValueError names a
    bad one."""
    networks = []
    for item in text.split(","):
        item = item.strip()
        if not item:
            continue
        try:
            networks.append(ipaddress.ip_network(item))
        except ValueError as exc:
            raise ValueError(
                f"WAGATE_WEBHOOKS_ALLOW_CIDRS: {item!r} is not a network such as "
                f"10.0.0.0/8 or fd00::/8 ({exc})"
            ) from None
    return tuple(networks)
