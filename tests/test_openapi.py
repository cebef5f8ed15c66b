"""The OpenAPI document against the gateway: valid, complete, and true on the wire."""

from __future__ import annotations

import re
from collections.abc import Iterator
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from aiohttp import web
from openapi_spec_validator import validate
from openapi_spec_validator.validation import OpenAPIV31SpecValidator

from gateway.app import create_app
from gateway.docs_page import render
from gateway.openapi import load_document
from gateway.settings import Settings
from tests.conftest import SIGNING_KEY, AiohttpClient
from tests.fake_upstream import FakeMeetingApi
from tests.live_gateway import LiveGateway
from tests.test_browser import CHROMIUM_ARGS, TIMEOUT_MS, _require_chromium

METHODS = ("get", "head", "post", "put", "patch", "delete")
MODES = ("standalone", "sidecar")

# Sidecar mode proxies every path it does not own to the meeting API: whatever that API
# serves, not the gateway's, so the document describes it in words only.
SIDECAR_PROXY = ("*", "/{path}")


def settings_for(mode: str, data_dir: Path, **changes: Any) -> Settings:
    base = Settings(data_dir=data_dir, signing_keys=(SIGNING_KEY,), local_storage_fsync=False,
                    auth_failure_burst=100_000)
    if mode == "sidecar":
        # Routes are set up without connecting: no upstream needs to listen here.
        changes = {"catalog": "upstream", "upstream_url": "http://127.0.0.1:9", **changes}
    return base.with_changes(**changes)


def operations_in(document: dict[str, Any], mode: str) -> set[tuple[str, str]]:
    """(method, path) of every operation the document says a gateway in `mode` answers."""
    return {(method, path) for path, item in document["paths"].items()
            for method in METHODS if method in item and mode in item[method]["x-modes"]}


def registered_routes(app: web.Application) -> tuple[set[tuple[str, str]], dict[str, str]]:
    """(method, path) of every route, and each path parameter's pattern in the router."""
    routes: set[tuple[str, str]] = set()
    patterns: dict[str, str] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else ""
        routes.add((route.method.lower(), path))
        regex = route.resource.get_info().get("pattern") if route.resource else None
        if regex is not None:
            patterns.update(re.findall(r"\(\?P<(\w+)>(.*?)\)(?=/|$)", regex.pattern))
    return routes, patterns


# ---- the document itself -----------------------------------------------------------------

def test_document_is_valid_openapi_3_1() -> None:
    validate(load_document(), cls=OpenAPIV31SpecValidator)


def test_document_states_the_package_version() -> None:
    assert load_document()["info"]["version"] == version("recordings-gateway")


@pytest.mark.parametrize("mode", MODES)
def test_routes_and_document_agree(mode: str, tmp_path: Path) -> None:
    """Each registered route is documented for its mode, and each documented one routed."""
    document = load_document()
    routes, _ = registered_routes(create_app(settings_for(mode, tmp_path)))
    documented = operations_in(document, mode)
    # aiohttp answers HEAD wherever it answers GET (RFC 9110 §9.3.2: the same, without
    # content); only /raw, where HEAD is how a player asks for the size, lists it.
    automatic_heads = {("head", path) for method, path in routes if method == "get"}
    undocumented = routes - documented - automatic_heads - {SIDECAR_PROXY}
    assert not undocumented, f"registered in {mode} mode but not documented: {undocumented}"
    unrouted = documented - routes
    assert not unrouted, f"documented for {mode} mode but not registered: {unrouted}"
    assert (SIDECAR_PROXY in routes) == (mode == "sidecar")


@pytest.mark.parametrize("mode", MODES)
def test_path_parameters_are_the_routers_patterns(mode: str, tmp_path: Path) -> None:
    document = load_document()
    _, router_patterns = registered_routes(create_app(settings_for(mode, tmp_path)))
    documented: dict[str, str] = {}
    for item in document["paths"].values():
        for reference in item["parameters"]:
            parameter = resolve(document, reference)
            if parameter["in"] == "path":
                documented[parameter["name"]] = parameter["schema"]["pattern"]
    router_patterns.pop("path", None)  # the sidecar proxy's catch-all
    assert {"recording_id", "media_id", "platform", "native_meeting_id"} <= set(router_patterns)
    for name, pattern in router_patterns.items():
        assert documented[name] == f"^{pattern}$", name


def resolve(document: dict[str, Any], node: dict[str, Any]) -> dict[str, Any]:
    while "$ref" in node:
        target: Any = document
        for part in node["$ref"].removeprefix("#/").split("/"):
            target = target[part]
        node = target
    return node


