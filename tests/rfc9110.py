"""An independent reading of RFC 9110 §13 (conditional requests) and §14 (ranges).

The property tests compare the gateway against this module. It shares no code with
gateway/http_range.py on purpose: two readings of the RFC, not one implementation
checked against itself. Where the RFC leaves a choice, every permitted reading is
returned and a response that matches any of them passes:

- a date that only a lenient parser accepts (lower case, one-digit fields, runs of
  whitespace, a leap second) may be read or ignored ("recipients are encouraged to be
  robust in parsing timestamps", §5.6.7);
- an If-Match or If-None-Match value that is not a valid entity-tag list may be
  ignored, match nothing, or match the current entity-tag if it appears in it (the RFC
  says nothing of invalid lists);
- OWS right after `bytes=` (outside the list grammar of §5.6.1.2) may be tolerated.

The gateway's documented policies (GATEWAY_MAX_RANGES, coalescing, ascending parts)
are not RFC rules; the tests check them separately.
"""

from __future__ import annotations

import calendar
import itertools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime

Span = tuple[int, int]
"""An inclusive byte range: first and last offset."""

# §14.6 lets a server coalesce ranges separated by a gap "smaller than the overhead of
# sending multiple parts". A part header (boundary, Content-Type, Content-Range) is
# well under this many bytes for any media type the gateway serves.
MAX_COALESCED_GAP = 256


@dataclass(frozen=True, slots=True)
class Resource:
    """The selected representation: its length and validators."""

    size: int
    etag: str  # a strong entity-tag, quotes included
    last_modified: int  # seconds since the epoch


@dataclass(frozen=True, slots=True)
class Reading:
    """One response the RFC permits: a status and, for 206, what was asked for."""

    status: int
    spans: tuple[Span, ...] = ()  # the satisfiable ranges, clamped, in request order
    specs: int = 0  # how many range-specs the Range field held


# --- field values (§5.5, §5.6) ------------------------------------------------------

def combine(lines: Iterable[tuple[str, str]]) -> dict[str, str]:
    """Field lines → one value per field name, lowercased (§5.3: joined with ", ").

    Leading and trailing SP and HTAB are not part of a field value (§5.5), before or
    after the join.
    """
    values: dict[str, list[str]] = {}
    for name, value in lines:
        values.setdefault(name.lower(), []).append(value.strip(" \t"))
    return {name: ", ".join(parts).strip(" \t") for name, parts in values.items()}


# --- HTTP-date (§5.6.7) -----------------------------------------------------------

_DAY = "(?:Mon|Tue|Wed|Thu|Fri|Sat|Sun)"
_DAY_L = "(?:Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday)"
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov",
           "Dec")
_MONTH = f"({'|'.join(_MONTHS)})"


def _date_forms(sp: str, d2: str) -> tuple[re.Pattern[str], re.Pattern[str], re.Pattern[str]]:
    time = f"({d2}):({d2}):({d2})"
    imf = rf"{_DAY},{sp}({d2}){sp}{_MONTH}{sp}([0-9]{{4}}){sp}{time}{sp}GMT"
    rfc850 = rf"{_DAY_L},{sp}({d2})-{_MONTH}-([0-9]{{2}}){sp}{time}{sp}GMT"
    asctime = rf"{_DAY}{sp}{_MONTH}{sp}({d2}|{sp}[0-9]){sp}{time}{sp}([0-9]{{4}})"
    flags = re.ASCII if sp == " " else re.ASCII | re.IGNORECASE
    return re.compile(imf, flags), re.compile(rfc850, flags), re.compile(asctime, flags)


_STRICT = _date_forms(" ", "[0-9]{2}")
_LENIENT = _date_forms("[ \t]+", "[0-9]{1,2}")


def _two_digit_years(yy: int, now: datetime) -> list[int]:
    """§5.6.7: a year more than 50 years ahead is the most recent past one instead."""
    year = now.year // 100 * 100 + yy
    if year > now.year + 51:
        return [year - 100]
    if year >= now.year + 49:
        return [year, year - 100]  # "more than 50 years" at year granularity: either
    return [year]


