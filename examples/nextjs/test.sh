#!/usr/bin/env bash
# Real-browser test of the Next.js example: a test meeting API, the gateway in sidecar
# mode in front of it, `next start` in front of the gateway, and Debian's headless
# Chromium playing and seeking a 20-second recording through the page.
#
#   examples/nextjs/test.sh
#
# Env: PYTHON (default: <repo>/.venv/bin/python if present, else python3; needs the
# gateway's dependencies), CHROMIUM (default /usr/bin/chromium), WAV_SECONDS (length of
# the test WAV, default 20), SKIP_INSTALL=1 / SKIP_BUILD=1 to reuse node_modules / .next.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
if [[ -z "${PYTHON:-}" ]]; then
  if [[ -x "$ROOT/.venv/bin/python" ]]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
export CHROMIUM="${CHROMIUM:-/usr/bin/chromium}"
export NEXT_TELEMETRY_DISABLED=1
WAV_SECONDS="${WAV_SECONDS:-20}"
RECORDING=42 MEDIA=4201 USER_ID=1 SESSION=demo-session API_KEY=key-alice
RAW="/recordings/$RECORDING/media/$MEDIA/raw"

TMP="$(mktemp -d "${TMPDIR:-/tmp}/nextjs-example-test.XXXXXX")"
PIDS=()
STATUS=1

log() { printf '== %s\n' "$*"; }

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do  # each was started with setsid: its group is its own
    kill -TERM -- "-$pid" 2>/dev/null || true
  done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL -- "-$pid" 2>/dev/null || true
  done
  if [[ "$STATUS" -ne 0 ]]; then
    local f
    for f in upstream gateway next; do
      [[ -f "$TMP/$f.log" ]] && { echo "---- last lines of the $f log"; tail -n 30 "$TMP/$f.log"; }
    done
    echo "FAIL"
  fi
  rm -rf "$TMP"
}
trap cleanup EXIT

# Starts a command in its own session (so cleanup can stop it with its children).
start() {
  local name="$1"; shift
  setsid "$@" >"$TMP/$name.log" 2>&1 </dev/null &
  PIDS+=("$!")
}

