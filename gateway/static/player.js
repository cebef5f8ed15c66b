// The player page: list recordings with an API key, play one, draw its waveform.
// No framework and no inline code (the page's Content-Security-Policy allows neither);
// text reaches the page through textContent only.
"use strict";

(function () {
  // The API is the directory above this script: `/` normally, `/prefix/` behind a proxy
  // that mounts the gateway there.
  const API_BASE = new URL("../", document.currentScript.src);
  const KEY_STORAGE = "recordings-gateway.api-key";
  const PAGE_SIZE = 20;
  const MAX_PEAKS_WIDTH = 8192;
  const STEP_SECONDS = 5;
  const MEDIA_ERRORS = {
    1: "playback was aborted",
    2: "a network error stopped the download",
    3: "the file could not be decoded",
    4: "the file or its link cannot be played",
  };

  const $ = (id) => document.getElementById(id);
  const ui = {
    keyForm: $("key-form"), keyInput: $("api-key"), forget: $("forget-key"),
    status: $("status"), error: $("error"),
    listSection: $("list-section"), rows: document.querySelector("#recordings tbody"),
    listEmpty: $("list-empty"), prev: $("prev-page"), next: $("next-page"),
    pageLabel: $("page-label"),
    playerSection: $("player-section"), heading: $("player-heading"),
    meta: $("recording-meta"), mediaChoice: $("media-choice"),
    canvas: $("waveform"), note: $("waveform-note"),
    audio: $("audio"), video: $("video"), time: $("time"), download: $("download"),
  };

  let apiKey = null;
  let offset = 0;
  // What is open: {recordingId, media, element, peaks, token, retried}; token tells a
  // late answer for something no longer open from the current one.
  let current = null;
  let tokens = 0;
  let frame = 0;

  class ApiError extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  }

  function explain(status, detail, retryAfter) {
    switch (status) {
      case 401:
        return "The gateway did not accept this API key (401). Check it and paste it again.";
      case 403:
        return `Not allowed (403): ${detail || "this key may not do that."}`;
      case 404:
        return `Not found (404): ${detail || "it does not exist, or it is not yours."}`;
      case 429:
        return "Too many failed attempts from this address (429). Try again in "
          + `${retryAfter || "a few"} seconds.`;
      default:
        return `The gateway answered ${status}${detail ? `: ${detail}` : "."}`;
    }
  }

  async function api(path) {
    let response;
    try {
      response = await fetch(new URL(path, API_BASE), {
        headers: { "X-API-Key": apiKey, Accept: "application/json" },
        cache: "no-store",
        credentials: "omit",
      });
    } catch (error) {
      throw new ApiError(0, "Could not reach the gateway (network error). "
        + "Check the connection and try again.");
    }
    let body = null;
    try {
      body = await response.json();
    } catch (error) {
      body = null;
    }
    if (!response.ok) {
      const detail = body && typeof body.detail === "string" ? body.detail : "";
      throw new ApiError(response.status,
        explain(response.status, detail, response.headers.get("Retry-After")));
    }
    if (body === null) {
      throw new ApiError(response.status, "The gateway answered with something other than JSON.");
    }
    return body;
  }

  // Messages ---------------------------------------------------------------------------

  function say(text) {
    ui.status.textContent = text;
  }

  function showError(error) {
    ui.error.textContent = error instanceof ApiError || error instanceof Error
      ? error.message : String(error);
    ui.error.hidden = false;
    if (error instanceof ApiError && error.status === 401) {
      ui.keyInput.setAttribute("aria-invalid", "true");
      ui.keyInput.focus();
    }
  }

  function clearError() {
    ui.error.hidden = true;
    ui.error.textContent = "";
    ui.keyInput.removeAttribute("aria-invalid");
  }

  // Run an action from a button or form; any failure becomes the page's error message.
  function guarded(action) {
    return async (event) => {
      if (event) event.preventDefault();
      clearError();
      try {
        await action(event);
      } catch (error) {
        say("");
        showError(error);
      }
    };
  }

  // The key -------------------------------------------------------------------------------

  function readStoredKey() {
    try {
      return localStorage.getItem(KEY_STORAGE);
    } catch (error) {
      return null; // storage disabled: the key lives until the page is closed
    }
  }

  function storeKey(key) {
    try {
      if (key === null) localStorage.removeItem(KEY_STORAGE);
      else localStorage.setItem(KEY_STORAGE, key);
    } catch (error) {
      // storage disabled: nothing to keep or forget
    }
  }

  function useKey(key) {
    apiKey = key;
    ui.forget.disabled = key === null;
    ui.keyInput.placeholder = key === null ? "" : "A key is saved in this browser";
  }

  const submitKey = guarded(async () => {
    const key = ui.keyInput.value.trim();
    if (!key) {
      throw new Error("Paste an API key first.");
    }
    storeKey(key);
    useKey(key);
    ui.keyInput.value = "";
    offset = 0;
    await loadList();
  });

  function forgetKey() {
    storeKey(null);
    useKey(null);
    closePlayer();
    ui.listSection.hidden = true;
    ui.rows.replaceChildren();
    clearError();
    say("The key is forgotten: it is no longer kept in this browser.");
    ui.keyInput.focus();
  }

  // The list ------------------------------------------------------------------------------

  function formatTime(seconds) {
    if (!Number.isFinite(seconds) || seconds < 0) seconds = 0;
    const whole = Math.floor(seconds);
    const h = Math.floor(whole / 3600);
    const m = Math.floor((whole % 3600) / 60);
    const s = String(whole % 60).padStart(2, "0");
    return h ? `${h}:${String(m).padStart(2, "0")}:${s}` : `${m}:${s}`;
  }

  function formatSize(bytes) {
    if (!Number.isFinite(bytes)) return "";
    const units = ["B", "KB", "MB", "GB", "TB"];
    let value = bytes;
    let unit = 0;
    while (value >= 1000 && unit < units.length - 1) {
      value /= 1000;
      unit += 1;
    }
    return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
  }

  function formatDate(text) {
    const date = new Date(text);
    return Number.isNaN(date.getTime()) ? (text || "") : date.toLocaleString();
  }

  function describeMedia(media) {
    const parts = [`${media.type} ${media.format}`];
    if (typeof media.duration_seconds === "number") parts.push(formatTime(media.duration_seconds));
    if (typeof media.file_size_bytes === "number") parts.push(formatSize(media.file_size_bytes));
    return parts.join(", ");
  }

  function cell(text) {
    const td = document.createElement("td");
    td.textContent = text;
    return td;
  }

  async function loadList() {
    say("Loading recordings…");
    // One more than a page tells whether there is a next one (the API gives no total).
    const data = await api(`recordings?limit=${PAGE_SIZE + 1}&offset=${offset}`);
    const all = Array.isArray(data.recordings) ? data.recordings : [];
    const recordings = all.slice(0, PAGE_SIZE);
    ui.rows.replaceChildren(...recordings.map((recording) => {
      const row = document.createElement("tr");
      const media = Array.isArray(recording.media_files) ? recording.media_files : [];
      const open = document.createElement("button");
      open.type = "button";
      open.textContent = "Open";
      open.setAttribute("aria-label", `Open recording ${recording.id}`);
      open.addEventListener("click", guarded(() => openRecording(recording.id)));
      const action = document.createElement("td");
      action.append(open);
      row.append(
        cell(`#${recording.id}${recording.meeting_id != null ? ` · meeting ${recording.meeting_id}` : ""}`),
        cell(formatDate(recording.created_at)),
        cell(recording.status || ""),
        cell(media.length ? media.map(describeMedia).join("; ") : "no media yet"),
        action,
      );
      return row;
    }));
    ui.listEmpty.hidden = recordings.length > 0;
    ui.prev.disabled = offset === 0;
    ui.next.disabled = all.length <= PAGE_SIZE;
    const first = recordings.length ? offset + 1 : offset;
    ui.pageLabel.textContent = `${first}–${offset + recordings.length}`;
    ui.listSection.hidden = false;
    say(recordings.length ? `Showing recordings ${first} to ${offset + recordings.length}.`
      : "No recordings here.");
  }

  // The player ----------------------------------------------------------------------------

  function closePlayer() {
    if (current && current.element) {
      const element = current.element;
      element.pause();
      element.removeAttribute("src");
      element.load();
    }
    current = null;
    stopFrames();
    ui.playerSection.hidden = true;
  }

  async function openRecording(recordingId) {
    say(`Opening recording ${recordingId}…`);
    const recording = await api(`recordings/${recordingId}`);
    closePlayer();
    const media = Array.isArray(recording.media_files) ? recording.media_files : [];
    ui.heading.textContent = `Recording #${recording.id}`;
    ui.meta.textContent = [formatDate(recording.created_at), recording.status]
      .filter(Boolean).join(" · ");
    ui.mediaChoice.replaceChildren(...media.map((item) => {
      const button = document.createElement("button");
      button.type = "button";
      button.textContent = describeMedia(item);
      button.dataset.mediaId = String(item.id);
      button.setAttribute("aria-pressed", "false");
      button.addEventListener("click", guarded(() => selectMedia(recording.id, item)));
      return button;
    }));
    ui.playerSection.hidden = false;
    ui.heading.focus();
    if (!media.length) {
      say("");
      throw new Error(`Recording #${recording.id} has no media files yet.`);
    }
    await selectMedia(recording.id, media[0]);
  }

  async function selectMedia(recordingId, media) {
    if (current && current.element) {
      current.element.pause();
      current.element.removeAttribute("src");
      current.element.load();
    }
    tokens += 1;
    const element = media.type === "video" ? ui.video : ui.audio;
    current = { recordingId, media, element, peaks: null, token: tokens, retried: false };
    for (const button of ui.mediaChoice.children) {
      button.setAttribute("aria-pressed", String(button.dataset.mediaId === String(media.id)));
    }
    ui.audio.hidden = element !== ui.audio;
    ui.video.hidden = element !== ui.video;
    draw();
    const token = current.token;
    // The waveform may take a while the first time (the file is scanned once): play first.
    const peaks = loadPeaks(recordingId, media, token);
    const link = await api(`recordings/${recordingId}/media/${media.id}/playback-url`);
    if (!current || current.token !== token) return;
    element.src = new URL(link.playback_url, window.location.href).href;
    element.load();
    say(`Ready: recording #${recordingId}, ${describeMedia(media)}.`);
    await peaks;
  }

  async function loadPeaks(recordingId, media, token) {
    ui.note.textContent = "Loading the waveform…";
    const width = Math.max(1, Math.min(MAX_PEAKS_WIDTH,
      Math.round(ui.canvas.clientWidth * (window.devicePixelRatio || 1)) || 1000));
    try {
      const peaks = await api(`recordings/${recordingId}/media/${media.id}/peaks?width=${width}`);
      if (!current || current.token !== token) return;
      current.peaks = peaks;
      ui.note.textContent = "";
    } catch (error) {
      if (!current || current.token !== token) return;
      ui.note.textContent = error.status === 404
        ? `No waveform for this file. ${error.message.replace(/^Not found \(404\): /, "")}`
        : `No waveform: ${error.message}`;
    }
    draw();
  }

  function duration() {
    if (!current) return 0;
    const seconds = current.element.duration;
    if (Number.isFinite(seconds) && seconds > 0) return seconds;
    return current.peaks ? current.peaks.duration : 0;
  }

  function seekTo(seconds) {
    if (!current) return;
    const total = duration();
    current.element.currentTime = Math.max(0, Math.min(total, seconds));
    draw();
  }

  // Drawing -------------------------------------------------------------------------------

  function colour(name) {
    return getComputedStyle(ui.canvas).getPropertyValue(name).trim() || "#888";
  }

  function draw() {
    const canvas = ui.canvas;
    const ratio = window.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) {
      canvas.width = width;
      canvas.height = height;
    }
    const context = canvas.getContext("2d");
    context.clearRect(0, 0, width, height);
    const middle = height / 2;
    const total = duration();
    const time = current ? current.element.currentTime : 0;
    const played = total > 0 ? Math.min(1, time / total) * width : 0;
    const pairs = current && current.peaks ? current.peaks.peaks : null;
    const wave = colour("--wave");
    const wavePlayed = colour("--wave-played");
    if (pairs && pairs.length) {
      for (let x = 0; x < width; x += 1) {
        const [low, high] = pairs[Math.min(pairs.length - 1, Math.floor((x * pairs.length) / width))];
        const top = middle - high * middle * 0.95;
        const bottom = middle - low * middle * 0.95;
        context.fillStyle = x < played ? wavePlayed : wave;
        context.fillRect(x, top, 1, Math.max(1, bottom - top));
      }
    } else {
      context.fillStyle = wave;
      context.fillRect(0, middle - ratio / 2, width, ratio);
    }
    if (current) {
      context.fillStyle = colour("--playhead");
      context.fillRect(Math.min(width - 2 * ratio, played), 0, 2 * ratio, height);
    }
    canvas.setAttribute("aria-valuemax", String(Math.round(total)));
    canvas.setAttribute("aria-valuenow", String(Math.round(time)));
    canvas.setAttribute("aria-valuetext", `${formatTime(time)} of ${formatTime(total)}`);
    ui.time.textContent = `${formatTime(time)} / ${formatTime(total)}`;
  }

  function frames() {
    draw();
    frame = window.requestAnimationFrame(frames);
  }

  function stopFrames() {
    if (frame) window.cancelAnimationFrame(frame);
    frame = 0;
  }

  // Events --------------------------------------------------------------------------------

  function onCanvasClick(event) {
    if (!current) return;
    const box = ui.canvas.getBoundingClientRect();
    const fraction = Math.min(1, Math.max(0, (event.clientX - box.left) / box.width));
    seekTo(fraction * duration());
  }

  function onCanvasKey(event) {
    if (!current) return;
    const element = current.element;
    const total = duration();
    const moves = {
      ArrowLeft: -STEP_SECONDS, ArrowDown: -STEP_SECONDS,
      ArrowRight: STEP_SECONDS, ArrowUp: STEP_SECONDS,
      PageDown: -total / 10, PageUp: total / 10,
    };
    if (event.key in moves) {
      seekTo(element.currentTime + moves[event.key]);
    } else if (event.key === "Home") {
      seekTo(0);
    } else if (event.key === "End") {
      seekTo(total);
    } else if (event.key === " " || event.key === "Enter") {
      if (element.paused) element.play().catch((error) => showError(error));
      else element.pause();
    } else {
      return;
    }
    event.preventDefault();
  }

  async function onMediaError(event) {
    const element = event.target;
    if (!current || current.element !== element || !element.getAttribute("src")) return;
    const code = element.error ? element.error.code : 0;
    // A signed link lasts GATEWAY_PRESIGN_EXPIRY seconds: ask for a fresh one, once.
    if (!current.retried && (code === 2 || code === 4)) {
      current.retried = true;
      const { recordingId, media, token } = current;
      const at = element.currentTime;
      try {
        const link = await api(`recordings/${recordingId}/media/${media.id}/playback-url`);
        if (!current || current.token !== token) return;
        element.src = new URL(link.playback_url, window.location.href).href;
        element.currentTime = at;
        return;
      } catch (error) {
        showError(error);
        return;
      }
    }
    showError(new Error(`The browser could not play this file: ${MEDIA_ERRORS[code] || "unknown error"}.`));
  }

  const download = guarded(async () => {
    if (!current) return;
    const { recordingId, media } = current;
    const info = await api(`recordings/${recordingId}/media/${media.id}/download`);
    // A link to the file with `Content-Disposition: attachment` (signed, or presigned by
    // the object store): the browser saves it without leaving the page, and nothing is
    // held in this page's memory.
    const link = document.createElement("a");
    link.href = new URL(info.download_url, window.location.href).href;
    link.download = info.filename || "";
    link.rel = "noopener noreferrer";
    link.hidden = true;
    document.body.append(link);
    link.click();
    link.remove();
    say(`Downloading ${info.filename || "the file"}…`);
  });

  function init() {
    ui.keyForm.addEventListener("submit", submitKey);
    ui.forget.addEventListener("click", forgetKey);
    ui.prev.addEventListener("click", guarded(async () => {
      offset = Math.max(0, offset - PAGE_SIZE);
      await loadList();
    }));
    ui.next.addEventListener("click", guarded(async () => {
      offset += PAGE_SIZE;
      await loadList();
    }));
    ui.canvas.addEventListener("click", onCanvasClick);
    ui.canvas.addEventListener("keydown", onCanvasKey);
    ui.download.addEventListener("click", download);
    for (const element of [ui.audio, ui.video]) {
      for (const name of ["timeupdate", "seeked", "loadedmetadata", "durationchange"]) {
        element.addEventListener(name, () => draw());
      }
      element.addEventListener("loadedmetadata", () => {
        if (current && current.element === element) current.retried = false;
      });
      element.addEventListener("play", () => { stopFrames(); frames(); });
      element.addEventListener("pause", () => { stopFrames(); draw(); });
      element.addEventListener("ended", () => { stopFrames(); draw(); });
      element.addEventListener("error", onMediaError);
    }
    window.addEventListener("resize", () => draw());
    const saved = readStoredKey();
    useKey(saved);
    if (saved) {
      guarded(loadList)();
    } else {
      say("Paste an API key to list your recordings.");
      ui.keyInput.focus();
    }
  }

  init();
}());