def _timestamps(value: str, forms: tuple[re.Pattern[str], ...],
                now: datetime) -> list[tuple[int, bool]]:
    """(timestamp, is a leap second) for each reading of one of the three forms."""
    imf, rfc850, asctime = forms
    if match := imf.fullmatch(value):
        day, month, year, hh, mm, ss = match.groups()
        years = [int(year)]
    elif match := rfc850.fullmatch(value):
        day, month, yy, hh, mm, ss = match.groups()
        years = _two_digit_years(int(yy), now)
    elif match := asctime.fullmatch(value):
        month, day, hh, mm, ss, year = match.groups()
        years = [int(year)]
    else:
        return []
    fields = (day.strip(" \t"), hh, mm, ss)
    day_n, hour, minute, second = (int(f) for f in fields)
    number = [m.lower() for m in _MONTHS].index(month.lower()) + 1
    stamps = []
    for year in years:
        if second > 60:
            continue
        try:
            # second 60 (a leap second) is in the grammar but not in datetime
            moment = datetime(year, number, day_n, hour, minute, min(second, 59), tzinfo=UTC)
        except ValueError:
            continue  # no such day or time
        stamps.append((calendar.timegm(moment.timetuple()) + (second == 60), second == 60))
    return stamps


def date_readings(value: str, now: datetime | None = None) -> list[int | None]:
    """The timestamps a recipient may read from a field value; None: ignore the field."""
    now = now or datetime.now(UTC)
    strict = _timestamps(value, _STRICT, now)
    if strict and not any(leap for _, leap in strict):
        return list(dict.fromkeys(stamp for stamp, _ in strict))
    lenient = _timestamps(value, _LENIENT, now)
    return [*dict.fromkeys(stamp for stamp, _ in lenient), None]


def format_date(timestamp: int, form: str) -> str:
    """Format a timestamp in one of the three forms, without the gateway's helpers."""
    moment = datetime.fromtimestamp(timestamp, UTC)
    day = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")[moment.weekday()]
    long_day = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday",
                "Sunday")[moment.weekday()]
    month = _MONTHS[moment.month - 1]
    clock = f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d}"
    if form == "imf":
        return f"{day}, {moment.day:02d} {month} {moment.year:04d} {clock} GMT"
    if form == "rfc850":
        return f"{long_day}, {moment.day:02d}-{month}-{moment.year % 100:02d} {clock} GMT"
    return f"{day} {month} {moment.day:2d} {clock} {moment.year:04d}"


# --- entity-tags (§8.8.3) -----------------------------------------------------------

_ETAG = r'(W/)?"([\x21\x23-\x7e\x80-\xff]*)"'
_ETAG_RE = re.compile(_ETAG)
_TAG_LIST = re.compile(rf"[ \t]*(?:{_ETAG})?(?:[ \t]*,(?:[ \t]*{_ETAG})?)*[ \t]*")

ANY = "*"
Tags = tuple[tuple[bool, str], ...]  # (weak, opaque-tag) pairs
TagReading = Tags | str | None  # None: the field is ignored; ANY: "*"


def tag_list_readings(value: str, current_etag: str) -> list[TagReading]:
    """Readings of an If-Match / If-None-Match value (`"*" / #entity-tag`)."""
    if value == ANY:
        return [ANY]
    if _TAG_LIST.fullmatch(value):
        return [tuple((m[1] is not None, m[2]) for m in _ETAG_RE.finditer(value))]
    readings: list[TagReading] = [None, ()]
    opaque = current_etag.strip('"')
    for match in re.finditer(re.escape(current_etag), value):
        weak = value[:match.start()].endswith("W/")
        readings.append(((weak, opaque),))
    return readings


def _tag_matches(tags: TagReading, etag: str, *, strong: bool) -> bool:
    if tags == ANY:
        return True  # the representation exists
    assert isinstance(tags, tuple)
    opaque = etag.strip('"')
    # §8.8.3.2: strong comparison needs both tags strong; weak compares opaque-tags.
    return any(tag == opaque and not (strong and weak) for weak, tag in tags)


# --- Range (§14.1, §14.2) -------------------------------------------------------------

_INT_RANGE = r"[0-9]+-[0-9]*"
_SUFFIX = r"-[0-9]+"
_SPEC = f"(?:{_INT_RANGE}|{_SUFFIX})"
# §5.6.1.2, the recipient's form: 1#element => *( "," OWS ) element *( OWS "," [ OWS element ] )
_RANGE_SET = re.compile(rf"(?:,[ \t]*)*{_SPEC}(?:[ \t]*,(?:[ \t]*{_SPEC})?)*", re.ASCII)
_RANGE_SET_OWS_FIRST = re.compile(rf"[ \t]+{_RANGE_SET.pattern}", re.ASCII)
_SPEC_RE = re.compile(r"([0-9]*)-([0-9]*)", re.ASCII)

IGNORED = "ignored"


def _number(digits: str) -> int:
    """Any number of digits (int() refuses more than 4,300)."""
    value = 0
    for start in range(0, len(digits), 1000):
        chunk = digits[start:start + 1000]
        value = value * 10 ** len(chunk) + int(chunk)
    return value


