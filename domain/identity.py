"""Who is acting: the user a portal vouches for, how they authenticated, and assurance levels.

Users reach the portals only with SPID, CIE or CNS. The hub compares authentications on one
scale of assurance levels 1..3 (the eIDAS-like levels SPID states as SpidL1..SpidL3):

    SPID1 < SPID2 < SPID3 = CIE = CNS

SPID states its level. CIE states it too when it is lower than the card's (CieID with
username and password is level 1 or 2); a CIE or CNS without a stated level counts as 3,
because it is a smart card with a PIN. A route's minimum (`min_level = "SPID2"`) is a level
on this scale, whatever the method.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import Enum

from domain.taxcode import personal_tax_code_error

__all__ = [
    "AuthMethod",
    "IdentityError",
    "User",
    "level_from_loa",
    "normalise_user_id",
    "parse_min_level",
]


class AuthMethod(str, Enum):
    """How the user authenticated at the portal."""

    SPID = "SPID"
    CIE = "CIE"
    CNS = "CNS"


class IdentityError(ValueError):
    """A vouched-for identity that the hub cannot accept (bad tax code, unknown level)."""


#: Smart-card methods reach the top level unless they state otherwise.
_CARD_METHODS = frozenset({AuthMethod.CIE, AuthMethod.CNS})

#: "SpidL2", "CieL3", "L2", "2", or the SPID URI "https://www.spid.gov.it/SpidL2".
_LOA = re.compile(r"^(?:https?://www\.spid\.gov\.it/)?(?:spid|cie)?l?([123])$", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class User:
    """A person as the portal vouches for them in the tracking evidence (AUDIT_REST_02).

    Attributes:
        tax_code: the personal tax code, without the SPID `TINIT-` prefix.
        auth_method: SPID, CIE or CNS.
        level: the assurance level 1..3 on the hub's common scale.
        idp: the identity provider that authenticated the user, when the portal names it.
        location: where the user was (the portal's `userLocation`: a workstation, an address).
    """

    tax_code: str
    auth_method: AuthMethod
    level: int
    idp: str = ""
    location: str = ""

    @property
    def assurance(self) -> str:
        """`SPID2`, `CIE3`: how the audit trail and the problem details name the level."""
        return f"{self.auth_method.value}{self.level}"


def normalise_user_id(user_id: str) -> str:
    """The tax code inside a user id: accepts the SPID form `TINIT-<code>` and plain codes.

    Raises:
        IdentityError: not a valid personal tax code.
    """
    code = user_id.strip().upper()
    if code.startswith("TINIT-"):
        code = code[len("TINIT-"):]
    reason = personal_tax_code_error(code)
    if reason is not None:
        raise IdentityError(f"the user id is not a personal tax code: {reason}")
    return code


def level_from_loa(method: str, loa: str | None) -> tuple[AuthMethod, int]:
    """The method and level of an authentication as the portal states them.

    Args:
        method: "SPID", "CIE" or "CNS" (case-insensitive).
        loa: the level of assurance: "SpidL2", "CieL3", "L2", "2" or the SPID URI; may be empty for
            CIE and CNS.

    Raises:
        IdentityError: an unknown method, a missing SPID level or an unreadable level.
    """
    try:
        auth_method = AuthMethod(method.strip().upper())
    except ValueError:
        raise IdentityError(f"unknown authentication method {method!r} (SPID, CIE or CNS)") from None
    if not loa:
        if auth_method in _CARD_METHODS:
            return auth_method, 3
        raise IdentityError("a SPID authentication must state its level (SpidL1..SpidL3)")
    match = _LOA.match(loa.strip())
    if match is None:
        raise IdentityError(f"unreadable level of assurance {loa!r}")
    return auth_method, int(match.group(1))


def parse_min_level(text: str | int | None) -> int:
    """A route's minimum as a level: "SPID2" → 2, "CIE"/"CNS" → 3, 1..3 as is, None → 1.

    Raises:
        IdentityError: anything else.
    """
    if text is None or text == "":
        return 1
    if isinstance(text, int):
        if 1 <= text <= 3:
            return text
        raise IdentityError(f"a minimum level is 1..3, not {text}")
    upper = text.strip().upper()
    if upper in ("CIE", "CNS"):
        return 3
    match = re.fullmatch(r"(?:SPID)?L?([123])", upper)
    if match is None:
        raise IdentityError(f"unknown minimum level {text!r} (SPID1, SPID2, SPID3, CIE or CNS)")
    return int(match.group(1))