def test_every_response_is_described_as_the_middlewares_make_it() -> None:
    """X-Request-ID on every response; 429 on every operation (the limit comes before the
    route); 401 on every operation that needs credentials."""
    document = load_document()
    for path, item in document["paths"].items():
        for method in METHODS:
            if method not in item:
                continue
            operation = item[method]
            where = f"{method.upper()} {path}"
            assert "429" in operation["responses"], where
            if operation.get("security", document["security"]):
                assert "401" in operation["responses"], where
            for status, response in operation["responses"].items():
                headers = resolve(document, response).get("headers", {})
                assert "X-Request-ID" in headers, f"{where} {status}"


# ---- served, in both modes ---------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("public_url", ["", "https://api.example.com/gw"])
async def test_openapi_json_is_the_document_with_this_deployments_server(
    aiohttp_client: AiohttpClient, tmp_path: Path, mode: str, public_url: str,
) -> None:
    api = FakeMeetingApi()
    changes: dict[str, Any] = {"public_url": public_url}
    if mode == "sidecar":
        upstream = await aiohttp_client(api.app)
        changes["upstream_url"] = str(upstream.make_url("")).rstrip("/")
    client = await aiohttp_client(create_app(settings_for(mode, tmp_path / "data", **changes)))
    async with client.get("/openapi.json") as resp:  # no credentials: public
        assert resp.status == 200
        assert resp.content_type == "application/json"
        served = await resp.json()
    expected = load_document()
    expected["servers"] = [{"url": public_url or "/"}]
    assert served == expected
    async with client.get("/docs") as resp:
        assert resp.status == 200 and resp.content_type == "text/html"
    assert sum(api.calls.values()) == 0  # answered by the gateway, not proxied


async def test_docs_page_allows_no_script(aiohttp_client: AiohttpClient, tmp_path: Path) -> None:
    client = await aiohttp_client(create_app(settings_for("standalone", tmp_path / "data")))
    async with client.get("/docs") as resp:
        assert resp.status == 200
        page = await resp.text()
        policy = resp.headers["Content-Security-Policy"]
    directives = dict(d.strip().split(" ", 1) for d in policy.split(";"))
    assert directives["default-src"] == "'none'"  # and so no script-src: no script at all
    assert re.fullmatch(r"'sha256-[A-Za-z0-9+/]+={0,2}'", directives["style-src"])
    assert directives["frame-ancestors"] == "'none'"
    assert not re.search(r"<script|<[^>]+\son[a-z]+\s*=", page, re.IGNORECASE)
    document = load_document()
    for path, item in document["paths"].items():
        for method in METHODS:
            if method in item:
                assert f'id="{item[method]["operationId"]}"' in page
                assert f"{method.upper()}</span>{path}" in page
    for name in document["components"]["schemas"]:
        assert f'id="schema-{name}"' in page


def test_docs_page_escapes_what_the_document_says() -> None:
    document = load_document()
    document["info"]["summary"] = "<img src=x onerror=alert(1)> and `<b>`"
    document["paths"]["/healthz"]["get"]["description"] = "- one <i>\n- two **bold**"
    page = render(document).html
    assert "<img" not in page and "&lt;img src=x onerror=alert(1)&gt;" in page
    assert "<code>&lt;b&gt;</code>" in page
    assert "<ul><li>one &lt;i&gt;</li><li>two <strong>bold</strong></li></ul>" in page


@pytest.mark.browser
async def test_chromium_shows_the_docs_page_offline_under_its_policy(
    aiohttp_client: AiohttpClient, tmp_path: Path,
) -> None:
    """The page's style applies under its CSP, nothing is blocked, nothing is fetched."""
    _require_chromium()
    from playwright.async_api import async_playwright

    client = await aiohttp_client(create_app(settings_for("standalone", tmp_path / "data")))
    url = str(client.make_url("/docs"))
    requested: list[str] = []
    console: list[str] = []
    async with async_playwright() as pw:
        browser = await pw.chromium.launch(executable_path="/usr/bin/chromium",
                                           args=CHROMIUM_ARGS, headless=True, timeout=TIMEOUT_MS)
        try:
            page = await browser.new_page()
            page.on("request", lambda request: requested.append(request.url))
            page.on("console", lambda message: console.append(message.text))
            response = await page.goto(url, timeout=TIMEOUT_MS)
            assert response is not None and response.status == 200
            get_badge = await page.evaluate(
                "() => getComputedStyle(document.querySelector('.method.get')).backgroundColor")
            operations = await page.evaluate("() => document.querySelectorAll('article').length")
            scripts = await page.evaluate("() => document.scripts.length")
            link = await page.get_attribute("header a", "href")
        finally:
            await browser.close()
    assert get_badge == "rgb(9, 105, 218)"  # the style sheet was allowed by its hash
    document = load_document()
    assert operations == sum(method in item for item in document["paths"].values()
                             for method in METHODS)
    assert scripts == 0
    assert console == []  # a CSP violation would be reported here
    assert requested == [url]  # no font, script or style from anywhere else
    assert link == "openapi.json"


