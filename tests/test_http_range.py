"""RFC 9110 §13 and §14 decisions, on their own (no I/O)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from gateway.http_range import (
    ByteRange,
    Conditions,
    Outcome,
    Representation,
    evaluate,
    format_http_date,
    multipart_body,
    parse_http_date,
    parse_range,
    resolve_ranges,
)

SIZE = 10_000
LAST_MODIFIED = 784_111_777  # Sun, 06 Nov 1994 08:49:37 GMT
REP = Representation(size=SIZE, etag='"abc"', last_modified=LAST_MODIFIED)
IMF = "Sun, 06 Nov 1994 08:49:37 GMT"
EARLIER = "Sun, 06 Nov 1994 08:49:36 GMT"
LATER = "Sun, 06 Nov 1994 08:49:38 GMT"


def decide(method: str = "GET", rep: Representation = REP, max_ranges: int = 16,
           **fields: str) -> tuple[Outcome, list[tuple[int, int]]]:
    decision = evaluate(method, Conditions(**fields), rep, max_ranges=max_ranges)
    return decision.outcome, [(r.start, r.end) for r in decision.ranges]


class TestHttpDate:
    @pytest.mark.parametrize("text", [
        IMF,
        "Sunday, 06-Nov-94 08:49:37 GMT",  # RFC 850
        "Sun Nov  6 08:49:37 1994",  # asctime
    ])
    def test_all_three_forms(self, text: str) -> None:
        assert parse_http_date(text) == LAST_MODIFIED

    @pytest.mark.parametrize("text", ["", "yesterday", "Sun, 06 Nov 1994", "1994-11-06T08:49:37Z",
                                      f"{IMF}, {IMF}"])
    def test_invalid(self, text: str) -> None:
        assert parse_http_date(text) is None

    def test_format_is_imf_fixdate(self) -> None:
        assert format_http_date(LAST_MODIFIED) == IMF


class TestParseRange:
    @pytest.mark.parametrize(("value", "specs"), [
        ("bytes=0-499", [(0, 499)]),
        ("bytes=500-", [(500, None)]),
        ("bytes=-500", [(None, 500)]),
        ("BYTES=0-0", [(0, 0)]),  # the unit is case-insensitive
        ("bytes=0-1, 4-5,\t-3", [(0, 1), (4, 5), (None, 3)]),
        ("bytes=0-1,,2-3", [(0, 1), (2, 3)]),  # empty list elements are allowed
        ("bytes=00010-00020", [(10, 20)]),
        ("bytes=0-" + "9" * 5000, [(0, 10**19)]),  # absurdly large: past any end
    ])
    def test_valid(self, value: str, specs: list[tuple[int | None, int | None]]) -> None:
        assert parse_range(value, max_ranges=16) == specs

    @pytest.mark.parametrize("value", [
        "bytes", "bytes=", "bytes=,", "items=0-1", "bytes 0-1", "bytes=a-b", "bytes=5-1",
        "bytes=1-2-3", "bytes=-", "bytes= 0 - 1", "bytes=0x10-20", "bytes=-1-2", "bytes=+1-2",
        "bytes=1٢-3",  # non-ASCII digit
        "bytes=0-1;2-3",
    ])
    def test_invalid_is_ignored(self, value: str) -> None:
        assert parse_range(value, max_ranges=16) is None

    def test_too_many_ranges_is_ignored(self) -> None:
        assert parse_range("bytes=" + ",".join(["0-1"] * 17), max_ranges=16) is None
        assert parse_range("bytes=" + ",".join(["0-1"] * 16), max_ranges=16) is not None


class TestResolveRanges:
    def test_clamps_end_past_eof(self) -> None:
        assert resolve_ranges([(9_000, 20_000)], SIZE) == [ByteRange(9_000, 9_999)]

    def test_suffix_larger_than_file_means_whole_file(self) -> None:
        assert resolve_ranges([(None, 50_000)], SIZE) == [ByteRange(0, 9_999)]

    def test_unsatisfiable_dropped(self) -> None:
        assert resolve_ranges([(SIZE, None), (None, 0), (0, 0)], SIZE) == [ByteRange(0, 0)]

    def test_overlapping_and_close_ranges_coalesce_in_order(self) -> None:
        ranges = resolve_ranges([(5_000, 5_999), (0, 99), (50, 150), (200, 299)], SIZE)
        assert ranges == [ByteRange(0, 299), ByteRange(5_000, 5_999)]


class TestRanges:
    def test_no_range_is_full(self) -> None:
        assert decide() == (Outcome.FULL, [])

    def test_single(self) -> None:
        assert decide(range="bytes=0-499") == (Outcome.PARTIAL, [(0, 499)])

    def test_whole_file_range_stays_partial(self) -> None:
        assert decide(range="bytes=0-") == (Outcome.PARTIAL, [(0, SIZE - 1)])

    def test_suffix(self) -> None:
        assert decide(range="bytes=-500") == (Outcome.PARTIAL, [(9_500, 9_999)])

    def test_multiple(self) -> None:
        assert decide(range="bytes=0-9,5000-5009") == (
            Outcome.MULTIPART, [(0, 9), (5_000, 5_009)])

    def test_multiple_with_one_satisfiable_is_single(self) -> None:
        assert decide(range="bytes=0-9,20000-30000") == (Outcome.PARTIAL, [(0, 9)])

    @pytest.mark.parametrize("value", ["bytes=10000-", "bytes=20000-30000", "bytes=-0",
                                       "bytes=10000-10005,-0"])
    def test_unsatisfiable(self, value: str) -> None:
        assert decide(range=value)[0] is Outcome.NOT_SATISFIABLE

    def test_invalid_or_other_unit_is_full(self) -> None:
        assert decide(range="bytes=9-1") == (Outcome.FULL, [])
        assert decide(range="seconds=1-2") == (Outcome.FULL, [])

    def test_head_ignores_range(self) -> None:
        # §14.2: range handling is defined for GET only.
        assert decide("HEAD", range="bytes=0-1") == (Outcome.FULL, [])

    def test_empty_representation(self) -> None:
        empty = Representation(0, '"e"', LAST_MODIFIED)
        assert decide(rep=empty, range="bytes=0-") == (Outcome.NOT_SATISFIABLE, [])
        assert decide(rep=empty, range="bytes=-5") == (Outcome.FULL, [])

    def test_thousands_of_tiny_ranges_are_ignored_not_parsed(self) -> None:
        value = "bytes=" + ",".join(f"{i}-{i}" for i in range(2_000))
        assert decide(range=value) == (Outcome.FULL, [])


class TestIfRange:
    def test_matching_strong_etag_keeps_range(self) -> None:
        assert decide(range="bytes=0-1", if_range='"abc"')[0] is Outcome.PARTIAL

    def test_other_etag_sends_whole(self) -> None:
        assert decide(range="bytes=0-1", if_range='"other"') == (Outcome.FULL, [])

    def test_weak_etag_never_matches(self) -> None:
        assert decide(range="bytes=0-1", if_range='W/"abc"') == (Outcome.FULL, [])

    def test_exact_date_keeps_range(self) -> None:
        assert decide(range="bytes=0-1", if_range=IMF)[0] is Outcome.PARTIAL

    @pytest.mark.parametrize("value", [EARLIER, LATER, "garbage"])
    def test_other_date_or_garbage_sends_whole(self, value: str) -> None:
        assert decide(range="bytes=0-1", if_range=value) == (Outcome.FULL, [])

    def test_if_range_without_range_is_ignored(self) -> None:
        assert decide(if_range='"other"') == (Outcome.FULL, [])


class TestPreconditions:
    @pytest.mark.parametrize("value", ['"abc"', "*", '"x", "abc"', ' "x" ,"abc" '])
    def test_if_match_passes(self, value: str) -> None:
        assert decide(if_match=value)[0] is Outcome.FULL

    @pytest.mark.parametrize("value", ['"x"', 'W/"abc"', "abc", ""])
    def test_if_match_fails(self, value: str) -> None:
        # W/ never matches strongly; an unquoted tag is not an entity-tag at all.
        assert decide(if_match=value)[0] is Outcome.PRECONDITION_FAILED

    @pytest.mark.parametrize("value", ['"abc"', 'W/"abc"', "*", '"x", W/"abc"'])
    def test_if_none_match_hit_is_304(self, value: str) -> None:
        assert decide(if_none_match=value)[0] is Outcome.NOT_MODIFIED
        assert decide("HEAD", if_none_match=value)[0] is Outcome.NOT_MODIFIED

    def test_if_none_match_miss_is_full(self) -> None:
        assert decide(if_none_match='"x"')[0] is Outcome.FULL

    def test_if_modified_since(self) -> None:
        assert decide(if_modified_since=IMF)[0] is Outcome.NOT_MODIFIED
        assert decide(if_modified_since=LATER)[0] is Outcome.NOT_MODIFIED
        assert decide(if_modified_since=EARLIER)[0] is Outcome.FULL
        assert decide(if_modified_since="not a date")[0] is Outcome.FULL

    def test_if_unmodified_since(self) -> None:
        assert decide(if_unmodified_since=IMF)[0] is Outcome.FULL
        assert decide(if_unmodified_since=EARLIER)[0] is Outcome.PRECONDITION_FAILED
        assert decide(if_unmodified_since="not a date")[0] is Outcome.FULL

    def test_if_match_wins_over_if_unmodified_since(self) -> None:
        # §13.2.2 step 2 only applies when If-Match is absent.
        assert decide(if_match='"abc"', if_unmodified_since=EARLIER)[0] is Outcome.FULL

    def test_if_none_match_wins_over_if_modified_since(self) -> None:
        assert decide(if_none_match='"x"', if_modified_since=LATER)[0] is Outcome.FULL

    def test_if_match_is_checked_before_if_none_match(self) -> None:
        assert decide(if_match='"x"', if_none_match='"abc"')[0] is Outcome.PRECONDITION_FAILED

    def test_304_comes_before_range(self) -> None:
        assert decide(if_none_match='"abc"', range="bytes=0-1")[0] is Outcome.NOT_MODIFIED

    def test_412_comes_before_416(self) -> None:
        assert decide(if_match='"x"', range="bytes=99999-")[0] is Outcome.PRECONDITION_FAILED


def test_multipart_layout() -> None:
    body = multipart_body((ByteRange(0, 1), ByteRange(5, 6)), 10, "audio/wav", "B")
    heads = [head for head, _ in body.parts]
    assert heads[0] == b"--B\r\nContent-Type: audio/wav\r\nContent-Range: bytes 0-1/10\r\n\r\n"
    assert heads[1] == b"\r\n--B\r\nContent-Type: audio/wav\r\nContent-Range: bytes 5-6/10\r\n\r\n"
    assert body.closing == b"\r\n--B--\r\n"
    assert body.content_length == len(heads[0]) + len(heads[1]) + 4 + len(body.closing)
    assert body.content_type == "multipart/byteranges; boundary=B"


class TestFoundByPropertyTests:
    """Wrong answers that tests/test_http_range_properties.py found, kept as examples."""

    @pytest.mark.parametrize("value", [
        "bytes=20000000000000000000-10000000000000000000",  # both longer than 18 digits
        "bytes=0-5,99999999999999999999-99999999999999999998",
    ])
    def test_reversed_long_positions_are_invalid(self, value: str) -> None:
        # §14.1.1: last-pos < first-pos makes the range invalid: 200, not 416 or 206.
        assert parse_range(value, max_ranges=16) is None
        assert decide(range=value) == (Outcome.FULL, [])

    @pytest.mark.parametrize("text", [
        "Sun,\u00a006 Nov 1994 08:49:37 GMT",  # no-break space
        "Sun, 06 Nov \u0661\u0669\u0669\u0664 08:49:37 GMT",  # Arabic-Indic digits
        "\x0bSun, 06 Nov 1994 08:49:37 GMT",  # a vertical tab is not OWS
    ])
    def test_dates_with_characters_http_dates_never_hold_are_invalid(self, text: str) -> None:
        assert parse_http_date(text) is None
        assert decide(if_modified_since=text)[0] is Outcome.FULL

    @pytest.mark.parametrize(("years_ahead", "century_back"), [(45, 0), (60, 100)])
    def test_two_digit_year_is_ahead_unless_more_than_50_years(
        self, years_ahead: int, century_back: int
    ) -> None:
        # §5.6.7; strptime alone reads 69-99 as 19xx whatever the current year.
        year = datetime.now(UTC).year + years_ahead
        parsed = parse_http_date(f"Sunday, 06-Nov-{year % 100:02d} 08:49:37 GMT")
        assert parsed is not None
        assert datetime.fromtimestamp(parsed, UTC).year == year - century_back

    @pytest.mark.parametrize("value", ['\r"abc"', '"abc"\u00a0', '\x0b"abc"'])
    def test_if_range_padded_with_other_whitespace_does_not_match(self, value: str) -> None:
        assert decide(range="bytes=0-1", if_range=value) == (Outcome.FULL, [])
