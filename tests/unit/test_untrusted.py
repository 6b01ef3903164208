"""The one representation of each kind of value a sandbox chooses: lossless, encodable,
harmless on a terminal — for any input Hypothesis can find."""

from __future__ import annotations

import json
import os

import rfc8785
from hypothesis import given
from hypothesis import strategies as st

from controller.core import untrusted

JSONISH = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**80), 2**80) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(st.binary(min_size=1, max_size=64))
def test_every_name_round_trips_and_is_plain_text(raw: bytes) -> None:
    recorded = untrusted.name(raw)
    assert untrusted.name_bytes(recorded) == raw
    assert untrusted.name(os.fsdecode(raw)) == recorded  # as os hands it over: the same
    recorded.encode()  # no lone surrogate: it can be stored, signed and sent
    assert not any(ord(c) < 0x20 or 0x7F <= ord(c) <= 0x9F for c in recorded)


def test_names_stay_readable_where_they_can() -> None:
    assert untrusted.name("report.txt") == "report.txt"
    assert untrusted.name("résumé ✓.md") == "résumé ✓.md"
    assert untrusted.name("50%") == "50%25"
    assert untrusted.name(b"a\nb\x1b[0m\xff") == "a%0Ab%1B[0m%FF"


@given(JSONISH)
def test_json_safe_values_always_encode_as_rfc8785(value: object) -> None:
    safe = untrusted.json_safe(untrusted.scrub(value))
    rfc8785.dumps(safe)
    assert json.loads(json.dumps(safe)) == safe


def test_large_integers_become_decimal_strings_and_bools_stay() -> None:
    assert untrusted.json_safe({"a": [2**53 - 1, 2**53, -(2**60), True]}) == {
        "a": [2**53 - 1, "9007199254740992", str(-(2**60)), True]}
    assert untrusted.saturate({"size": 2**70, "n": -(2**70), "ok": False}) == {
        "size": 2**63 - 1, "n": -(2**63), "ok": False}


@given(st.text())
def test_printable_text_carries_no_control_character_but_newline_and_tab(text: str) -> None:
    shown = untrusted.printable(text)
    assert all(c in "\n\t" or (ord(c) >= 0x20 and not 0x7F <= ord(c) <= 0x9F) for c in shown)
    assert "\n" not in untrusted.printable_line(text)


def test_text_with_undecodable_bytes_is_escaped_not_lost() -> None:
    quoted = "cannot open " + os.fsdecode(b"/w/\xff")
    assert untrusted.text(quoted) == "cannot open /w/\\udcff"
    assert untrusted.text("plain") == "plain"
