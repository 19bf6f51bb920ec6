"""Italian tax codes (codice fiscale, partita IVA): format, check digit, encoded birth date.

The 16-character personal code follows DM 23/12/1976: six letters for surname and name, the
birth year, a month letter, the day (plus 40 for women), the municipality's cadastral code and a
check character. When two people would get the same code the Agenzia delle Entrate replaces
digits from the right with letters (omocodia), so every digit position also accepts LMNPQRSTUV.
The 11-digit code (entities, and every partita IVA) ends with a Luhn-style check digit.
"""

from __future__ import annotations

import re
import string
from datetime import date

__all__ = [
    "birth_date_from_tax_code",
    "compute_check_character",
    "compute_numeric_check_digit",
    "numeric_tax_code_error",
    "personal_tax_code_error",
    "tax_code_error",
]

#: Letters that replace the digits 0..9 in a code altered for omocodia.
OMOCODIA_LETTERS = "LMNPQRSTUV"

#: Month letters A (January) .. T (December).
MONTH_LETTERS = "ABCDEHLMPRST"

#: Positions (0-based) of the 16-character code that hold digits, or their omocodia letters.
_DIGIT_POSITIONS = frozenset({6, 7, 9, 10, 12, 13, 14})

_LETTER_POSITIONS = frozenset({0, 1, 2, 3, 4, 5, 8, 11})

# Values of a character in an odd (1st, 3rd, ...) position, from the DM 23/12/1976 table; a digit
# counts as the letter with the same index (0 as A, 1 as B, ...).
_ODD_VALUES = (
    1, 0, 5, 7, 9, 13, 15, 17, 19, 21, 2, 4, 18, 20, 11, 3, 6, 8, 12, 14, 16, 10, 22, 25, 24, 23,
)

_DAYS_IN_MONTH = (31, 29, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31)  # 29: the century is unknown


def _char_index(char: str) -> int:
    """Index 0..25 of a digit or upper-case letter, as the check tables use it."""
    return int(char) if char.isdigit() else ord(char) - ord("A")


#: Each digit and upper-case letter's value in an odd and in an even position (the tables
#: above, looked up once here: the intake checks several codes per filing).
_ODD_VALUE_OF = {c: _ODD_VALUES[_char_index(c)] for c in string.digits + string.ascii_uppercase}
_EVEN_VALUE_OF = {c: _char_index(c) for c in string.digits + string.ascii_uppercase}

#: What `_misplaced_character` accepts, as one expression made from the same positions (the
#: check character is not its business): a code that matches needs no walk; one that does not
#: is walked, to name the first character out of place.
_PERSONAL_SHAPE = re.compile("".join(
    "[A-Z]" if position in _LETTER_POSITIONS
    else f"[0-9{OMOCODIA_LETTERS}]" if position in _DIGIT_POSITIONS
    else "[\\s\\S]"
    for position in range(16)))


def compute_check_character(first15: str) -> str:
    """The check character that completes the first 15 characters of a personal tax code."""
    if len(first15) != 15:
        raise ValueError("expected 15 upper-case letters or digits")
    try:
        # Position 0 is the first character, which the decree calls odd.
        total = sum(_ODD_VALUE_OF[c] for c in first15[::2]) + sum(_EVEN_VALUE_OF[c] for c in first15[1::2])
    except KeyError:  # not in the tables: a digit of another script counts as its value
        if not all(c.isdigit() or "A" <= c <= "Z" for c in first15):
            raise ValueError("expected 15 upper-case letters or digits") from None
        return compute_check_character("".join(str(int(c)) if c.isdigit() else c for c in first15))
    return chr(ord("A") + total % 26)


