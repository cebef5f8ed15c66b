// Proxies GET and HEAD of /api/recordings/... to ${GATEWAY_URL}/recordings/...
//
// The body is passed through as a stream (never buffered), and the headers that make
// seeking work (Range in; Content-Range, Accept-Ranges, Content-Length out) are forwarded,
// so a 206 from the gateway reaches the browser as a 206.

export const dynamic = "force-dynamic";
export const runtime = "nodejs";

// Request headers passed on to the gateway: ranges and conditional requests.
const REQUEST_HEADERS = ["range", "if-range", "if-none-match", "if-modified-since"];

// Response headers passed back to the browser.
const RESPONSE_HEADERS = [
  "content-type",
  "content-length",
  "content-range",
  "accept-ranges",
  "content-disposition",
  "etag",
  "last-modified",
  "cache-control",
  "location",
  "x-content-type-options",
];

// Ids and words only: no dot segments, no encoded slashes, nothing to escape /recordings/.
const SEGMENT = /^[A-Za-z0-9_-]+$/;

function gatewayUrl() {
  return (process.env.GATEWAY_URL || "http://127.0.0.1:8080").replace(/\/+$/, "");
}

async function proxy(request, { params }) {
  const { path } = await params;
  if (!path.every((segment) => SEGMENT.test(segment))) {
    return Response.json({ detail: "Not Found" }, { status: 404 });
  }
  const search = new URL(request.url).search; // e.g. a signed link's expires=...&signature=...
  const target = `${gatewayUrl()}/recordings/${path.join("/")}${search}`;

  // identity: fetch() would otherwise ask for gzip/br and decode it, leaving
  // Content-Length (and any Content-Range) describing bytes the browser never gets.
  const headers = new Headers({ "accept-encoding": "identity" });
  for (const name of REQUEST_HEADERS) {
    const value = request.headers.get(name);
    if (value !== null) headers.set(name, value);
  }
  // The caller's own credentials win; otherwise the server-side key, so a browser
  // page never needs (or sees) one.
  const apiKey = request.headers.get("x-api-key");
  const authorization = request.headers.get("authorization");
  if (apiKey) headers.set("x-api-key", apiKey);
  else if (authorization) headers.set("authorization", authorization);
  else if (process.env.GATEWAY_API_KEY) headers.set("x-api-key", process.env.GATEWAY_API_KEY);

  let upstream;
  try {
    upstream = await fetch(target, {
      method: request.method,
      headers,
      redirect: "manual",
      cache: "no-store",
      signal: request.signal, // the browser went away: stop reading from the gateway
    });
  } catch (error) {
    if (request.signal.aborted) return new Response(null, { status: 499 });
    console.error(`gateway request failed: ${request.method} ${target}: ${error}`);
    return Response.json({ detail: "Gateway unavailable" }, { status: 502 });
  }

  const out = new Headers();
  for (const name of RESPONSE_HEADERS) {
    const value = upstream.headers.get(name);
    if (value !== null) out.set(name, value);
  }
  const noBody = request.method === "HEAD" || upstream.status === 204 || upstream.status === 304;
  return new Response(noBody ? null : upstream.body, {
    status: upstream.status,
    statusText: upstream.statusText,
    headers: out,
  });
}

export { proxy as GET, proxy as HEAD };