# ---- schemathesis against a live gateway -------------------------------------------------

def document_for_mode(mode: str) -> dict[str, Any]:
    """The document with only the operations a gateway in `mode` answers today."""
    document = load_document()
    keep = operations_in(document, mode)
    for path, item in list(document["paths"].items()):
        for method in METHODS:
            if method in item and (method, path) not in keep:
                del item[method]
        if not any(method in item for method in METHODS):
            del document["paths"][path]
    return document


# Answers that a request valid by the document may still get, by rules a schema cannot
# state: a storage name or a type/format pair the deployment does not have, a WAV upload
# that is not WAV (422); a precondition or a range that does not fit the file (412, 416).
USUAL = ["2xx", "3xx", "401", "403", "404", "409", "429"]
SCHEMATHESIS_CONFIG: dict[str, Any] = {
    # deterministic: Hypothesis derandomized, so a run is the same run every time.
    "generation": {"max-examples": 50, "deterministic": True, "database": "none",
                   # The fixture's own API key authenticates every request.
                   "with-security-parameters": False},
    "operations": [
        {"include-name": ["POST /recordings", "POST /recordings/{recording_id}/media"],
         "checks": {"positive_data_acceptance": {"expected-statuses": [*USUAL, "422"]}}},
        {"include-name": ["GET /recordings/{recording_id}/media/{media_id}/raw",
                          "HEAD /recordings/{recording_id}/media/{media_id}/raw"],
         "checks": {"positive_data_acceptance": {"expected-statuses": [*USUAL, "412", "416"]}}},
    ],
}
# Uploads are raw bytes, whatever their Content-Type says.
schemathesis.serializer.alias(["audio/wav", "audio/webm", "video/webm"],
                              "application/octet-stream")
standalone_schema = schemathesis.openapi.from_dict(
    document_for_mode("standalone"), config=schemathesis.Config.from_dict(SCHEMATHESIS_CONFIG))
# In sidecar mode a request that none of the gateway's routes match (an id that is not
# digits, a method it does not answer) is the meeting API's to answer, through the proxy:
# only requests valid by the document are the gateway's.
sidecar_schema = schemathesis.openapi.from_dict(
    document_for_mode("sidecar"), config=schemathesis.Config.from_dict({
        **SCHEMATHESIS_CONFIG,
        "generation": {**SCHEMATHESIS_CONFIG["generation"], "max-examples": 25,
                       "mode": "positive"},
        "checks": {"unsupported_method": {"enabled": False}}}))


@pytest.fixture(scope="module")
def standalone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    data_dir = tmp_path_factory.mktemp("standalone") / "data"
    with LiveGateway(settings_for("standalone", data_dir)) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def sidecar(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveGateway]:
    data_dir = tmp_path_factory.mktemp("sidecar") / "data"
    with LiveGateway(settings_for("sidecar", data_dir)) as gateway:
        yield gateway


def call_and_validate(case: schemathesis.Case[Any], gateway: LiveGateway) -> None:
    """Every check schemathesis has, on the live gateway.

    Half the generated ids (the odd ones) are swapped for a recording that exists, made
    for this operation alone, so that real answers are checked as well as 404s.
    """
    params = case.path_parameters or {}
    ids = [str(params[name]) for name in ("recording_id", "media_id") if name in params]
    # Only ids the router matches are swapped: an invalid one must stay what is tested.
    if ids and all(re.fullmatch(r"[0-9]{1,16}", i) for i in ids) and int(ids[0]) % 2:
        params["recording_id"], media_id = gateway.seeded(case.operation.label)
        if "media_id" in params:
            params["media_id"] = media_id
    case.call_and_validate(base_url=gateway.url, headers=gateway.headers,
                           session=gateway.session)


@standalone_schema.parametrize()
def test_standalone_gateway_answers_as_documented(
    case: schemathesis.Case[Any], standalone: LiveGateway
) -> None:
    call_and_validate(case, standalone)


@sidecar_schema.parametrize()
def test_sidecar_gateway_answers_as_documented(
    case: schemathesis.Case[Any], sidecar: LiveGateway
) -> None:
    call_and_validate(case, sidecar)
