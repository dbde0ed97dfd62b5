"""A customer's webhook URL never reaches into the gateway's own network unless the operator
says so."""

from __future__ import annotations

import ipaddress

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wagate.domain.ssrf import AddressPolicy, check_url, parse_allow_cidrs

DEFAULT = AddressPolicy()
PRIVATE_OK = AddressPolicy(allow_private=True)

REFUSED_NETWORKS = [
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "100.64.0.0/10",
    "224.0.0.0/4",
    "240.0.0.0/4",
    "0.0.0.0/8",
    "::1/128",
    "fc00::/7",
    "fe80::/10",
    "ff00::/8",
]

PUBLIC = ["8.8.8.8", "1.1.1.1", "93.184.215.14", "2606:4700:4700::1111", "2a00:1450:4009::200e"]


def addresses_in(network: str) -> st.SearchStrategy[str]:
    """Any address of `network`, as text."""
    net = ipaddress.ip_network(network)
    first = int(net.network_address)
    return st.integers(first, first + net.num_addresses - 1).map(
        lambda n: str(ipaddress.ip_address(n) if net.version == 4 else ipaddress.IPv6Address(n))
    )


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_are_allowed(address: str) -> None:
    assert DEFAULT.allows(address)


@pytest.mark.parametrize("network", REFUSED_NETWORKS)
@given(data=st.data())
def test_no_address_of_a_non_public_range_is_allowed_by_default(
    network: str, data: st.DataObject
) -> None:
    assert not DEFAULT.allows(data.draw(addresses_in(network)))


@pytest.mark.parametrize(
    "address", ["0.0.0.0", "::", "255.255.255.255", "192.0.2.1", "198.18.0.1", "2001:db8::1"]
)
def test_unspecified_broadcast_and_documentation_addresses_are_refused(address: str) -> None:
    assert not DEFAULT.allows(address)
    assert not PRIVATE_OK.allows(address)


@given(address=addresses_in("127.0.0.0/8") | addresses_in("10.0.0.0/8"))
def test_every_ipv6_form_of_a_private_ipv4_is_refused(address: str) -> None:
    v4 = int(ipaddress.IPv4Address(address))
    mapped = ipaddress.IPv6Address((0xFFFF << 32) | v4)
    sixtofour = ipaddress.IPv6Address((0x2002 << 112) | (v4 << 80))
    nat64 = ipaddress.IPv6Address((0x64FF9B << 96) | v4)
    for form in (mapped, sixtofour, nat64):
        assert not DEFAULT.allows(str(form)), form


def test_ipv6_forms_of_a_public_ipv4_are_allowed() -> None:
    # A gateway behind DNS64 reaches every IPv4-only receiver through 64:ff9b::/96.
    assert DEFAULT.allows("::ffff:8.8.8.8")
    assert DEFAULT.allows("64:ff9b::808:808")
    assert DEFAULT.allows("2002:808:808::1")


def test_allow_private_opens_loopback_and_private_networks_only() -> None:
    for address in ("127.0.0.1", "10.1.2.3", "172.20.0.5", "192.168.1.10", "::1", "fd12::1"):
        assert PRIVATE_OK.allows(address), address
    assert PRIVATE_OK.allows("::ffff:127.0.0.1")
    for address in ("169.254.10.1", "fe80::1", "100.64.0.1", "224.0.0.1", "ff02::1"):
        assert not PRIVATE_OK.allows(address), address


@pytest.mark.parametrize("address", ["169.254.169.254", "fd00:ec2::254", "100.100.100.200"])
def test_cloud_metadata_stays_refused_when_private_addresses_are_allowed(address: str) -> None:
    assert not DEFAULT.allows(address)
    assert not PRIVATE_OK.allows(address)
    assert AddressPolicy(allow_cidrs=parse_allow_cidrs(address)).allows(address)


def test_metadata_through_an_ipv4_mapped_address_is_refused() -> None:
    assert not PRIVATE_OK.allows("::ffff:169.254.169.254")


def test_allow_cidrs_opens_exactly_the_listed_networks() -> None:
    policy = AddressPolicy(allow_cidrs=parse_allow_cidrs("10.20.0.0/16, fd00:1::/32"))
    assert policy.allows("10.20.3.4")
    assert policy.allows("::ffff:10.20.3.4")
    assert policy.allows("fd00:1::9")
    assert not policy.allows("10.21.0.1")
    assert not policy.allows("127.0.0.1")
    assert not policy.allows("fd00:2::9")


def test_a_zone_id_does_not_hide_a_link_local_address() -> None:
    assert not PRIVATE_OK.allows("fe80::1%eth0")


@pytest.mark.parametrize("text", ["", "localhost", "127.1", "2130706433", "1.2.3.4.5", "[::1]"])
def test_what_is_not_an_ip_literal_is_refused(text: str) -> None:
    assert not PRIVATE_OK.allows(text)


def test_allow_cidrs_parse_ignores_blanks() -> None:
    assert parse_allow_cidrs(" , 192.168.0.0/24 ,,") == (ipaddress.ip_network("192.168.0.0/24"),)
    assert parse_allow_cidrs("") == ()


@pytest.mark.parametrize("text", ["10.0.0.0/33", "10.0.0.1/8", "example.com", "10.0.0.0/8;"])
def test_a_bad_allow_cidr_is_named_in_the_error(text: str) -> None:
    with pytest.raises(ValueError, match="WAGATE_WEBHOOKS_ALLOW_CIDRS") as caught:
        parse_allow_cidrs(f"192.168.0.0/16,{text}")
    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/wa",
        "http://hooks.example.com:8080/wa?tenant=1",
        "https://[2606:4700::1]/x",
        "HTTPS://EXAMPLE.COM/",
        "https://example.com:65535/",
    ],
)
def test_a_webhook_url_may_be_http_or_https_to_a_host(url: str) -> None:
    assert check_url(url) is None


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("ftp://example.com/", "http:// or https://"),
        ("file:///etc/passwd", "http:// or https://"),
        ("gopher://example.com/", "http:// or https://"),
        ("example.com/hook", "http:// or https://"),
        ("https:///path", "no host"),
        ("https://user:pw@example.com/", "user name or password"),
        ("https://user@example.com/", "user name or password"),
        ("https://example.com:0/", "port"),
        ("https://example.com:70000/", "port"),
        ("https://example.com:http/", "port"),
        ("https://[::1/", "cannot be parsed"),
        ("https://exa mple.com/", "whitespace"),
        ("https://example.com/\r\nX-Evil: 1", "whitespace"),
        ("https://example.com/" + "a" * 2000, "longer than 2000"),
    ],
)
def test_a_url_that_cannot_be_a_webhook_is_refused_with_a_reason(url: str, reason: str) -> None:
    found = check_url(url)
    assert found is not None
    assert reason in found
