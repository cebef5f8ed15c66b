"""The client commands: `gateway upload` and `gateway recordings list|get`.

They talk HTTP to a running gateway, on this host or another, with an API key, and
need none of the server's settings or files. Results go to stdout (a table, or one
JSON document with --json); progress and messages go to stderr, so JSON can be piped
as it is. Exit statuses: ExitStatus, documented in docs/cli.md.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import textwrap
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from typing import Any

from gateway.client.http import ClientFailure, ExitStatus, GatewayClient, HttpFailure
from gateway.client.output import (
    TABLE_HEADER,
    details,
    media_summary,
    print_json,
    say,
    table_row,
)
from gateway.client.upload import FileBody, UploadFile
from gateway.media import FORMATS, MEDIA_TYPES
from gateway.models import MAX_ID
from gateway.settings import (
    CLIENT_VARIABLES,
    ClientSettings,
    SettingsError,
    load_client_settings,
)

MAX_PAGE = 200
"""The API's largest `limit`; `--all` pages this many at a time unless told otherwise."""
INTERRUPTED = 130  # 128 + SIGINT, as shells report it

Command = Callable[[argparse.Namespace, ClientSettings], Coroutine[Any, Any, int]]

EXIT_STATUSES = (
    "Exit status: 0 success; 1 the gateway refused or failed the request; 2 bad usage,\n"
    "settings or file, or no key given; 3 not found (or not visible to this key); 4 key\n"
    "refused: wrong or revoked (401), not allowed (403), too many failures (429);\n"
    "5 gateway unreachable or not answering; 130 interrupted."
)


def _epilog(example: str) -> str:
    variables = "\n".join(textwrap.fill(v.doc, 79, initial_indent=f"  {v.name:<16} ",
                                        subsequent_indent=" " * 19)
                          for v in CLIENT_VARIABLES)
    return f"Example:\n  {example}\n\nEnvironment:\n{variables}\n\n{EXIT_STATUSES}"


def _description(text: str) -> str:
    return textwrap.fill(text, 79)


def positive_id(value: str) -> int:
    """argparse type: an id as the API writes it (ASCII digits, 1 to 2**53 - 1)."""
    if not (value.isascii() and value.isdigit()) or not 0 < int(value) <= MAX_ID:
        raise argparse.ArgumentTypeError("must be a positive integer")
    return int(value)


def _bounded(low: int, high: int | None) -> Callable[[str], int]:
    def parse(value: str) -> int:
        number = int(value) if value.isascii() and value.isdigit() else None
        if number is None or number < low or (high is not None and number > high):
            bounds = f"from {low} to {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {value!r}")
        return number

    return parse


def _connection_options() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--url", help="the gateway's base URL (default: GATEWAY_URL, else "
                                      "http://GATEWAY_HOST:GATEWAY_PORT)")
    common.add_argument("--key", help="API key (default: GATEWAY_API_KEY, else API_KEY); "
                                      "prefer the variable: arguments show in `ps`")
    common.add_argument("--json", action="store_true",
                        help="print one JSON document on stdout, for scripts")
    return common


