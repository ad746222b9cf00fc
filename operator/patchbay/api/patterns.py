"""Regular expressions written by users, matched in linear time.

A connector variable's ``pattern`` is matched on the operator's event loop and
in the admission webhook. Python's ``re`` backtracks, so ``(a+)+b`` against a
few dozen characters runs for seconds. RE2 matches in time linear in the input
and refuses what it cannot run that way (backreferences, lookaround), so such
a pattern makes the connector invalid instead of slow.
"""

from __future__ import annotations

import functools
from typing import Protocol

import re2  # type: ignore[import-untyped]

MAX_PATTERN_LENGTH = 1024
# Memory RE2 may use for one compiled pattern; a pattern needing more is refused.
_MAX_MEMORY_BYTES = 1 << 20
_CACHE_SIZE = 256


class PatternError(ValueError):
    """A pattern RE2 cannot compile within the limits; the message says why."""


class CompiledPattern(Protocol):
    """The part of a compiled RE2 pattern patchbay uses."""

    def fullmatch(self, text: str) -> object | None: ...


def _options() -> object:
    options = re2.Options()
    options.log_errors = False  # the error is raised, not written to stderr
    options.max_mem = _MAX_MEMORY_BYTES
    return options


_OPTIONS = _options()


@functools.lru_cache(maxsize=_CACHE_SIZE)
def compile_pattern(pattern: str) -> CompiledPattern:
    """The compiled pattern, cached; raises PatternError when it cannot be used."""
    if len(pattern) > MAX_PATTERN_LENGTH:
        raise PatternError(f"is longer than {MAX_PATTERN_LENGTH} characters")
    try:
        compiled: CompiledPattern = re2.compile(pattern, _OPTIONS)
    except re2.error as exc:
        raise PatternError(f"is not a valid RE2 regular expression: {_reason(exc)}") from None
    except UnicodeEncodeError:
        raise PatternError("is not valid UTF-8") from None
    return compiled


def _reason(exc: Exception) -> str:
    detail = exc.args[0] if exc.args else ""
    if isinstance(detail, bytes):
        detail = detail.decode("utf-8", "replace")
    return str(detail) or "unknown error"


def fullmatch(pattern: str, text: str) -> bool:
    """Whether the pattern matches all of text; raises PatternError for a bad pattern."""
    try:
        return compile_pattern(pattern).fullmatch(text) is not None
    except UnicodeEncodeError:  # a lone surrogate cannot match any UTF-8 pattern
        return False
