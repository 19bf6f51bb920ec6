"""Tax codes: personal and numeric check digits, omocodia, the encoded birth date."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given
from hypothesis import strategies as st

from domain.taxcode import (
    birth_date_from_tax_code,
    compute_check_character,
    compute_numeric_check_digit,
    numeric_tax_code_error,
    personal_tax_code_error,
    tax_code_error,
)

TODAY = date(2026, 11, 28)

# Fictitious people, the same as in schemas/filing/v1/examples.
VALID_PERSONAL = ["FTTMRC85C14H501X", "NVNLRA92L61F205G", "SMPPLA98S02L219A", "PRVCHR70T45F839G"]
VALID_NUMERIC = ["09182730581", "97123450633", "12345678903"]

OMOCODIA = dict(zip("0123456789", "LMNPQRSTUV"))


def _with_check(first15: str) -> str:
    return first15 + compute_check_character(first15)


def _omocode(code: str, positions: tuple[int, ...]) -> str:
    """`code` with the digits at `positions` replaced by their letters, check recomputed."""
    chars = list(code[:15])
    for position in positions:
        chars[position] = OMOCODIA[chars[position]]
    return _with_check("".join(chars))


@pytest.mark.parametrize("code", VALID_PERSONAL)
def test_valid_personal_code_is_accepted(code: str) -> None:
    """A correctly built 16-character code has no error, through either entry point."""
    assert personal_tax_code_error(code) is None
    assert tax_code_error(code) is None


def test_wrong_check_character_is_reported_with_the_expected_one() -> None:
    """Changing only the last character gives a reason naming the right character."""
    reason = personal_tax_code_error("FTTMRC85C14H501A")
    assert reason == "wrong check character 'A' (expected 'X')"


def test_check_character_matches_the_textbook_example() -> None:
    """The odd/even tables reproduce the check character of the classic Rossi Mario example."""
    assert compute_check_character("RSSMRA80A01H501") == "U"


@pytest.mark.parametrize(
    "positions", [(14,), (13, 14), (12, 13, 14), (6, 7, 9, 10, 12, 13, 14)]
)
def test_omocodia_code_is_accepted(positions: tuple[int, ...]) -> None:
    """Digits replaced by LMNPQRSTUV from the right still make a valid code."""
    code = _omocode("FTTMRC85C14H501X", positions)
    assert code != "FTTMRC85C14H501X"
    assert personal_tax_code_error(code) is None


def test_omocodia_code_keeps_its_birth_date() -> None:
    """A fully substituted code decodes to the same birth date as the original."""
    code = _omocode("FTTMRC85C14H501X", (6, 7, 9, 10, 12, 13, 14))
    assert code.startswith("FTTMRCURCMQHRLM")
    assert birth_date_from_tax_code(code, TODAY) == date(1985, 3, 14)


def test_letter_outside_omocodia_set_in_a_digit_position_is_rejected() -> None:
    """Only LMNPQRSTUV may stand for a digit; another letter is a format error."""
    reason = personal_tax_code_error(_with_check("FTTMRC85C14H50A"))
    assert reason is not None and "character 15" in reason


@pytest.mark.parametrize(
    ("first15", "fragment"),
    [
        ("FTTMRC85F14H501", "month letter"),  # F is not a month
        ("FTTMRC85C32H501", "birth day"),  # no 32nd
        ("FTTMRC85C72H501", "birth day"),  # women: 41..71
        ("FTTMRC85D31H501", "birth day"),  # April has 30 days
        ("1TTMRC85C14H501", "character 1"),
    ],
)
def test_impossible_birth_fields_are_rejected(first15: str, fragment: str) -> None:
    """Month letter and day are checked even when the check character is right."""
    reason = personal_tax_code_error(_with_check(first15))
    assert reason is not None and fragment in reason


def test_women_days_from_41_to_71_are_accepted() -> None:
    """Day plus 40 marks a woman; 71 is the 31st."""
    code = _with_check("NVNLRA92A71F205")
    assert personal_tax_code_error(code) is None
    assert birth_date_from_tax_code(code, TODAY) == date(1992, 1, 31)


def test_lower_case_code_is_rejected() -> None:
    """Codes are upper case; a lower-case copy is not silently accepted."""
    assert personal_tax_code_error("fttmrc85c14h501x") is not None


@pytest.mark.parametrize("code", VALID_NUMERIC)
def test_valid_numeric_code_is_accepted(code: str) -> None:
    """An 11-digit code with the right check digit has no error."""
    assert numeric_tax_code_error(code) is None
    assert tax_code_error(code) is None


def test_wrong_numeric_check_digit_is_reported_with_the_expected_one() -> None:
    """The reason names the digit that would be right."""
    assert numeric_tax_code_error("12345678901") == "wrong check digit '1' (expected '3')"


def test_all_zeros_numeric_code_is_rejected() -> None:
    """00000000000 passes the arithmetic but is no one's code."""
    assert numeric_tax_code_error("00000000000") is not None