def range_readings(value: str, size: int, max_ranges: int) -> list[Reading | str]:
    """What a GET with this Range may answer, ignoring preconditions; IGNORED: 200."""
    unit, equals, range_set = value.partition("=")
    # §14.1: range units are case-insensitive tokens; anything but bytes is ignored.
    if not equals or not unit.isascii() or unit.lower() != "bytes":
        return [IGNORED]
    if _RANGE_SET.fullmatch(range_set):
        tolerant = False
    elif _RANGE_SET_OWS_FIRST.fullmatch(range_set):
        tolerant = True
    else:
        return [IGNORED]  # §14.2: an invalid ranges-specifier may be ignored
    specs: list[tuple[int | None, int | None]] = []
    for match in _SPEC_RE.finditer(range_set):
        first, last = match[1], match[2]
        if first:
            spec = (_number(first), _number(last) if last else None)
            if spec[1] is not None and spec[1] < spec[0]:
                return [IGNORED]  # §14.1.1: last-pos < first-pos makes it invalid
            specs.append(spec)
        else:
            specs.append((None, _number(last)))
    if len(specs) > max_ranges:
        return [IGNORED]  # the gateway's documented policy (GATEWAY_MAX_RANGES)
    reading = _satisfy(specs, size)
    return [reading, IGNORED] if tolerant else [reading]


def _satisfy(specs: list[tuple[int | None, int | None]], size: int) -> Reading | str:
    spans: list[Span] = []
    unrepresentable = False
    for first, last in specs:
        if first is None:
            assert last is not None
            if last > 0 and size == 0:
                unrepresentable = True  # satisfiable, but no Content-Range can say so
            elif last > 0:
                spans.append((max(size - last, 0), size - 1))
        elif first < size:
            spans.append((first, size - 1 if last is None else min(last, size - 1)))
    if spans:
        return Reading(206, tuple(spans), len(specs))
    # §14.1.1: the set is satisfiable if one range is; otherwise 416 (§15.5.17).
    return IGNORED if unrepresentable else Reading(416)


# --- If-Range (§13.1.5) ---------------------------------------------------------------

def if_range_readings(value: str, res: Resource, now: datetime | None = None) -> list[bool]:
    """Whether the If-Range condition may hold (False: send the whole representation)."""
    if match := _ETAG_RE.fullmatch(value):
        # A weak entity-tag never matches: §13.1.5 requires a strong comparison.
        return [match[1] is None and f'"{match[2]}"' == res.etag]
    if value.startswith('"') or value.startswith("W/"):
        return [False]
    return list(dict.fromkeys(date == res.last_modified for date in date_readings(value, now)))


# --- the evaluation order of §13.2.2 --------------------------------------------------

def readings(
    method: str, fields: Mapping[str, str], res: Resource, *, max_ranges: int,
    now: datetime | None = None,
) -> set[Reading]:
    """Every response RFC 9110 (and the gateway's range policy) allows for a GET or HEAD.

    `fields` holds combined values (see `combine`), lowercase names; absent fields are
    simply missing.
    """
    def dates(name: str) -> list[int | None]:
        return date_readings(fields[name], now) if name in fields else [None]

    def tags(name: str) -> list[TagReading]:
        return tag_list_readings(fields[name], res.etag) if name in fields else [None]

    ranges: list[Reading | str] = [IGNORED]
    if method == "GET" and "range" in fields:
        ranges = range_readings(fields["range"], res.size, max_ranges)
    if_range = if_range_readings(fields["if-range"], res, now) if "if-range" in fields else [True]
    out: set[Reading] = set()
    for if_match, ius, inm, ims, cond, rng in itertools.product(
        tags("if-match"), dates("if-unmodified-since"), tags("if-none-match"),
        dates("if-modified-since"), if_range, ranges,
    ):
        out.add(_decide(method, res, if_match, ius, inm, ims, cond, rng))
    return out


def _decide(
    method: str, res: Resource, if_match: TagReading, ius: int | None, inm: TagReading,
    ims: int | None, if_range: bool, rng: Reading | str,
) -> Reading:
    # 1. If-Match; 2. else If-Unmodified-Since (§13.1.4: ignored when If-Match is there).
    if if_match is not None:
        if not _tag_matches(if_match, res.etag, strong=True):
            return Reading(412)
    elif ius is not None and res.last_modified > ius:
        return Reading(412)
    # 3. If-None-Match (weak comparison); 4. else If-Modified-Since, GET and HEAD only.
    if inm is not None:
        if _tag_matches(inm, res.etag, strong=False):
            return Reading(304)
    elif ims is not None and res.last_modified <= ims:
        return Reading(304)
    # 5. Range, for GET only (§14.2), and only if If-Range holds (§13.1.5).
    if method != "GET" or not if_range or isinstance(rng, str):
        return Reading(200)
    return rng


