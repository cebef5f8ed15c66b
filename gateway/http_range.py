"""RFC 9110 range requests (§14) and conditional requests (§13), as pure functions.

Nothing here does I/O or knows aiohttp: the handler collects the request's
header values into `Conditions`, describes the stored object as a
`Representation`, and gets back a `Decision` naming one `Outcome`.
"""

from __future__ import annotations

import calendar
import functools
import re
from dataclasses import dataclass
from datetime import datetime
from email.utils import formatdate
from enum import Enum

# Two ranges closer than this are sent as one: a part header costs about as much
# (RFC 9110 §14.2 lets a server coalesce ranges "separated by a gap that is
# smaller than the overhead of sending multiple parts").
COALESCE_GAP = 80
# Numbers longer than this exceed any file; they are not converted (Python limits
# int() on huge strings, and a 4,000-digit position means "past the end" anyway).
_MAX_DIGITS = 18
_HUGE = 10**19

_INT_RANGE = re.compile(r"([0-9]+)-([0-9]*)")
_SUFFIX_RANGE = re.compile(r"-([0-9]+)")
_ENTITY_TAG = re.compile(r'[ \t]*(W/)?"([\x21\x23-\x7e\x80-\xff]*)"[ \t]*')  # OWS, not \s
_DATE_CHARS = re.compile(r"[A-Za-z0-9 ,:-]+")  # all that the three date forms use
_DATE_FORMATS = (
    "%a, %d %b %Y %H:%M:%S GMT",  # IMF-fixdate
    "%A, %d-%b-%y %H:%M:%S GMT",  # obsolete RFC 850 form
    "%a %b %d %H:%M:%S %Y",  # obsolete asctime() form
)


class Outcome(Enum):
    """What the server answers."""

    FULL = 200
    PARTIAL = 206
    MULTIPART = 2060
    NOT_MODIFIED = 304
    PRECONDITION_FAILED = 412
    NOT_SATISFIABLE = 416


@dataclass(frozen=True, slots=True)
class ByteRange:
    """An inclusive, satisfiable byte range of a representation."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


@dataclass(frozen=True, slots=True)
class Representation:
    """The validators and size of the selected representation."""

    size: int
    etag: str  # a strong entity-tag, quotes included
    last_modified: int  # seconds since the epoch

    @property
    def last_modified_http(self) -> str:
        return format_http_date(self.last_modified)


@dataclass(frozen=True, slots=True)
class Conditions:
    """The request's range and precondition fields (combined values, None if absent)."""

    range: str | None = None
    if_range: str | None = None
    if_match: str | None = None
    if_none_match: str | None = None
    if_modified_since: str | None = None
    if_unmodified_since: str | None = None


@dataclass(frozen=True, slots=True)
class Decision:
    outcome: Outcome
    ranges: tuple[ByteRange, ...] = ()


FULL = Decision(Outcome.FULL)


@functools.lru_cache(maxsize=1024)
def format_http_date(timestamp: float) -> str:
    """IMF-fixdate, the only form a sender may generate (RFC 9110 §5.6.7)."""
    return formatdate(timestamp, usegmt=True)


def parse_http_date(value: str) -> int | None:
    """Parse any of the three HTTP-date forms a recipient must accept; None if invalid."""
    text = value.strip(" \t")
    if not _DATE_CHARS.fullmatch(text):
        # strptime would accept Unicode digits and spaces; an HTTP-date is ASCII.
        return None
    for index, fmt in enumerate(_DATE_FORMATS):
        try:
            parsed = datetime.strptime(text, fmt)
        except ValueError:
            continue
        if index == 1:
            # RFC 9110 §5.6.7: a two-digit year is in this century unless that is more
            # than 50 years ahead; then it is the most recent past year with those digits
            # (strptime's own pivot would put 69-99 in the 1900s whatever the date).
            this_year = datetime.now().year
            year = this_year // 100 * 100 + parsed.year % 100
            try:
                parsed = parsed.replace(year=year - 100 if year > this_year + 50 else year)
            except ValueError:
                return None  # 29 February of a year that has none
        return calendar.timegm(parsed.timetuple())
    return None


def _position(digits: str) -> int:
    digits = digits.lstrip("0") or "0"
    return int(digits) if len(digits) <= _MAX_DIGITS else _HUGE


def _is_less(digits: str, other: str) -> bool:
    """Compare two digit strings as numbers, whatever their length."""
    digits, other = digits.lstrip("0"), other.lstrip("0")
    return (len(digits), digits) < (len(other), other)


RangeSpec = tuple[int | None, int | None]
"""(first, last) for an int-range (last None when open), (None, length) for a suffix."""


def parse_range(value: str, *, max_ranges: int) -> list[RangeSpec] | None:
    """Parse a Range field value; None when it must be ignored.

    Ignored (RFC 9110 §14.2): another unit, invalid syntax, or more ranges than
    `max_ranges` (a server may ignore such a set instead of doing the work).
    """
    unit, equals, range_set = value.partition("=")
    if not equals or unit.lower() != "bytes":
        return None
    specs: list[RangeSpec] = []
    for element in range_set.split(","):
        item = element.strip(" \t")
        if not item:
            continue  # the #rule allows empty list elements (RFC 9110 §5.6.1)
        if len(specs) == max_ranges:
            return None
        if match := _INT_RANGE.fullmatch(item):
            if match[2] and _is_less(match[2], match[1]):
                return None  # last-pos < first-pos: invalid (§14.1.1), however long
            specs.append((_position(match[1]), _position(match[2]) if match[2] else None))
        elif match := _SUFFIX_RANGE.fullmatch(item):
            specs.append((None, _position(match[1])))
        else:
            return None
    return specs or None


