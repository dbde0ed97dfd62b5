"""Links behind a reverse proxy: forwarded scheme and host are believed only from trusted peers."""

from __future__ import annotations

import pytest

from wagate.adapters.http.proxies import TrustedProxies, public_url

URL = "http://10.0.0.5:8080/meta/whatsapp/v24.0/1/messages"
FORWARDED = {"x-forwarded-proto": "https", "x-forwarded-host": "wa.example.com"}


def test_a_trusted_proxy_gives_the_links_its_scheme_and_host() -> None:
    trusted = TrustedProxies.parse("127.0.0.1, 10.1.0.0/16")
    assert public_url(URL, "10.1.2.3", FORWARDED, trusted) == (
        "https://wa.example.com/meta/whatsapp/v24.0/1/messages"
    )


def test_another_peer_cannot_change_the_links() -> None:
    trusted = TrustedProxies.parse("127.0.0.1")
    assert public_url(URL, "203.0.113.9", FORWARDED, trusted) == URL
    assert public_url(URL, None, FORWARDED, trusted) == URL
    assert public_url(URL, "127.0.0.1", FORWARDED, TrustedProxies.parse("")) == URL


def test_chained_proxies_name_the_client_side_first() -> None:
    headers = {"x-forwarded-proto": "https, http", "x-forwarded-host": "wa.example.com, inner"}
    assert public_url(URL, "1.2.3.4", headers, TrustedProxies.parse("*")).startswith(
        "https://wa.example.com/"
    )


@pytest.mark.parametrize(
    "headers",
    [
        {"x-forwarded-proto": "javascript", "x-forwarded-host": "evil.example/x?"},
        {"x-forwarded-proto": "", "x-forwarded-host": "a b"},
        {"x-forwarded-host": "user@evil.example"},
    ],
)
def test_forwarded_values_that_are_not_a_scheme_or_host_are_ignored(
    headers: dict[str, str],
) -> None:
    assert public_url(URL, "127.0.0.1", headers, TrustedProxies.parse("127.0.0.1")) == URL


def test_a_bad_entry_is_one_line_naming_the_setting() -> None:
    with pytest.raises(SystemExit, match=r"WAGATE_TRUSTED_PROXIES: 'proxy\.lan'"):
        TrustedProxies.parse("127.0.0.1,proxy.lan")
