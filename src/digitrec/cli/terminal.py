"""Text bound for the terminal: file names and messages with their control characters made visible.

A file or folder name may hold any byte but / and NUL, escape sequences included (`\\x1b]0;...\\x07`
retitles a terminal, `\\x1b[2J` clears it, others have done worse). Printed raw, a name can rewrite what
the user sees; `printable` shows each control character as its Python escape instead.
"""

from __future__ import annotations

import re

# C0 controls, DEL and C1 controls (0x80-0x9f, which some terminals obey as 8-bit escapes).
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")
_CONTROL_BUT_NEWLINE = re.compile("[\x00-\x09\x0b-\x1f\x7f-\x9f]")


def _escape(match: re.Match[str]) -> str:
    return repr(match.group())[1:-1]  # '\x1b' -> \x1b, '\t' -> \t


def printable(text: object, *, keep_newlines: bool = False) -> str:
    """`text` with control characters shown as escapes (`\\x1b`); newlines kept if `keep_newlines`."""
    pattern = _CONTROL_BUT_NEWLINE if keep_newlines else _CONTROL
    return pattern.sub(_escape, str(text))