@pytest.mark.parametrize("code", ["", "1234567890", "FTTMRC85C14H501", "1234567890A"])
def test_wrong_length_or_characters_are_rejected(code: str) -> None:
    """Anything that is neither 11 digits nor 16 characters is refused."""
    assert tax_code_error(code) is not None


def test_compute_functions_refuse_wrong_input() -> None:
    """The generators raise instead of returning a check for a malformed prefix."""
    with pytest.raises(ValueError):
        compute_check_character("SHORT")
    with pytest.raises(ValueError):
        compute_numeric_check_digit("12345")
    assert compute_numeric_check_digit("0918273058") == "1"


def test_two_digit_year_takes_the_latest_century_not_in_the_future() -> None:
    """Year 20 is 2020 in 2026, year 30 is 1930: the century ambiguity resolved towards today."""
    assert birth_date_from_tax_code(_with_check("SMPPLA20S02L219"), TODAY) == date(2020, 11, 2)
    assert birth_date_from_tax_code(_with_check("SMPPLA30S02L219"), TODAY) == date(1930, 11, 2)
    assert birth_date_from_tax_code(_with_check("SMPPLA26T02L219"), TODAY) == date(1926, 12, 2)


def test_birth_date_is_none_for_codes_without_one() -> None:
    """Numeric codes and malformed personal codes have no birth date."""
    assert birth_date_from_tax_code("09182730581", TODAY) is None
    assert birth_date_from_tax_code("FTTMRC85F14H501X", TODAY) is None


# The decree's tables written out again, character by character, to hold the checks' lookup
# tables and their one-expression shape test to the definition.
_DECREE_ODD = dict(zip("ABCDEFGHIJKLMNOPQRSTUVWXYZ", (1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3,
                                                       6, 8, 12, 14, 16, 10, 22, 25, 24, 23)))
_DECREE_ODD.update({digit: _DECREE_ODD[letter] for digit, letter in zip("0123456789", "ABCDEFGHIJ")})
_DECREE_EVEN = {**{c: i for i, c in enumerate("ABCDEFGHIJKLMNOPQRSTUVWXYZ")}, **{d: int(d) for d in "0123456789"}}
_LETTERS_AT = (0, 1, 2, 3, 4, 5, 8, 11)
_DIGITS_AT = (6, 7, 9, 10, 12, 13, 14)


@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZ", min_size=15, max_size=15))
def test_the_check_character_is_the_decrees(first15: str) -> None:
    total = sum(_DECREE_ODD[c] if i % 2 == 0 else _DECREE_EVEN[c] for i, c in enumerate(first15))
    assert compute_check_character(first15) == chr(ord("A") + total % 26)


@given(st.text(alphabet="0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZLMNPQRSTUVabz-٣ ", min_size=16, max_size=16))
def test_the_first_character_out_of_place_is_the_one_named(code: str) -> None:
    """What the shape test lets through is what the walk would; what it stops, the walk names."""
    misplaced = next((p for p in range(16) if (p in _LETTERS_AT and not "A" <= code[p] <= "Z")
                      or (p in _DIGITS_AT and not (code[p].isdigit() or code[p] in "LMNPQRSTUV"))), None)
    reason = personal_tax_code_error(code) if code.isascii() and code.isalnum() and code == code.upper() else None
    if misplaced is not None and reason is not None:
        assert reason.startswith(f"character {misplaced + 1} must be"), (code, reason)
    elif reason is not None:
        assert not reason.startswith("character "), (code, reason)
