"""Text that leaves a driver: secret values scrubbed, servers' text made printable.

Every message a user may read (status, events, CLI output) passes ``scrub``, in the
shared verification runner and in discovery; drivers that hold values the runner does
not know (an OAuth 2.0 access token, an encoded Authorization header) scrub those
themselves with the same function. Text a server chose (error bodies, banners, reasons)
goes through ``printable`` before it is put into a one-line message.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from urllib.parse import quote

from yarl import URL

REDACTED = "[redacted]"
# Shorter values would redact ordinary words; credentials are longer than this.
MIN_SCRUB_LENGTH = 4
# What of a server's text (an error, a banner) a one-line message keeps by default.
SERVER_TEXT_MAX = 256
# Control characters (line breaks, escapes, NUL) in text a server chose.
_CONTROL_CHARACTERS = re.compile(r"[\x00-\x1f\x7f]+")


def _forms(value: str) -> set[str]:
    """The value as it is and in every form an echoing server might show it: percent-encoded
    as in a path, with '+' for spaces as in a form, and as yarl writes a query value."""
    return {
        value,
        quote(value, safe=""),
        quote(value),
        quote(value).replace("%20", "+"),
        URL.build(query={"k": value}).raw_query_string[2:],
    }


def scrub(text: str, secrets: Iterable[str]) -> str:
    """Replace every secret value, in each of its forms, longest first so overlaps are covered."""
    forms: set[str] = set()
    for value in secrets:
        if len(value) >= MIN_SCRUB_LENGTH:
            forms.update(form for form in _forms(value) if len(form) >= MIN_SCRUB_LENGTH)
    for form in sorted(forms, key=len, reverse=True):
        text = text.replace(form, REDACTED)
    return text


def printable(text: str, limit: int = SERVER_TEXT_MAX) -> str:
    """Text a server chose, fit for a one-line message: control characters become spaces,
    and it is trimmed and cut to ``limit`` characters."""
    return _CONTROL_CHARACTERS.sub(" ", text).strip()[:limit]