def resolve_ranges(specs: list[RangeSpec], size: int) -> list[ByteRange]:
    """The satisfiable ranges, clamped to the size, coalesced and in ascending order."""
    ranges: list[ByteRange] = []
    for first, last in specs:
        if first is None:
            assert last is not None
            if last == 0 or size == 0:
                continue
            ranges.append(ByteRange(max(size - last, 0), size - 1))
        elif first < size:
            ranges.append(ByteRange(first, size - 1 if last is None else min(last, size - 1)))
    ranges.sort(key=lambda r: r.start)
    merged: list[ByteRange] = []
    for rng in ranges:
        if merged and rng.start <= merged[-1].end + 1 + COALESCE_GAP:
            previous = merged[-1]
            merged[-1] = ByteRange(previous.start, max(previous.end, rng.end))
        else:
            merged.append(rng)
    return merged


def _entity_tags(value: str) -> list[tuple[bool, str]] | None:
    """Parse `*` (None) or a list of entity-tags as (weak, opaque-tag) pairs."""
    if value.strip() == "*":
        return None
    tags: list[tuple[bool, str]] = []
    for element in value.split(","):
        if match := _ENTITY_TAG.fullmatch(element):
            tags.append((match[1] is not None, f'"{match[2]}"'))
    return tags


def _etag_matches(field_value: str, etag: str, *, weak: bool) -> bool:
    tags = _entity_tags(field_value)
    if tags is None:
        return True  # "*" matches any current representation
    # Strong comparison needs both tags strong; weak compares opaque-tags only (§8.8.3.2).
    return any(tag == etag and (weak or not is_weak) for is_weak, tag in tags)


def _if_range_holds(value: str, rep: Representation) -> bool:
    text = value.strip(" \t")
    if text.startswith(('"', "W/")):
        match = _ENTITY_TAG.fullmatch(text)
        # §13.1.5: an entity-tag must match strongly; a weak one never does.
        return match is not None and match[1] is None and f'"{match[2]}"' == rep.etag
    date = parse_http_date(text)
    return date is not None and date == rep.last_modified


def evaluate(
    method: str, conditions: Conditions, rep: Representation, *, max_ranges: int
) -> Decision:
    """Decide the response for a GET or HEAD of `rep`, in RFC 9110 §13.2.2 order."""
    # Step 1-2: If-Match, else If-Unmodified-Since.
    if conditions.if_match is not None:
        if not _etag_matches(conditions.if_match, rep.etag, weak=False):
            return Decision(Outcome.PRECONDITION_FAILED)
    elif conditions.if_unmodified_since is not None:
        date = parse_http_date(conditions.if_unmodified_since)
        if date is not None and rep.last_modified > date:
            return Decision(Outcome.PRECONDITION_FAILED)
    # Step 3-4: If-None-Match, else If-Modified-Since (GET and HEAD only).
    if conditions.if_none_match is not None:
        if _etag_matches(conditions.if_none_match, rep.etag, weak=True):
            if method in ("GET", "HEAD"):
                return Decision(Outcome.NOT_MODIFIED)
            return Decision(Outcome.PRECONDITION_FAILED)
    elif conditions.if_modified_since is not None and method in ("GET", "HEAD"):
        date = parse_http_date(conditions.if_modified_since)
        if date is not None and rep.last_modified <= date:
            return Decision(Outcome.NOT_MODIFIED)
    # Step 5: Range, for GET only (§14.2: ignored with any other method), under If-Range.
    if method != "GET" or conditions.range is None:
        return FULL
    if conditions.if_range is not None and not _if_range_holds(conditions.if_range, rep):
        return FULL
    specs = parse_range(conditions.range, max_ranges=max_ranges)
    if specs is None:
        return FULL
    if rep.size == 0:
        # Only a non-empty suffix range is satisfiable on an empty representation,
        # and Content-Range cannot describe it: send the (empty) whole instead.
        if any(first is None and last for first, last in specs):
            return FULL
        return Decision(Outcome.NOT_SATISFIABLE)
    ranges = resolve_ranges(specs, rep.size)
    if not ranges:
        return Decision(Outcome.NOT_SATISFIABLE)
    if len(ranges) == 1:
        return Decision(Outcome.PARTIAL, (ranges[0],))
    return Decision(Outcome.MULTIPART, tuple(ranges))


@dataclass(frozen=True, slots=True)
class MultipartBody:
    """The layout of a multipart/byteranges body (RFC 9110 §14.6)."""

    boundary: str
    parts: tuple[tuple[bytes, ByteRange], ...]  # each part's header block, then its bytes
    closing: bytes

    @property
    def content_type(self) -> str:
        return f"multipart/byteranges; boundary={self.boundary}"

    @property
    def content_length(self) -> int:
        return sum(len(head) + rng.length for head, rng in self.parts) + len(self.closing)


def multipart_body(
    ranges: tuple[ByteRange, ...], size: int, content_type: str, boundary: str
) -> MultipartBody:
    """Lay out the parts; the first delimiter needs no leading CRLF (RFC 2046 §5.1.1)."""
    parts = []
    for index, rng in enumerate(ranges):
        head = (
            f"--{boundary}\r\n"
            f"Content-Type: {content_type}\r\n"
            f"Content-Range: {rng.content_range(size)}\r\n\r\n"
        ).encode("ascii")
        parts.append((head if index == 0 else b"\r\n" + head, rng))
    return MultipartBody(boundary, tuple(parts), f"\r\n--{boundary}--\r\n".encode("ascii"))