def add_client_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser],
                        recordings: argparse._SubParsersAction[argparse.ArgumentParser]
                        ) -> None:
    """Register `upload` under `commands` and `list`, `get` under `recordings`."""
    common = _connection_options()
    formatter = argparse.RawDescriptionHelpFormatter

    upload = commands.add_parser(
        "upload", parents=[common], formatter_class=formatter,
        help="stream a media file to a running gateway (with a progress bar)",
        description=_description(
            "Stream FILE to POST /recordings/{id}/media of a running gateway, in 1 MiB "
            "pieces (never whole in memory), into an existing recording or one created "
            "first with --create."),
        epilog=_epilog("gateway upload talk.wav --create --meeting-id 16 --complete"))
    upload.add_argument("file", metavar="FILE", type=Path, help="the media file")
    target = upload.add_mutually_exclusive_group(required=True)
    target.add_argument("--recording", metavar="ID", type=positive_id,
                        help="an existing recording, still in_progress")
    target.add_argument("--create", action="store_true",
                        help="create a new recording first (POST /recordings)")
    upload.add_argument("--type", choices=MEDIA_TYPES, default="audio",
                        help="media type (default: audio)")
    upload.add_argument("--format", choices=FORMATS,
                        help="media format (default: the file's extension)")
    upload.add_argument("--complete", action="store_true",
                        help="mark the recording completed after the upload")
    created = upload.add_argument_group("fields of a recording made with --create "
                                        "(all optional)")
    created.add_argument("--meeting-id", type=_bounded(0, MAX_ID), metavar="N",
                         help="the meeting's number (meeting_id)")
    created.add_argument("--platform", help="e.g. google_meet")
    created.add_argument("--native-meeting-id", metavar="ID", help="e.g. abc-defg-hij")
    created.add_argument("--session-uid", metavar="UID",
                         help="names the stored file (default: a new UUID)")
    created.add_argument("--source", help="who recorded it (default: bot)")
    created.add_argument("--storage", metavar="NAME", help="a named storage of the gateway")
    upload.add_argument("-q", "--quiet", action="store_true",
                        help="no progress bar and no messages, only errors")
    upload.set_defaults(client=_upload)

    listing = recordings.add_parser(
        "list", parents=[common], formatter_class=formatter,
        help="list recordings from a running gateway, newest first (paged)",
        description=_description(
            "GET /recordings: newest first, one page, or every page with --all. The offset "
            "to continue from is printed at the end (stderr), or given as next_offset "
            "with --json."),
        epilog=_epilog("gateway recordings list --all --json > recordings.json"))
    listing.add_argument("--limit", type=_bounded(1, MAX_PAGE), metavar="N",
                         help=f"recordings per page, 1 to {MAX_PAGE} (default: 50; "
                              f"{MAX_PAGE} with --all)")
    listing.add_argument("--offset", type=_bounded(0, None), default=0, metavar="N",
                         help="recordings to skip, counted from the newest (default: 0)")
    listing.add_argument("--meeting-id", type=_bounded(0, MAX_ID), metavar="N",
                         help="only this meeting's recordings")
    listing.add_argument("--all", action="store_true",
                         help="page through everything from --offset on")
    listing.set_defaults(client=_list)

    get = recordings.add_parser(
        "get", parents=[common], formatter_class=formatter,
        help="show one recording from a running gateway, with its media files",
        description=_description(
            "GET /recordings/{id}: the recording and its media files, with the URL of each "
            "file's bytes."),
        epilog=_epilog("gateway recordings get 906238426347 --links"))
    get.add_argument("recording_id", metavar="ID", type=positive_id,
                     help="the recording's id")
    get.add_argument("--links", action="store_true",
                     help="also ask for a signed playback link per media file (plays in "
                          "a browser without a key, for a limited time)")
    get.set_defaults(client=_get)


def is_client_command(args: argparse.Namespace) -> bool:
    """Whether the parsed command talks to a gateway over HTTP (no server settings)."""
    return getattr(args, "client", None) is not None


