"""Recipients: phone numbers as people type them, BSUIDs, and `to` winning."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wagate.domain.errors import GraphError
from wagate.domain.recipients import normalise_phone, resolve_recipient


@pytest.mark.parametrize(
    ("typed", "wa_id"),
    [
        ("+44 7700 900123", "447700900123"),
        ("447700900123", "447700900123"),
        ("+1 (555) 123-4567", "15551234567"),
        ("+1.555.123.4567", "15551234567"),
        ("00 49 30 1234567", "49301234567"),
        (" +55 11 91234-5678 ", "5511912345678"),
    ],
)
def test_typed_numbers_become_e164_digits(typed: str, wa_id: str) -> None:
    assert normalise_phone(typed) == wa_id


@pytest.mark.parametrize("typed", ["", "abc", "+44 7700 9001a3", "+", "12", "+999 1234567", "#1"])
def test_what_is_not_a_phone_number_is_131009(typed: str) -> None:
    with pytest.raises(GraphError) as caught:
        normalise_phone(typed)
    assert caught.value.code == 131009


@pytest.mark.parametrize("typed", ["07700900123", "07700 900123", "(020) 7946 0018", "0"])
def test_a_local_number_is_told_to_add_its_country_code_in_our_words(typed: str) -> None:
    with pytest.raises(GraphError) as caught:
        normalise_phone(typed)
    assert caught.value.code == 131009
    assert "country code" in caught.value.details
    assert "E.164" in caught.value.details
    # Not the phone library's own text ("Could not interpret numbers after plus-sign").
    assert "plus-sign" not in caught.value.details


def test_no_refusal_quotes_the_phone_librarys_text() -> None:
    for typed in ("", "+", "12", "+999 1234567"):
        with pytest.raises(GraphError) as caught:
            normalise_phone(typed)
        assert "(" not in caught.value.details.replace(repr(typed), "")


def test_to_wins_over_recipient() -> None:
    chosen = resolve_recipient("+44 7700 900123", "US.1234")
    assert (chosen.kind, chosen.address, chosen.input) == (
        "phone",
        "447700900123",
        "+44 7700 900123",
    )


def test_a_bsuid_is_kept_as_sent() -> None:
    chosen = resolve_recipient(None, "US.ENT.1234")
    assert (chosen.kind, chosen.address) == ("bsuid", "US.ENT.1234")


def test_neither_is_131008() -> None:
    with pytest.raises(GraphError) as caught:
        resolve_recipient(None, None)
    assert caught.value.code == 131008


@given(st.from_regex(r"\+44 7700 9[0-9]{5}", fullmatch=True))
def test_any_uk_mobile_keeps_all_its_digits(typed: str) -> None:
    assert normalise_phone(typed) == "".join(ch for ch in typed if ch.isdigit())


@given(st.text(max_size=40))
def test_any_text_parses_or_is_refused_cleanly(typed: str) -> None:
    try:
        digits = normalise_phone(typed)
    except GraphError as error:
        code = error.code
    else:
        code = 0
        assert digits.isdigit()
        assert 7 <= len(digits) <= 15
    assert code in (0, 131009)


def test_a_to_over_64_characters_is_refused_before_parsing() -> None:
    with pytest.raises(GraphError) as caught:
        normalise_phone("+44 7700 900123" + " " * 60)
    assert caught.value.code == 131009
    assert "longer than 64" in caught.value.details


def test_the_parse_cache_holds_digits_not_what_was_typed() -> None:
    from wagate.domain.recipients import _e164

    _e164.cache_clear()
    for typed in ("+44 7700 900123", "447700900123", "0044 7700 900123", "+44-7700-900123"):
        assert normalise_phone(typed) == "447700900123"
    assert _e164.cache_info().currsize == 1
