"""How the client commands show recordings: tables for people, JSON for scripts.

The recording JSON comes from a gateway, or through it from an upstream meeting API,
so every field is read with a fallback: an unexpected shape prints a dash, never a
traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

_UNITS = ("B", "KiB", "MiB", "GiB", "TiB")


def print_json(value: Any) -> None:
    """The one JSON document a command writes to stdout."""
    json.dump(value, sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


def say(message: str) -> None:
    """A message for the person at the terminal: stderr, so stdout stays data."""
    print(message, file=sys.stderr, flush=True)


def human_size(size: Any) -> str:
    """`1.2 MiB`; bytes below 1 KiB exactly."""
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        return "-"
    value = float(size)
    for unit in _UNITS:
        if value < 1024 or unit == _UNITS[-1]:
            return f"{size} B" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def human_duration(seconds: Any) -> str:
    """`34:39`, or `1:02:03` past an hour; a dash when unknown."""
    if not isinstance(seconds, int | float) or isinstance(seconds, bool) or seconds < 0:
        return "-"
    whole = round(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


def _text(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def _media_files(recording: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    files = recording.get("media_files")
    return [m for m in files if isinstance(m, Mapping)] if isinstance(files, list) else []


def media_summary(media: Mapping[str, Any]) -> str:
    """`audio/wav 1.2 MiB 0:04`."""
    kind = f"{_text(media.get('type'))}/{_text(media.get('format'))}"
    duration = human_duration(media.get("duration_seconds"))
    size = human_size(media.get("file_size_bytes"))
    return f"{kind} {size}" + (f" {duration}" if duration != "-" else "")


TABLE_HEADER = f"{'ID':<17} {'MEETING':>9}  {'STATUS':<12} {'CREATED':<21} MEDIA"


def table_row(recording: Mapping[str, Any]) -> str:
    """One line of `gateway recordings list`."""
    media = ", ".join(media_summary(m) for m in _media_files(recording)) or "-"
    return (f"{_text(recording.get('id')):<17} {_text(recording.get('meeting_id')):>9}  "
            f"{_text(recording.get('status')):<12} {_text(recording.get('created_at')):<21} "
            f"{media}")


_DETAIL_FIELDS = ("meeting_id", "user_id", "session_uid", "source", "created_at",
                  "completed_at", "error_message")


def details(recording: Mapping[str, Any], raw_url: Callable[[int], str],
            links: Mapping[int, tuple[str, int]]) -> str:
    """`gateway recordings get`: the fields, then each media file with its URLs.

    `raw_url(media_id)` gives the authenticated raw URL; `links` the signed playback
    links asked for with --links, by media id.
    """
    lines = [f"Recording {_text(recording.get('id'))}: {_text(recording.get('status'))}"]
    for name in _DETAIL_FIELDS:
        if name in recording and (name != "error_message" or recording[name]):
            lines.append(f"  {name:<14}{_text(recording[name])}")
    if recording.get("legal_hold"):
        lines.append(f"  {'legal_hold':<14}yes: kept from every delete")
    files = _media_files(recording)
    lines.append("Media files:" if files else "Media files: none yet")
    for media in files:
        media_id = media.get("id")
        lines.append(f"  {_text(media_id):<17} {media_summary(media)}  "
                     f"{_text(media.get('created_at'))}")
        if isinstance(media_id, int):
            lines.append(f"    raw (needs the key): {raw_url(media_id)}")
            if media_id in links:
                link, expires_in = links[media_id]
                lines.append(f"    play (signed, {expires_in} s): {link}")
    return "\n".join(lines)