free_port() {
  "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

wait_http() {  # URL NAME: until it answers at all (any status), or 30 s
  local url="$1" name="$2" pid="${PIDS[-1]}"
  for _ in $(seq 300); do
    if curl -s -o /dev/null --max-time 2 "$url"; then return 0; fi
    kill -0 "$pid" 2>/dev/null || { echo "$name exited early"; return 1; }
    sleep 0.1
  done
  echo "$name did not answer at $url within 30 s"; return 1
}

[[ -x "$CHROMIUM" ]] || { echo "$CHROMIUM not found (set CHROMIUM)"; exit 1; }
(cd "$ROOT" && "$PYTHON" -c 'import aiohttp, gateway') 2>/dev/null \
  || { echo "$PYTHON cannot import the gateway; set PYTHON (e.g. PYTHON=/path/to/venv/bin/python)"; exit 1; }

cd "$HERE"
if [[ "${SKIP_INSTALL:-}" != 1 ]]; then
  log "npm ci"
  npm ci --no-audit --no-fund
fi
if [[ "${SKIP_BUILD:-}" != 1 ]]; then
  log "next build"
  build_start=$SECONDS
  npx --no-install next build
  log "next build took $((SECONDS - build_start)) s"
fi

UPSTREAM_PORT="$(free_port)" GATEWAY_PORT="$(free_port)" APP_PORT="$(free_port)"
UPSTREAM="http://127.0.0.1:$UPSTREAM_PORT"
GATEWAY="http://127.0.0.1:$GATEWAY_PORT"
APP="http://127.0.0.1:$APP_PORT"

log "recording: a ${WAV_SECONDS}-second WAV at recordings/$USER_ID/$RECORDING/$SESSION.wav"
WAV="$TMP/rec/recordings/$USER_ID/$RECORDING/$SESSION.wav"
mkdir -p "$(dirname "$WAV")" "$TMP/data"
(cd "$ROOT" && "$PYTHON" -c "from gateway.demo import tone_wav; import sys; sys.stdout.buffer.write(tone_wav(seconds=$WAV_SECONDS))") >"$WAV"
SIZE="$(stat -c %s "$WAV")"

log "test meeting API on $UPSTREAM"
cd "$ROOT"
start upstream "$PYTHON" -m tests.fake_upstream --host 127.0.0.1 --port "$UPSTREAM_PORT"
wait_http "$UPSTREAM/" "the test meeting API"

log "gateway (sidecar) on $GATEWAY"
start gateway env GATEWAY_CATALOG=upstream GATEWAY_UPSTREAM_URL="$UPSTREAM" \
  GATEWAY_DATA_DIR="$TMP/data" LOCAL_STORAGE_DIR="$TMP/rec" \
  GATEWAY_HOST=127.0.0.1 GATEWAY_PORT="$GATEWAY_PORT" GATEWAY_LOG_LEVEL=info \
  "$PYTHON" -m gateway serve
wait_http "$GATEWAY/healthz" "the gateway"

log "next start on $APP"
cd "$HERE"
start next env GATEWAY_URL="$GATEWAY" GATEWAY_API_KEY="$API_KEY" \
  node_modules/.bin/next start -p "$APP_PORT" -H 127.0.0.1
wait_http "$APP/" "next start"

log "Chromium: play and seek through $APP/?recording=$RECORDING&media=$MEDIA"
APP_URL="$APP" GATEWAY_URL="$GATEWAY" RECORDING="$RECORDING" MEDIA="$MEDIA" RECORDING_SECONDS="$WAV_SECONDS" \
  node scripts/browser-test.mjs

log "the gateway's access log"
# A stream the browser abandoned is logged when its handler returns: give it a moment.
raw_206() { grep -c "\"GET $RAW HTTP/1.1\" 206 .* \"node\"" "$TMP/gateway.log" || true; }
for _ in $(seq 50); do [[ "$(raw_206)" -ge 1 ]] && break; sleep 0.1; done
raw_lines="$(grep "aiohttp.access: .*$RAW" "$TMP/gateway.log" || true)"
echo "$raw_lines" | sed 's/^.*aiohttp.access: /  /'
[[ "$(raw_206)" -ge 1 ]] || { echo "the gateway logged no 206 for GET $RAW from the Next.js server"; exit 1; }
echo "ok - the gateway answered GET $RAW with 206, $(raw_206) time(s), to the Next.js server (User-Agent: node)"
if grep -v '"node"$' <<<"$raw_lines"; then
  echo "the gateway saw requests for $RAW that did not come from the Next.js server"; exit 1
fi
echo "ok - every request the gateway saw for $RAW came from the Next.js server"

log "curl through the route handler"
headers="$(curl -sS -I "$APP/api$RAW")"
grep -qi '^HTTP/1.1 200' <<<"$headers" || { echo "HEAD: $headers"; exit 1; }
grep -qi '^accept-ranges: bytes' <<<"$headers" || { echo "HEAD: no Accept-Ranges: $headers"; exit 1; }
grep -qi "^content-length: $SIZE" <<<"$headers" || { echo "HEAD: Content-Length is not $SIZE: $headers"; exit 1; }
echo "ok - HEAD is 200 with Accept-Ranges: bytes and Content-Length: $SIZE"
start_byte=$((SIZE / 2)) end_byte=$((SIZE / 2 + 4095))
code="$(curl -sS -o "$TMP/part" -D "$TMP/part.h" -w '%{http_code}' -r "$start_byte-$end_byte" "$APP/api$RAW")"
[[ "$code" == 206 ]] || { echo "Range GET: $code"; cat "$TMP/part.h"; exit 1; }
grep -qi "^content-range: bytes $start_byte-$end_byte/$SIZE" "$TMP/part.h" || { cat "$TMP/part.h"; exit 1; }
[[ "$(stat -c %s "$TMP/part")" == 4096 ]] && cmp -s -n 4096 -i "$start_byte:0" "$WAV" "$TMP/part" \
  || { echo "Range GET: the bytes differ from the file's"; exit 1; }
echo "ok - Range: bytes=$start_byte-$end_byte is 206 with the file's own bytes"
code="$(curl -sS -o /dev/null -w '%{http_code}' -H 'X-API-Key: wrong' "$APP/api$RAW")"
[[ "$code" == 401 ]] || { echo "a caller's wrong X-API-Key gave $code, not 401"; exit 1; }
echo "ok - a caller's own (wrong) X-API-Key is forwarded instead of the server's: 401"

log "the Next.js server's log"
if grep -Ei 'error|⨯' "$TMP/next.log"; then echo "next start logged errors"; exit 1; fi
echo "ok - no errors"

STATUS=0
log "PASS"
