"""Values the sandbox chose, made safe to record, sign, evaluate and show.

Pure. Everything a sandboxed program produces is hostile data (DESIGN, "The trust boundary"):
a file name may be any bytes but ``/`` and NUL, a size may reach 2^63, an output may hold
terminal escapes. These functions give each such value one documented, lossless form:

- **names** (paths, link targets): valid UTF-8 stays as it is, except ``%`` and control
  characters; those and every byte that is not valid UTF-8 are percent-encoded (``%XX``,
  upper-case hex). ``%`` is always encoded, so decoding (``name_bytes``) is exact.
- **integers** in signed JSON (RFC 8785 allows only ±(2^53 - 1)): outside that range they
  are carried as decimal strings (``json_safe``).
- **integers in a policy context** (Cedar's ``Long`` is 64-bit): clamped to the range
  (``saturate``); a size past 2^63 - 1 is past every limit anyway.
- **text for a person's terminal**: control characters shown as escapes (``printable``).
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from typing import Any

MAX_JSON_INT = 2**53 - 1
MAX_LONG = 2**63 - 1
MIN_LONG = -(2**63)

_PLAIN_ASCII = re.compile(r"[\x20-\x24\x26-\x7e]*")
_PERCENT = re.compile(rb"%([0-9A-F]{2})")


def _is_control(char: str) -> bool:
    code = ord(char)
    return code < 0x20 or 0x7F <= code <= 0x9F


def name(raw: str | bytes) -> str:
    """The recorded form of a name from the sandbox (``os`` gives ``str`` with surrogate
    escapes for undecodable bytes; ``bytes`` are taken as they are)."""
    if isinstance(raw, str) and _PLAIN_ASCII.fullmatch(raw):
        return raw
    data = os.fsencode(raw) if isinstance(raw, str) else raw
    out: list[str] = []
    for char in data.decode("utf-8", errors="surrogateescape"):
        if "\udc80" <= char <= "\udcff":  # a byte that is not valid UTF-8
            out.append(f"%{ord(char) - 0xDC00:02X}")
        elif char == "%" or _is_control(char):
            out.extend(f"%{byte:02X}" for byte in char.encode())
        else:
            out.append(char)
    return "".join(out)


def name_bytes(recorded: str) -> bytes:
    """The exact bytes of a recorded name (the inverse of ``name``)."""
    return _PERCENT.sub(lambda m: bytes([int(m.group(1), 16)]), recorded.encode())


def _map_ints(value: Any, change: Callable[[int], Any]) -> Any:
    """``value`` (JSON-shaped) with ``change`` applied to every integer (bools excepted)."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int):
        return change(value)
    if isinstance(value, dict):
        return {key: _map_ints(item, change) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_map_ints(item, change) for item in value]
    return value


def json_safe(value: Any) -> Any:
    """``value`` with every integer outside RFC 8785's domain as a decimal string."""
    return _map_ints(value, lambda n: n if -MAX_JSON_INT <= n <= MAX_JSON_INT else str(n))


def saturate(value: Any) -> Any:
    """``value`` with every integer clamped to a signed 64-bit range (policy engines)."""
    return _map_ints(value, lambda n: min(max(n, MIN_LONG), MAX_LONG))


def printable(text: str) -> str:
    """``text`` for a terminal: newlines and tabs kept, every other control character (ESC,
    CR, backspace, C1 codes) shown as ``\\xNN`` / ``\\uNNNN``, so no sequence the sandbox
    chose can move the cursor, rewrite a line or change the terminal's state."""
    if text.isprintable():
        return text
    return "".join(
        char if char in "\n\t" or (not _is_control(char) and char.isprintable()) or char == " "
        else (f"\\x{ord(char):02x}" if ord(char) < 0x100 else f"\\u{ord(char):04x}")
        for char in text)


def printable_line(text: str) -> str:
    """Like ``printable``, newlines escaped too: one value on one line."""
    return printable(text).replace("\n", "\\n")


def echo(value: str, limit: int = 64) -> str:
    """A value a caller sent, quoted back in a message: one printable line of at most
    ``limit`` characters (an id of 5,000 characters is not answered with all of them)."""
    shown = printable_line(value)
    return repr(shown if len(shown) <= limit else shown[:limit] + "…")


def text(value: str) -> str:
    """Free text (a reason, an error message) that may quote a name with undecodable bytes
    (``os`` hands them over as surrogate escapes): those shown as ``\\udcXX``, so the text can
    be encoded, stored and signed."""
    try:
        value.encode()
    except UnicodeEncodeError:
        return value.encode("utf-8", "backslashreplace").decode()
    return value


def scrub(value: Any) -> Any:
    """``text`` applied to every string of a JSON-shaped value."""
    if isinstance(value, str):
        return text(value)
    if isinstance(value, dict):
        return {scrub(key): scrub(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [scrub(item) for item in value]
    return value
