"""gateway/http_range.py against an independent reading of RFC 9110 (tests/rfc9110.py).

For any combination of Range, If-Range, If-Match, If-None-Match, If-Modified-Since and
If-Unmodified-Since values (valid, invalid, huge, repeated, non-ASCII, garbage), the
decision is one RFC 9110 permits, and the gateway's range policy holds.
"""

from __future__ import annotations

import itertools
from typing import Any

from hypothesis import event, given
from hypothesis import strategies as st

from gateway.http_range import (
    COALESCE_GAP,
    ByteRange,
    Conditions,
    Outcome,
    Representation,
    evaluate,
    format_http_date,
    multipart_body,
    parse_http_date,
    parse_range,
)
from tests.header_strategies import field_lines, garbage, http_dates, property_settings
from tests.rfc9110 import (
    Resource,
    combine,
    date_readings,
    format_date,
    parse_byteranges,
    partial_problems,
    readings,
)

STATUS = {Outcome.FULL: 200, Outcome.PARTIAL: 206, Outcome.MULTIPART: 206,
          Outcome.NOT_MODIFIED: 304, Outcome.PRECONDITION_FAILED: 412,
          Outcome.NOT_SATISFIABLE: 416}
# Up to S3's largest object (5 TiB): big enough for positions beyond 32 and 40 bits.
SIZES = st.one_of(st.sampled_from([0, 1, 2, 80, 81, 10_000, 5 * 2**40]),
                  st.integers(0, 100_000))
LAST_MODIFIED = st.one_of(st.sampled_from([0, 784_111_777, 1_790_000_000]),
                          st.integers(0, 253_402_300_799))
ETAGS = st.sampled_from(['"abc"', '"5f1e-3a0"', '"d41d8cd98f00b204e9800998ecf8427e"'])


def resources() -> st.SearchStrategy[Resource]:
    return st.builds(Resource, size=SIZES, etag=ETAGS, last_modified=LAST_MODIFIED)


def conditions_of(fields: dict[str, str]) -> Conditions:
    return Conditions(
        range=fields.get("range"), if_range=fields.get("if-range"),
        if_match=fields.get("if-match"), if_none_match=fields.get("if-none-match"),
        if_modified_since=fields.get("if-modified-since"),
        if_unmodified_since=fields.get("if-unmodified-since"),
    )


@property_settings(1000)
@given(data=st.data(), method=st.sampled_from(["GET", "GET", "GET", "HEAD"]),
       max_ranges=st.sampled_from([1, 2, 16, 16, 1000]))
def test_every_decision_is_one_rfc9110_allows(data: Any, method: str, max_ranges: int) -> None:
    res = data.draw(resources(), label="resource")
    check_decision(method, data.draw(field_lines(res, wire=False), label="field lines"), res,
                   max_ranges)


@property_settings(600)
@given(data=st.data(), max_ranges=st.sampled_from([1, 16, 16, 1000]))
def test_range_alone(data: Any, max_ranges: int) -> None:
    """The common request, Range and nothing else, gets more examples of its own."""
    res = data.draw(resources(), label="resource")
    check_decision("GET", data.draw(field_lines(res, wire=False, only=("range",)),
                                    label="field lines"), res, max_ranges)


def check_decision(method: str, lines: list[tuple[str, str]], res: Resource,
                   max_ranges: int) -> None:
    fields = combine(lines)
    decision = evaluate(method, conditions_of(fields),
                        Representation(res.size, res.etag, res.last_modified),
                        max_ranges=max_ranges)
    allowed = readings(method, fields, res, max_ranges=max_ranges)
    status = STATUS[decision.outcome]
    event(f"{decision.outcome.name} ({status})")  # see --hypothesis-show-statistics
    candidates = [r for r in allowed if r.status == status]
    assert candidates, f"{status} where RFC 9110 allows {sorted(r.status for r in allowed)}"
    if status != 206:
        assert decision.ranges == ()
        return
    parts = [(r.start, r.end) for r in decision.ranges]
    multipart = decision.outcome is Outcome.MULTIPART
    problems = [partial_problems(parts, multipart, r, res.size) for r in candidates]
    assert any(not p for p in problems), problems
    # The gateway's documented policy (README): at most max_ranges parts, ascending,
    # overlapping and close ones (under COALESCE_GAP bytes apart) merged.
    assert len(parts) <= max_ranges
    assert all(b[0] - a[1] - 1 > COALESCE_GAP for a, b in itertools.pairwise(parts))


@property_settings(1500)
@given(value=st.one_of(http_dates(784_111_777, wire=False),
                       http_dates(1_790_000_000, wire=False), garbage(wire=False)))
def test_http_dates_are_read_as_rfc9110_says(value: str) -> None:
    # Only the three forms of §5.6.7 are dates; anything else means "ignore the field".
    assert parse_http_date(value) in date_readings(value)


@property_settings(500)
@given(timestamp=st.integers(0, 253_402_300_799))
def test_the_gateway_sends_imf_fixdate_and_reads_it_back(timestamp: int) -> None:
    sent = format_http_date(timestamp)
    assert sent == format_date(timestamp, "imf")
    assert parse_http_date(sent) == timestamp


@property_settings(1000)
@given(value=garbage(wire=False, max_size=200) | st.text("bytes=0123456789-, \t", max_size=200),
       max_ranges=st.integers(1, 50))
def test_parse_range_never_raises_and_respects_the_cap(value: str, max_ranges: int) -> None:
    specs = parse_range(value, max_ranges=max_ranges)
    assert specs is None or 1 <= len(specs) <= max_ranges


@st.composite
def disjoint_ranges(draw: st.DrawFn) -> tuple[int, tuple[ByteRange, ...]]:
    size = draw(st.integers(1, 5_000))
    cuts = sorted(draw(st.sets(st.integers(0, size - 1), min_size=1, max_size=24)))
    ranges = tuple(ByteRange(a, b) for a, b in zip(cuts[::2], cuts[1::2], strict=False))
    return size, ranges or (ByteRange(cuts[0], cuts[0]),)


@property_settings(300)
@given(layout=disjoint_ranges(), boundary=st.text("0123456789abcdef", min_size=1, max_size=40))
def test_multipart_layout_parses_back_with_the_promised_length(
    layout: tuple[int, tuple[ByteRange, ...]], boundary: str
) -> None:
    size, ranges = layout
    content = bytes(i * 7 % 251 for i in range(size))
    body_layout = multipart_body(ranges, size, "audio/mpeg", boundary)
    body = b"".join(head + content[r.start:r.end + 1] for head, r in body_layout.parts)
    body += body_layout.closing
    assert body_layout.content_length == len(body)
    assert body_layout.content_type == f"multipart/byteranges; boundary={boundary}"
    parts = parse_byteranges(body, boundary)
    assert [(p.headers["content-range"], p.headers["content-type"], p.data) for p in parts] == [
        (f"bytes {r.start}-{r.end}/{size}", "audio/mpeg", content[r.start:r.end + 1])
        for r in ranges
    ]
