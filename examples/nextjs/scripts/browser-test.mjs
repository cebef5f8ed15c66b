// Drives Debian's headless Chromium through the example page: load the recording's
// metadata, seek to the middle, play, and check the media requests went through the
// Next.js route handler as Range requests answered with 206.
//
// Env: APP_URL (the Next.js server), GATEWAY_URL (must never be contacted by the browser),
// RECORDING, MEDIA, RECORDING_SECONDS (the recording's length), CHROMIUM (default /usr/bin/chromium).
import { chromium } from "playwright-core";

const APP_URL = required("APP_URL").replace(/\/+$/, "");
const GATEWAY_ORIGIN = new URL(required("GATEWAY_URL")).origin;
const RECORDING = process.env.RECORDING ?? "42";
const MEDIA = process.env.MEDIA ?? "4201";
const SECONDS = Number(process.env.RECORDING_SECONDS ?? "20");
const MIDDLE = SECONDS / 2;
const TIMEOUT_MS = 15_000;
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--autoplay-policy=no-user-gesture-required",
];
const RAW_PATH = `/api/recordings/${RECORDING}/media/${MEDIA}/raw`;

function required(name) {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
}

function check(condition, message, detail) {
  if (!condition) {
    const error = new Error(`${message}${detail === undefined ? "" : `: ${JSON.stringify(detail)}`}`);
    error.checkFailed = true;
    throw error;
  }
  console.log(`ok - ${message}`);
}

const STATE_JS = () => {
  const a = document.getElementById("player");
  return { error: a.error && a.error.code, readyState: a.readyState, duration: a.duration,
           currentTime: a.currentTime, paused: a.paused, src: a.currentSrc };
};

const SEEK_JS = (target) => new Promise((resolve, reject) => {
  const a = document.getElementById("player");
  const timer = setTimeout(() => reject(new Error("no seeked event within 10 s")), 10_000);
  a.addEventListener("seeked", () => {
    clearTimeout(timer);
    resolve({ currentTime: a.currentTime, readyState: a.readyState });
  }, { once: true });
  a.currentTime = target;
});

const requests = []; // every URL the page asked for
const exchanges = []; // what Chromium saw on the wire for the raw URL

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM ?? "/usr/bin/chromium",
  args: CHROMIUM_ARGS,
  headless: true,
  timeout: TIMEOUT_MS,
});
let failed = false;
try {
  const page = await browser.newPage();
  page.setDefaultTimeout(TIMEOUT_MS);
  page.on("request", (request) => requests.push(request.url()));
  page.on("response", (response) => {
    if (new URL(response.url()).pathname !== RAW_PATH) return;
    const headers = response.headers();
    exchanges.push({
      url: response.url(),
      range: response.request().headers().range ?? null,
      status: response.status(),
      contentRange: headers["content-range"] ?? null,
      acceptRanges: headers["accept-ranges"] ?? null,
    });
  });
  page.on("console", (message) => console.log(`  [page ${message.type()}] ${message.text()}`));

  const url = `${APP_URL}/?recording=${RECORDING}&media=${MEDIA}`;
  const response = await page.goto(url);
  check(response && response.status() === 200, `GET ${url} is 200`, response && response.status());
  const src = await page.getAttribute("#player", "src");
  check(src === RAW_PATH, `<audio> src is the route handler's path ${RAW_PATH}`, src);

  await page.waitForFunction(() => {
    const a = document.getElementById("player");
    return a.error !== null || a.readyState >= 1;
  });
  const loaded = await page.evaluate(STATE_JS);
  check(loaded.error === null, "metadata loaded without a media error", loaded);
  check(Math.abs(loaded.duration - SECONDS) < 0.05, `duration is ${SECONDS} s`, loaded.duration);

  const seeked = await page.evaluate(SEEK_JS, MIDDLE);
  check(Math.abs(seeked.currentTime - MIDDLE) < 0.1, `seeked to ${MIDDLE} s`, seeked);

  await page.evaluate(() => document.getElementById("player").play());
  console.log("ok - play() resolved");
  await page.waitForFunction((t) => document.getElementById("player").currentTime > t, MIDDLE + 0.3);
  const played = await page.evaluate(STATE_JS);
  await page.evaluate(() => document.getElementById("player").pause());
  check(played.error === null && !played.paused && played.readyState >= 2,
        "playing, no media error", played);
  check(played.currentTime > MIDDLE + 0.3 && played.currentTime < MIDDLE + 10,
        `time advanced from ${MIDDLE} s`, played.currentTime);
  await page.close();
} catch (error) {
  failed = true;
  console.error(`FAIL: ${error.checkFailed ? error.message : error.stack}`);
} finally {
  await browser.close();
}

if (!failed) {
  try {
    // The browser only ever talked to the Next.js app; the media came through its route handler.
    const app = new URL(APP_URL).origin;
    const elsewhere = requests.filter((u) => new URL(u).origin !== app);
    check(elsewhere.length === 0, "the browser requested nothing outside the Next.js app", elsewhere);
    check(!requests.some((u) => new URL(u).origin === GATEWAY_ORIGIN),
          "the browser never contacted the gateway directly");
    check(exchanges.length > 0, `the browser fetched ${RAW_PATH}`, requests);
    for (const e of exchanges) {
      const match = /^bytes=(\d+)-(\d*)$/.exec(e.range ?? "");
      check(match !== null, `request had a Range header (${e.range})`, e);
      check(e.status === 206, `answered 206 (${e.contentRange})`, e);
      check(e.acceptRanges === "bytes", "Accept-Ranges: bytes", e);
      const cr = /^bytes (\d+)-(\d+)\/(\d+)$/.exec(e.contentRange ?? "");
      check(cr !== null && cr[1] === match[1], "Content-Range starts where the Range asked", e);
    }
  } catch (error) {
    failed = true;
    console.error(`FAIL: ${error.message}`);
  }
}
console.log(JSON.stringify({ exchanges: exchanges.map(({ range, status, contentRange }) => ({ range, status, contentRange })) }));
process.exit(failed ? 1 : 0);
