"""The console's language: `?lang=`, then the `crocevia_lang` cookie, then Accept-Language;
Italian when none of them names a language the console has. Catalogues are gettext `.mo`
files under `console/locale`, compiled from the `.po` files beside them (Babel)."""

from __future__ import annotations

import gettext
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from zoneinfo import ZoneInfo

from babel import Locale, UnknownLocaleError
from babel.dates import format_datetime
from babel.support import NullTranslations, Translations
from starlette.requests import Request

__all__ = ["DEFAULT_LANGUAGE", "LANGUAGES", "LANG_COOKIE", "LOCALE_DIR", "ZONE", "choose_language",
           "format_instant", "translations"]

#: Where the catalogues live: `<lang>/LC_MESSAGES/messages.{po,mo}`.
LOCALE_DIR = Path(__file__).parent / "locale"
#: Message ids are English; Italian is a catalogue, and the default (the hub's users are Italian).
LANGUAGES = ("it", "en")
DEFAULT_LANGUAGE = "it"
LANG_COOKIE = "crocevia_lang"
#: Operators read and type times in the country's time zone (Italy); the API keeps UTC.
ZONE = ZoneInfo("Europe/Rome")


def choose_language(request: Request) -> tuple[str, bool]:
    """The page's language and whether it came from `?lang=` (then it is remembered in a cookie)."""
    asked = request.query_params.get("lang", "").lower()
    if asked in LANGUAGES:
        return asked, True
    kept = request.cookies.get(LANG_COOKIE, "")
    if kept in LANGUAGES:
        return kept, False
    weighted: list[tuple[float, str]] = []
    for part in request.headers.get("accept-language", "").split(",")[:20]:
        tag, _, params = part.strip().partition(";")
        quality = 1.0
        if params.strip().startswith("q="):
            try:
                quality = float(params.strip()[2:])
            except ValueError:
                quality = 0.0
        weighted.append((quality, tag.strip().lower().split("-")[0]))
    for _, tag in sorted(weighted, key=lambda w: -w[0]):
        if tag in LANGUAGES:
            return tag, False
    return DEFAULT_LANGUAGE, False


@lru_cache(maxsize=len(LANGUAGES))
def translations(language: str) -> gettext.NullTranslations:
    """The catalogue of `language` (English is the message ids themselves)."""
    if language == "en":
        return NullTranslations()
    return Translations.load(str(LOCALE_DIR), [language], domain="messages")


def format_instant(text: str | None, language: str) -> str:
    """An RFC 3339 instant from the operator API as a reader expects it, in Italian time."""
    if not text:
        return "—"
    try:
        moment = datetime.fromisoformat(text)
        locale = Locale.parse(language)
    except (ValueError, UnknownLocaleError):
        return text
    if moment.tzinfo is None:
        return text
    return format_datetime(moment.astimezone(ZONE), "medium", locale=locale)