def run_client_command(args: argparse.Namespace, environ: Mapping[str, str]) -> int:
    """Run a client command; its exit status, with one line on stderr if it failed."""
    overrides = {"GATEWAY_URL": args.url, "GATEWAY_API_KEY": args.key}
    env = {**environ, **{k: v for k, v in overrides.items() if v is not None}}
    try:
        settings = load_client_settings(env)
    except SettingsError as exc:
        flag = {"GATEWAY_URL": "--url", "GATEWAY_API_KEY": "--key"}.get(exc.variable)
        name = flag if flag and overrides[exc.variable] is not None else exc.variable
        print(f"gateway: error: {name}: {exc.problem}", file=sys.stderr)
        return ExitStatus.USAGE
    if not settings.api_key:
        print("gateway: error: no API key: pass --key or set GATEWAY_API_KEY",
              file=sys.stderr)
        return ExitStatus.USAGE
    command: Command = args.client
    try:
        return asyncio.run(command(args, settings))
    except ClientFailure as exc:
        print(f"gateway: error: {exc.message}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        print("gateway: interrupted", file=sys.stderr)
        return INTERRUPTED
    except BrokenPipeError:
        # The reader left (`| head`): not worth a traceback. Point stdout at /dev/null
        # so that flushing it at exit does not fail again.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return ExitStatus.FAILURE


def _refused_hint(exc: HttpFailure) -> ClientFailure:
    if exc.http_status == 401:
        return ClientFailure(f"{exc.message} (check --key or GATEWAY_API_KEY)", exc.status)
    return exc


async def _upload(args: argparse.Namespace, settings: ClientSettings) -> int:
    upload = UploadFile.check(args.file, args.type, args.format)
    quiet = args.quiet
    async with GatewayClient.connect(settings) as client:
        recording_id = args.recording
        media: dict[str, Any] | None = None
        try:
            if args.create:
                fields = {name: getattr(args, name) for name in (
                    "meeting_id", "platform", "native_meeting_id", "session_uid", "source",
                    "storage") if getattr(args, name) is not None}
                recording_id = (await client.create_recording(fields)).get("id")
                if not isinstance(recording_id, int):
                    raise ClientFailure("the gateway created a recording without an id")
                if not quiet:
                    say(f"Created recording {recording_id}")
            media = await _send(client, recording_id, upload, quiet)
            recording = await (client.complete_recording(recording_id) if args.complete
                               else client.get_recording(recording_id))
        except ClientFailure as exc:
            if args.create and recording_id is not None and media is None:
                say(f"Recording {recording_id} was created; to try again into it: "
                    f"gateway upload {upload.path} --recording {recording_id}")
            if isinstance(exc, HttpFailure) and exc.http_status == 404 and not args.create:
                raise ClientFailure(f"recording {recording_id} not found (or not visible "
                                    "to this key)", exc.status) from None
            raise (_refused_hint(exc) if isinstance(exc, HttpFailure) else exc) from None
        if args.json:
            print_json({"recording": recording, "media_file": media})
        elif not quiet:
            say(f"Uploaded {upload.path} to recording {recording_id} as media file "
                f"{media.get('id')} ({media_summary(media)}); recording is "
                f"{recording.get('status')}")
            await _say_playback_link(client, recording_id, media.get("id"))
    return ExitStatus.OK


async def _send(client: GatewayClient, recording_id: int, upload: UploadFile,
                quiet: bool) -> dict[str, Any]:
    # Imported here: every `gateway` process (each server worker too) imports this
    # module, and only an upload draws a bar.
    from tqdm import tqdm

    # disable=None: tqdm draws only on a terminal, so logs and pipes get no bar.
    with tqdm(total=upload.size, unit="B", unit_scale=True, unit_divisor=1024,
              desc=upload.path.name, file=sys.stderr, disable=True if quiet else None,
              leave=False) as bar:
        body = FileBody(upload, bar.update)
        try:
            return await client.upload_media(recording_id, body, upload.size,
                                              media_type=upload.media_type,
                                              media_format=upload.media_format)
        except ClientFailure:
            if body.error is not None:
                raise body.error from None
            raise


async def _say_playback_link(client: GatewayClient, recording_id: int, media_id: Any) -> None:
    """Where to hear it; the upload succeeded whatever happens here."""
    if not isinstance(media_id, int):
        return
    try:
        link, expires_in = await client.playback_url(recording_id, media_id)
    except ClientFailure as exc:
        say(f"(no playback link: {exc.message})")
        return
    say(f"Play it in a browser for the next {expires_in} s:\n  {link}")


async def _list(args: argparse.Namespace, settings: ClientSettings) -> int:
    limit = args.limit or (MAX_PAGE if args.all else 50)
    offset: int = args.offset
    collected: list[dict[str, Any]] = []
    seen: set[Any] = set()
    finished = header_printed = False
    async with GatewayClient.connect(settings) as client:
        try:
            while not finished:
                page = await client.list_recordings(limit=limit, offset=offset,
                                                    meeting_id=args.meeting_id)
                offset += len(page)
                finished = len(page) < limit
                # Offsets count from the newest: a recording created meanwhile shifts
                # the pages by one, so the next page may repeat the last one's end.
                fresh = [r for r in page if r.get("id") not in seen]
                seen.update(r.get("id") for r in page)
                if args.json:
                    collected.extend(fresh)
                else:
                    if fresh and not header_printed:  # not before an error or nothing
                        print(TABLE_HEADER, flush=True)
                        header_printed = True
                    for recording in fresh:
                        print(table_row(recording), flush=True)
                if not args.all:
                    break
        except ClientFailure as exc:
            if isinstance(exc, HttpFailure) and exc.http_status == 404:
                exc = ClientFailure(f"{exc.message}: no recordings API at "
                                    f"{client.url('recordings')}; is the URL right?",
                                    exc.status)
            elif isinstance(exc, HttpFailure):
                exc = _refused_hint(exc)
            if offset > args.offset:  # pages came before the failure: keep them
                if args.json:
                    print_json({"recordings": collected, "offset": args.offset,
                                "next_offset": offset})
                say(f"Stopped at offset {offset} after {_count(len(seen))}; continue with: "
                    f"{_resume(args, offset, limit)}")
            raise exc from None
    if args.json:
        print_json({"recordings": collected, "offset": args.offset,
                    "next_offset": None if finished else offset})
    elif finished:
        say(f"{_count(len(seen))} from offset {args.offset}; that is the end of the list")
    else:
        say(f"{_count(len(seen))} from offset {args.offset}; next page: "
            f"{_resume(args, offset, limit)}")
    return ExitStatus.OK


def _count(recordings: int) -> str:
    return f"{recordings} recording{'' if recordings == 1 else 's'}"


def _resume(args: argparse.Namespace, offset: int, limit: int) -> str:
    """The command that continues a listing where this one stopped."""
    words = ["gateway recordings list"]
    if args.all:
        words.append("--all")
    words.append(f"--offset {offset}")
    if args.limit is not None:
        words.append(f"--limit {limit}")
    if args.meeting_id is not None:
        words.append(f"--meeting-id {args.meeting_id}")
    if args.json:
        words.append("--json")
    return " ".join(words)


async def _get(args: argparse.Namespace, settings: ClientSettings) -> int:
    recording_id = args.recording_id
    async with GatewayClient.connect(settings) as client:
        try:
            recording = await client.get_recording(recording_id)
            links: dict[int, tuple[str, int]] = {}
            if args.links:
                for media in recording.get("media_files") or ():
                    if isinstance(media, dict) and isinstance(media.get("id"), int):
                        links[media["id"]] = await client.playback_url(recording_id,
                                                                       media["id"])
        except HttpFailure as exc:
            if exc.http_status == 404:
                raise ClientFailure(f"recording {recording_id} not found (or not visible "
                                    "to this key)", exc.status) from None
            raise _refused_hint(exc) from None
        if args.json:
            if args.links:
                for media in recording.get("media_files") or ():
                    if isinstance(media, dict) and media.get("id") in links:
                        media["playback_url"], media["playback_expires_in"] = \
                            links[media["id"]]
            print_json(recording)
        else:
            def raw_url(media_id: int) -> str:
                return str(client.url("recordings", recording_id, "media", media_id, "raw"))

            print(details(recording, raw_url, links))
    return ExitStatus.OK