def compute_numeric_check_digit(first10: str) -> str:
    """The check digit that completes the first 10 digits of a numeric tax code or partita IVA."""
    if len(first10) != 10 or not first10.isascii() or not first10.isdigit():
        raise ValueError("expected 10 digits")
    total = 0
    for position, char in enumerate(first10):
        digit = int(char)
        if position % 2 == 1:
            digit *= 2
            digit -= 9 if digit > 9 else 0
        total += digit
    return str((10 - total % 10) % 10)


def _decode_digits(chars: str) -> int:
    """The number behind digits that omocodia may have replaced with letters."""
    return int("".join(str(OMOCODIA_LETTERS.index(c)) if c.isalpha() else c for c in chars))


def _personal_format_error(code: str) -> str | None:
    """Why a 16-character code is not shaped like a personal tax code, or None."""
    if _PERSONAL_SHAPE.fullmatch(code) is None and (misplaced := _misplaced_character(code)):
        return misplaced
    if code[8] not in MONTH_LETTERS:
        return f"'{code[8]}' is not a month letter ({MONTH_LETTERS})"
    month = MONTH_LETTERS.index(code[8]) + 1
    day = _decode_digits(code[9:11])
    day = day - 40 if day > 40 else day
    if not 1 <= day <= _DAYS_IN_MONTH[month - 1]:
        return "the birth day is out of range (1..31, or 41..71 for women, within the month)"
    return None


def _misplaced_character(code: str) -> str | None:
    """The first character out of place in a 16-character code, named."""
    for position, char in enumerate(code):
        if position in _LETTER_POSITIONS and not "A" <= char <= "Z":
            return f"character {position + 1} must be a letter"
        if position in _DIGIT_POSITIONS and not (char.isdigit() or char in OMOCODIA_LETTERS):
            return f"character {position + 1} must be a digit or one of {OMOCODIA_LETTERS}"
    return None


def personal_tax_code_error(code: str) -> str | None:
    """Why `code` is not a valid 16-character personal tax code, or None when it is."""
    if len(code) != 16:
        return "a personal tax code has 16 characters"
    if not code.isascii() or not code.isalnum() or code != code.upper():
        return "a personal tax code has only upper-case letters and digits"
    reason = _personal_format_error(code)
    if reason:
        return reason
    expected = compute_check_character(code[:15])
    if code[15] != expected:
        return f"wrong check character '{code[15]}' (expected '{expected}')"
    return None


def numeric_tax_code_error(code: str) -> str | None:
    """Why `code` is not a valid 11-digit tax code or partita IVA, or None when it is."""
    if len(code) != 11 or not code.isascii() or not code.isdigit():
        return "a numeric tax code has 11 digits"
    if code == "0" * 11:
        return "a numeric tax code cannot be all zeros"
    expected = compute_numeric_check_digit(code[:10])
    if code[10] != expected:
        return f"wrong check digit '{code[10]}' (expected '{expected}')"
    return None


def tax_code_error(code: str) -> str | None:
    """Why `code` is not a valid tax code of either kind (chosen by its length), or None."""
    if len(code) == 11:
        return numeric_tax_code_error(code)
    if len(code) == 16:
        return personal_tax_code_error(code)
    return "a tax code has 11 digits or 16 characters"


def birth_date_from_tax_code(code: str, today: date) -> date | None:
    """The birth date encoded in a personal tax code, or None if it has none or is malformed.

    The code keeps only two digits of the year: the latest century that puts the date on or
    before `today` wins, so a code for someone born in 1920 reads as 2020 in 2026. Callers that
    compare with a declared date should compare year modulo 100, month and day.
    """
    if len(code) != 16 or _personal_format_error(code) is not None:
        return None
    year = _decode_digits(code[6:8])
    month = MONTH_LETTERS.index(code[8]) + 1
    day = _decode_digits(code[9:11])
    day = day - 40 if day > 40 else day
    for century in (2000, 1900):
        try:
            candidate = date(century + year, month, day)
        except ValueError:  # 29 February in a year that is not leap in this century
            continue
        if candidate <= today:
            return candidate
    return None
