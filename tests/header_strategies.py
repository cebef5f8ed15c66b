"""Hypothesis strategies: hostile Range and conditional header values.

Valid values near the edges (offsets around the end of the file, the current
validators, dates one second either side), values that are almost valid (lower
case, tabs, lookalike digits and spaces, leading zeros, numbers with thousands of
digits) and plain garbage. `wire=True` keeps to what may travel in an HTTP/1.1 field
value (no control characters but HTAB); non-ASCII text goes out as UTF-8 obs-text.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st

from tests.rfc9110 import Resource, format_date


def property_settings(max_examples: int) -> settings:
    """Bounded, reproducible runs: the same examples on every machine, no example
    database, no per-example deadline (test machines are shared and noisy)."""
    return settings(max_examples=max_examples, derandomize=True, deadline=None,
                    database=None, suppress_health_check=[HealthCheck.too_slow])


FIELD_NAMES = {
    "range": "Range",
    "if-range": "If-Range",
    "if-match": "If-Match",
    "if-none-match": "If-None-Match",
    "if-modified-since": "If-Modified-Since",
    "if-unmodified-since": "If-Unmodified-Since",
}
_YEAR_1, _YEAR_9999 = -62_135_596_800, 253_402_300_799


def garbage(wire: bool, max_size: int = 30) -> st.SearchStrategy[str]:
    """Any text; on the wire, without the control characters a field value cannot hold."""
    if wire:
        chars = st.characters(exclude_categories=["Cc", "Cs"]) | st.just("\t")
    else:
        chars = st.characters(exclude_categories=["Cs"])
    return st.text(chars, max_size=max_size)


def positions(size: int) -> st.SearchStrategy[str]:
    """A first-pos, last-pos or suffix-length: near the file, huge, zero-padded."""
    numbers = st.one_of(
        st.integers(0, size + 2),
        st.sampled_from([0, 1, size - 1, size, size + 1]),
        st.integers(0, 10**40),
        st.integers(10**18 - 2, 10**19 + 2),  # around the 18-digit and 64-bit limits
    ).map(str)
    return st.one_of(
        numbers, numbers, numbers,
        st.tuples(st.integers(1, 30), numbers).map(lambda z: "0" * z[0] + z[1]),
        st.builds(digits, _LONG, st.integers(0, 2**32)),
    )


# Lengths around 64-bit values, and more digits than int() converts by default (4,300).
_LONG = st.sampled_from([18, 19, 19, 20, 20, 21, 40, 4_400])


def digits(length: int, seed: int) -> str:
    """A number of exactly `length` digits (no leading zero), cheaply."""
    rng = random.Random(seed)
    return rng.choice("123456789") + "".join(rng.choices("0123456789", k=length - 1))


def long_pairs() -> st.SearchStrategy[str]:
    """`first-last` with both numbers long and of similar length, in either order."""
    return st.builds(lambda n, extra, a, b: f"{digits(n, a)}-{digits(n + extra, b)}",
                     _LONG, st.sampled_from([0, 0, 1, -1]), st.integers(0, 2**32),
                     st.integers(0, 2**32))


def range_specs(size: int, wire: bool) -> st.SearchStrategy[str]:
    pos = positions(size)
    valid = st.one_of(
        st.tuples(pos, pos).map(lambda p: f"{p[0]}-{p[1]}"),
        st.tuples(pos, pos).map(lambda p: f"{min(p, key=_num)}-{max(p, key=_num)}"),
        pos.map(lambda p: f"{p}-"),
        pos.map(lambda p: f"-{p}"),
    )
    hostile = st.one_of(
        st.sampled_from(["", " ", "-", "a-b", "1-2-3", "0x10-20", "+1-2", "1 - 2", "--1",
                         "\u0663-4", "1-\uff12", "1e3-", "0-1;x", "=0-1", "*"]),
        garbage(wire, 8),
    )
    return st.one_of(valid, valid, valid, valid, hostile)


def _num(digits: str) -> tuple[int, str]:
    stripped = digits.lstrip("0")
    return len(stripped), stripped


_SEPARATORS = [",", ",", ", ", " ,", ",\t", " , ", ",,", ", ,"]


@st.composite
def _joined(draw: st.DrawFn, items: st.SearchStrategy[str], min_size: int,
            max_size: int) -> str:
    parts = draw(st.lists(items, min_size=min_size, max_size=max_size))
    text = ""
    for index, part in enumerate(parts):
        if index:
            text += draw(st.sampled_from(_SEPARATORS))
        text += part
    return text


def tiny_ranges(count: int, size: int, seed: int, spread: bool) -> str:
    """`count` one-byte ranges, unsorted, overlapping, or spread `COALESCE_GAP` apart."""
    rng = random.Random(seed)
    if spread:
        offsets = [(i * 97) % max(size, 1) for i in range(count)]
    else:
        offsets = [rng.randrange(max(size // 8, 1)) for _ in range(count)]
    rng.shuffle(offsets)
    return "bytes=" + ",".join(f"{n}-{n}" for n in offsets)


def range_values(size: int, wire: bool) -> st.SearchStrategy[str]:
    unit = st.sampled_from(["bytes"] * 6 + ["BYTES", "Bytes", "items", "", "bytes ", "byte",
                                            "bytesX", "none", "b\u0443tes"])
    equals = st.sampled_from(["="] * 8 + ["", " =", "==", "= ", "=,", "=, "])
    extreme = _joined(long_pairs() | long_pairs() | range_specs(size, wire), 1, 3)
    offset = st.integers(0, size + 1)
    in_file = st.one_of(
        st.tuples(offset, offset).map(lambda p: f"{min(p)}-{max(p)}"),
        offset.map(lambda p: f"{p}-"),
        offset.map(lambda p: f"-{p}"),
    )
    return st.one_of(
        # valid, mostly satisfiable, up to one more than GATEWAY_MAX_RANGES
        _joined(in_file, 2, 17).map(lambda s: "bytes=" + s),
        # valid syntax, extreme numbers (reversed pairs are invalid, §14.1.1)
        extreme.map(lambda s: "bytes=" + s), extreme.map(lambda s: "bytes=" + s),
        st.tuples(unit, equals, _joined(range_specs(size, wire), 0, 6)).map("".join),
        st.tuples(unit, equals, _joined(range_specs(size, wire), 0, 20)).map("".join),
        # many tiny ranges: usually more than GATEWAY_MAX_RANGES
        st.builds(tiny_ranges, st.integers(2, 400), st.just(size), st.integers(0, 2**16),
                  st.booleans()),
        garbage(wire),
    )


def _lookalike_spaces(wire: bool) -> st.SearchStrategy[str]:
    """Whitespace that is not OWS (SP, HTAB): Unicode spaces, and control characters
    where they cannot travel anyway."""
    spaces = ["\u00a0", "\u2003", "\u3000", "\u2028"]
    return st.sampled_from(spaces if wire else [*spaces, "\x0b", "\x0c", "\x1c", "\x85"])


def entity_tags(etag: str, wire: bool) -> st.SearchStrategy[str]:
    opaque = etag.strip('"')
    padded = st.tuples(_lookalike_spaces(wire), st.sampled_from([etag, f"W/{etag}"]),
                       st.sampled_from(["before", "after", "inside"]))
    return st.one_of(
        st.just(etag),
        st.just(f"W/{etag}"),
        padded.map(lambda p: p[0] + p[1] if p[2] == "before" else
                   p[1] + p[0] if p[2] == "after" else p[1].replace('"', p[0] + '"', 1)),
        st.sampled_from(['"x"', '""', '"a,b"', 'W/"x"', opaque, f'"{opaque}', f'{etag}x',
                         f'"{opaque}x"', f'w/{etag}', f'W/ {etag}', f'"{opaque.upper()}"',
                         '"\u00e9"', '"\u20ac"']),
        garbage(wire, 12),
    )


def tag_lists(etag: str, wire: bool) -> st.SearchStrategy[str]:
    return st.one_of(
        st.sampled_from(["*", "", " * ", "*, *", f"*, {etag}"]),
        _joined(entity_tags(etag, wire), 1, 5),
        garbage(wire),
    )


_ARABIC_DIGITS = str.maketrans("0123456789", "\u0660\u0661\u0662\u0663\u0664\u0665\u0666"
                               "\u0667\u0668\u0669")
_FULLWIDTH_DIGITS = str.maketrans("0123456789", "\uff10\uff11\uff12\uff13\uff14\uff15"
                                  "\uff16\uff17\uff18\uff19")
_MUTATIONS: dict[str, Callable[[str], str]] = {
    "none": lambda t: t,
    "lower": str.lower,
    "upper": str.upper,
    "double space": lambda t: t.replace(" ", "  "),
    "tab": lambda t: t.replace(" ", "\t", 1),
    "no-break space": lambda t: t.replace(" ", "\u00a0", 1),
    "em space": lambda t: t.replace(" ", "\u2003", 1),
    "arabic digits": lambda t: t.translate(_ARABIC_DIGITS),
    "fullwidth digits": lambda t: t.translate(_FULLWIDTH_DIGITS),
    "long s": lambda t: t.replace("S", "\u017f", 1).replace("s", "\u017f", 1),
    "one-digit day": lambda t: re.sub(r"\b0([0-9])\b", r"\1", t, count=1),
    "leap second": lambda t: re.sub(r":[0-9]{2}( |$)", r":60\1", t, count=1),
    "second 61": lambda t: re.sub(r":[0-9]{2}( |$)", r":61\1", t, count=1),
    "hour 24": lambda t: re.sub(r"\b[0-9]{2}:", "24:", t, count=1),
    "a list": lambda t: f"{t}, {t}",
    "trailing junk": lambda t: f"{t} x",
    "no zone": lambda t: t.removesuffix(" GMT"),
    "other zone": lambda t: t.replace("GMT", "UTC"),
    "30 February": lambda t: re.sub(r"\b[0-9]{2} [A-Z][a-z]{2} ", "30 Feb ", t, count=1),
}


def http_dates(last_modified: int, wire: bool) -> st.SearchStrategy[str]:
    stamps = st.one_of(
        st.sampled_from([last_modified + d for d in (-86_400, -1, 0, 0, 1, 86_400)]),
        st.integers(_YEAR_1, _YEAR_9999),
        st.integers(-(2**31), 2**31),
    ).map(lambda t: min(max(t, _YEAR_1), _YEAR_9999))  # what a date can spell
    forms = st.sampled_from(["imf", "imf", "rfc850", "asctime"])
    mutations = st.sampled_from(["none"] * 6 + list(_MUTATIONS))
    dated = st.tuples(stamps, forms, mutations).map(
        lambda d: _MUTATIONS[d[2]](format_date(d[0], d[1])))
    return st.one_of(dated, dated, garbage(wire))


def field_values(name: str, res: Resource, wire: bool) -> st.SearchStrategy[str]:
    if name == "range":
        return range_values(res.size, wire)
    if name == "if-range":
        return entity_tags(res.etag, wire) | http_dates(res.last_modified, wire)
    if name in ("if-match", "if-none-match"):
        return tag_lists(res.etag, wire)
    return http_dates(res.last_modified, wire)


@st.composite
def field_lines(draw: st.DrawFn, res: Resource, wire: bool,
                only: tuple[str, ...] = tuple(FIELD_NAMES)) -> list[tuple[str, str]]:
    """Header lines for some of the six fields (or of `only`), a few of them repeated."""
    lines: list[tuple[str, str]] = []
    for name, canonical in FIELD_NAMES.items():
        chance = 10 if only == (name,) else 8 if name == "range" else 2
        if name not in only or draw(st.integers(0, 9)) >= chance:
            continue
        for _ in range(draw(st.sampled_from([1, 1, 1, 1, 2]))):
            spelled = draw(st.sampled_from([canonical, canonical, name, canonical.upper()]))
            value = draw(field_values(name, res, wire))
            padding = draw(st.sampled_from(["", "", "", " ", "\t", "  "]))
            lines.append((spelled, padding + value + padding))
    return lines
