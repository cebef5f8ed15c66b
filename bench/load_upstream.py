"""The test meeting API (tests/fake_upstream.py) holding the recordings of bench/load.py.

The sidecar in bench/load.py sits in front of it: it answers the recordings' JSON
and checks the caller's key (`key-alice`, user 1), while the media files lie in the
sidecar's local storage where their JSON says.

    python bench/load_upstream.py --port 8000 --recordings '[[1001, "s1", 2001], ...]'
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from aiohttp import web

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fake_upstream import FakeMeetingApi  # noqa: E402

USER_ID = 1  # owner of every recording; key-alice in FakeMeetingApi
FORMAT = "wav"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--recordings", required=True,
                        help="JSON list of [recording id, session uid, media id]")
    args = parser.parse_args()
    api = FakeMeetingApi()
    for recording_id, session_uid, media_id in json.loads(args.recordings):
        api.add_recording(recording_id, USER_ID, session_uid,
                          [(media_id, "audio", FORMAT, "local")])
    web.run_app(api.app, host=args.host, port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