# --- 206 content (§14.6, §15.3.7) -----------------------------------------------------

def _union(spans: Iterable[Span]) -> list[Span]:
    merged: list[Span] = []
    for first, last in sorted(spans):
        if merged and first <= merged[-1][1] + 1:
            merged[-1] = (merged[-1][0], max(merged[-1][1], last))
        else:
            merged.append((first, last))
    return merged


def partial_problems(parts: list[Span], multipart: bool, reading: Reading,
                     size: int) -> list[str]:
    """What is wrong with these 206 parts as an answer to `reading` (empty: nothing)."""
    problems = []
    if not parts:
        return ["a 206 with no part"]
    if multipart and reading.specs == 1:
        problems.append("multipart/byteranges for a single range (§15.3.7.2: MUST NOT)")
    if len(parts) > len(reading.spans):
        problems.append(f"{len(parts)} parts for {len(reading.spans)} satisfiable ranges")
    for first, last in parts:
        if not 0 <= first <= last < size:
            problems.append(f"part {first}-{last} outside 0-{size - 1}")
    asked = _union(reading.spans)
    if any(not any(p0 <= a and b <= p1 for p0, p1 in _union(parts)) for a, b in asked):
        problems.append(f"parts {parts} do not cover every requested range {reading.spans}")

    def requested(offset: int) -> bool:
        return any(a <= offset <= b for a, b in asked)

    for first, last in parts:
        if not (requested(first) and requested(last)):
            problems.append(f"part {first}-{last} starts or ends outside what was asked")
        inside = [(max(a, first), min(b, last)) for a, b in asked if a <= last and b >= first]
        for (_, end), (start, _) in itertools.pairwise(inside):
            if start - end - 1 >= MAX_COALESCED_GAP:
                problems.append(f"part {first}-{last} spans an unrequested gap of "
                                f"{start - end - 1} bytes")
    return problems


@dataclass(frozen=True, slots=True)
class BodyPart:
    headers: dict[str, str]  # lowercase names
    data: bytes


def parse_byteranges(body: bytes, boundary: str) -> list[BodyPart]:
    """Split a multipart/byteranges body (RFC 2046 §5.1.1, RFC 9110 §14.6).

    Each part's length is taken from its own Content-Range, so the bytes are never
    searched for the delimiter; anything malformed raises ValueError.
    """
    delimiter = b"--" + boundary.encode("ascii")
    start = body.find(delimiter)
    if start < 0 or (start and not body[:start].endswith(b"\r\n")):
        raise ValueError("no opening delimiter")
    position = start + len(delimiter)
    parts: list[BodyPart] = []
    while True:
        if body.startswith(b"--", position):
            return parts  # the close delimiter; an epilogue may follow
        if not body.startswith(b"\r\n", position):
            raise ValueError(f"delimiter not followed by CRLF at {position}")
        end = body.find(b"\r\n\r\n", position + 2)
        if end < 0:
            raise ValueError("part headers never end")
        headers = {}
        for line in body[position + 2:end].split(b"\r\n"):
            name, colon, value = line.decode("ascii").partition(":")
            if not colon:
                raise ValueError(f"bad part header line {line!r}")
            headers[name.strip().lower()] = value.strip()
        first, last, _ = content_range(headers.get("content-range", ""))
        data_start = end + 4
        data = body[data_start:data_start + last - first + 1]
        position = data_start + len(data)
        if not body.startswith(b"\r\n" + delimiter, position):
            raise ValueError(f"part {first}-{last} not followed by a delimiter")
        position += 2 + len(delimiter)
        parts.append(BodyPart(headers, data))


_CONTENT_RANGE = re.compile(r"bytes ([0-9]+)-([0-9]+)/([0-9]+)", re.ASCII)


def content_range(value: str) -> tuple[int, int, int]:
    """`bytes first-last/complete-length` (§14.4) → the three numbers, or ValueError."""
    match = _CONTENT_RANGE.fullmatch(value)
    if not match:
        raise ValueError(f"not a byte-range Content-Range: {value!r}")
    first, last, size = (int(group) for group in match.groups())
    if last < first or last >= size:
        raise ValueError(f"invalid Content-Range {value!r} (§14.4)")
    return first, last, size
