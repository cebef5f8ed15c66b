"""The OpenAPI document as one HTML page, rendered here rather than by a script.

A vendored renderer (swagger-ui, redoc) is a megabyte or more of JavaScript to keep
up to date and needs a looser Content-Security-Policy; the document is small and
fixed, so a few functions render it once: operations by tag, their parameters,
request bodies and responses, then the schemas. The page runs no script, and its
only style sheet is allowed by its hash.

Descriptions are CommonMark in the document; only what it uses is rendered here
(paragraphs, `- ` lists, `code` and **strong**). Everything is escaped first.
"""

from __future__ import annotations

import base64
import hashlib
import html
import re
from dataclasses import dataclass
from typing import Any

METHODS = ("get", "head", "post", "put", "patch", "delete")

CSS = """
body{font:15px/1.5 system-ui,sans-serif;margin:0;color:#1f2328;background:#fff}
header,main,nav{max-width:70rem;margin:0 auto;padding:0 1.5rem}
header{padding-top:1.5rem}
h1 small{font-size:.5em;color:#59636e;font-weight:normal}
h2{border-bottom:1px solid #d1d9e0;padding-bottom:.3rem;margin-top:2.5rem}
code{font:13px ui-monospace,monospace;background:#f6f8fa;padding:.1em .3em;border-radius:4px}
table{border-collapse:collapse;width:100%;margin:.5rem 0 1rem}
th,td{border:1px solid #d1d9e0;padding:.35rem .5rem;text-align:left;vertical-align:top}
th{background:#f6f8fa}
td p{margin:0 0 .4rem}
article{border:1px solid #d1d9e0;border-radius:6px;padding:0 1rem;margin:1rem 0}
article h3{font-family:ui-monospace,monospace;font-size:1rem}
.method{display:inline-block;min-width:4.5em;text-align:center;color:#fff;border-radius:4px;
padding:.1em .4em;margin-right:.5em;background:#59636e}
.get{background:#0969da}.head{background:#6e7781}.post{background:#1a7f37}
.put{background:#9a6700}.delete{background:#cf222e}
.meta{color:#59636e;font-size:.9em}
nav ul{columns:2;padding-left:1.2rem}
"""


@dataclass(frozen=True, slots=True)
class Page:
    """The page and the Content-Security-Policy that lets it show (and do) nothing more."""

    html: str
    content_security_policy: str


def _inline(text: str) -> str:
    escaped = html.escape(text, quote=False)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    return re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)


def markdown(text: str) -> str:
    """Paragraphs and `- ` lists of a description, with inline code and strong."""
    out: list[str] = []
    for block in re.split(r"\n\s*\n", text.strip()):
        lines = block.splitlines()
        if lines and lines[0].startswith("- "):
            items: list[str] = []
            for line in lines:
                if line.startswith("- "):
                    items.append(line[2:])
                elif items:
                    items[-1] += " " + line.strip()
            out.append("<ul>" + "".join(f"<li>{_inline(i)}</li>" for i in items) + "</ul>")
        elif block.strip():
            out.append(f"<p>{_inline(' '.join(line.strip() for line in lines))}</p>")
    return "".join(out)


class Renderer:
    def __init__(self, document: dict[str, Any]) -> None:
        self.doc = document

    def resolve(self, node: dict[str, Any]) -> dict[str, Any]:
        """Follow a local `$ref` (`#/components/...`) to what it names."""
        while "$ref" in node:
            target: Any = self.doc
            for part in node["$ref"].removeprefix("#/").split("/"):
                target = target[part]
            node = target
        return node

    def type_of(self, schema: dict[str, Any]) -> str:
        """A schema in a few words: `array of Recording`, `integer, 1 to 200, default 50`."""
        if "$ref" in schema:
            name = schema["$ref"].rsplit("/", 1)[-1]
            return f'<a href="#schema-{html.escape(name)}">{html.escape(name)}</a>'
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                return " or ".join(self.type_of(part) for part in schema[combinator])
        if "const" in schema:
            return f"<code>{html.escape(str(schema['const']))}</code>"
        kinds = schema.get("type")
        names = kinds if isinstance(kinds, list) else [kinds] if kinds else []
        text = " or ".join(html.escape(str(k)) for k in names) or "any"
        if "prefixItems" in schema:
            text = "[" + ", ".join(self.type_of(i) for i in schema["prefixItems"]) + "]"
        elif "items" in schema:
            text = f"array of {self.type_of(schema['items'])}"
        facts = []
        if "enum" in schema:
            values = ", ".join(f"<code>{html.escape(_json_word(v))}</code>"
                               for v in schema["enum"])
            facts.append(f"one of {values}")
        if "format" in schema:
            facts.append(html.escape(schema["format"]))
        if "pattern" in schema:
            facts.append(f"matching <code>{html.escape(schema['pattern'])}</code>")
        if "minimum" in schema or "maximum" in schema:
            low, high = schema.get("minimum"), schema.get("maximum")
            facts.append(f"{low} to {high}" if low is not None and high is not None
                         else f"at least {low}" if low is not None else f"at most {high}")
        if "maxLength" in schema:
            facts.append(f"at most {schema['maxLength']} characters")
        if "default" in schema:
            facts.append(f"default <code>{html.escape(_json_word(schema['default']))}</code>")
        return ", ".join([text, *facts])

    def parameters(self, parameters: list[dict[str, Any]]) -> str:
        if not parameters:
            return ""
        rows = []
        for parameter in map(self.resolve, parameters):
            required = " (required)" if parameter.get("required") else ""
            rows.append(
                f"<tr><td><code>{html.escape(parameter['name'])}</code>{required}</td>"
                f"<td>{html.escape(parameter['in'])}</td>"
                f"<td>{self.type_of(parameter.get('schema', {}))}</td>"
                f"<td>{markdown(parameter.get('description', ''))}</td></tr>")
        return ("<h4>Parameters</h4><table><tr><th>name</th><th>in</th><th>type</th>"
                "<th>description</th></tr>" + "".join(rows) + "</table>")

    def content(self, content: dict[str, Any]) -> str:
        return "<br>".join(
            f"<code>{html.escape(media_type)}</code>: {self.type_of(media.get('schema', {}))}"
            for media_type, media in content.items())

    def request_body(self, body: dict[str, Any] | None) -> str:
        if body is None:
            return ""
        body = self.resolve(body)
        required = "required" if body.get("required") else "optional"
        return (f"<h4>Request body ({required})</h4>{markdown(body.get('description', ''))}"
                f"<p>{self.content(body.get('content', {}))}</p>")

    def responses(self, responses: dict[str, Any]) -> str:
        rows = []
        for status, response in responses.items():
            response = self.resolve(response)
            headers = ", ".join(f"<code>{html.escape(name)}</code>"
                                for name in response.get("headers", {}))
            rows.append(
                f"<tr><td><strong>{html.escape(status)}</strong></td>"
                f"<td>{markdown(response.get('description', ''))}</td>"
                f"<td>{self.content(response.get('content', {})) or '(no body)'}</td>"
                f"<td>{headers}</td></tr>")
        return ("<h4>Responses</h4><table><tr><th>status</th><th>meaning</th><th>body</th>"
                "<th>headers</th></tr>" + "".join(rows) + "</table>")

    def credentials(self, operation: dict[str, Any]) -> str:
        requirements = operation.get("security", self.doc.get("security", []))
        names = [name for requirement in requirements for name in requirement]
        if not names:
            return "none (public)"
        schemes = self.doc["components"]["securitySchemes"]
        return " or ".join(html.escape(_scheme_label(schemes[name])) for name in names)

    def operation(self, path: str, method: str, item: dict[str, Any],
                  operation: dict[str, Any]) -> str:
        anchor = html.escape(operation.get("operationId", f"{method}-{path}"))
        meta = [f"Credentials: {self.credentials(operation)}"]
        if "x-role" in operation:
            meta.append(f"least role: {html.escape(operation['x-role'])}")
        if "x-modes" in operation:
            meta.append("modes: " + ", ".join(html.escape(m) for m in operation["x-modes"]))
        return (
            f'<article id="{anchor}"><h3><span class="method {method}">{method.upper()}</span>'
            f"{html.escape(path)}</h3>"
            f"<p><strong>{_inline(operation.get('summary', ''))}</strong></p>"
            f'<p class="meta">{" · ".join(meta)}</p>'
            f"{markdown(operation.get('description', ''))}"
            f"{self.parameters([*item.get('parameters', []), *operation.get('parameters', [])])}"
            f"{self.request_body(operation.get('requestBody'))}"
            f"{self.responses(operation.get('responses', {}))}</article>")

    def operations_by_tag(self) -> dict[str, list[tuple[str, str, dict[str, Any], dict[str, Any]]]]:
        groups: dict[str, list[tuple[str, str, dict[str, Any], dict[str, Any]]]] = {
            tag["name"]: [] for tag in self.doc.get("tags", [])}
        for path, item in self.doc["paths"].items():
            for method in METHODS:
                if method in item:
                    operation = item[method]
                    tag = (operation.get("tags") or ["other"])[0]
                    groups.setdefault(tag, []).append((path, method, item, operation))
        return groups

    def schema(self, name: str, schema: dict[str, Any]) -> str:
        anchor = html.escape(name)
        body = markdown(schema.get("description", ""))
        properties = schema.get("properties", {})
        if properties:
            required = set(schema.get("required", []))
            rows = "".join(
                f"<tr><td><code>{html.escape(prop)}</code>"
                f"{' (required)' if prop in required else ''}</td>"
                f"<td>{self.type_of(value)}</td>"
                f"<td>{markdown(self.resolve(value).get('description', ''))}</td></tr>"
                for prop, value in properties.items())
            body += ("<table><tr><th>field</th><th>type</th><th>description</th></tr>"
                     f"{rows}</table>")
        else:
            plain = {k: v for k, v in schema.items() if k != "description"}
            body += f"<p>{self.type_of(plain)}</p>"
        return f'<h3 id="schema-{anchor}">{anchor}</h3>{body}'

    def page(self) -> str:
        info = self.doc["info"]
        groups = self.operations_by_tag()
        tag_text = {tag["name"]: tag.get("description", "") for tag in self.doc.get("tags", [])}
        contents = "".join(
            f'<li><a href="#{html.escape(op.get("operationId", ""))}">'
            f"{method.upper()} {html.escape(path)}</a></li>"
            for ops in groups.values() for path, method, _, op in ops)
        sections = "".join(
            f'<section id="tag-{html.escape(tag)}"><h2>{html.escape(tag)}</h2>'
            f"{markdown(tag_text.get(tag, ''))}"
            + "".join(self.operation(*entry) for entry in ops) + "</section>"
            for tag, ops in groups.items() if ops)
        schemes = "".join(
            f"<tr><td><code>{html.escape(name)}</code></td>"
            f"<td>{html.escape(_scheme_label(scheme))}</td>"
            f"<td>{markdown(scheme.get('description', ''))}</td></tr>"
            for name, scheme in self.doc["components"]["securitySchemes"].items())
        schemas = "".join(self.schema(name, schema)
                          for name, schema in self.doc["components"]["schemas"].items())
        servers = ", ".join(f"<code>{html.escape(server['url'])}</code>"
                            for server in self.doc.get("servers", []))
        title = html.escape(info["title"])
        return (
            '<!doctype html><html lang="en"><head><meta charset="utf-8">'
            '<meta name="viewport" content="width=device-width, initial-scale=1">'
            f"<title>{title} API</title><style>{CSS}</style></head><body>"
            f"<header><h1>{title} <small>{html.escape(info['version'])}</small></h1>"
            f"<p>{_inline(info.get('summary', ''))}</p>"
            f'<p class="meta">OpenAPI {html.escape(self.doc["openapi"])} · '
            f'<a href="openapi.json">openapi.json</a> · server {servers}</p></header>'
            f"<nav><h2>Operations</h2><ul>{contents}</ul></nav>"
            f"<main><section id=\"overview\"><h2>Overview</h2>"
            f"{markdown(info.get('description', ''))}</section>"
            f'<section id="authentication"><h2>Authentication</h2><table><tr><th>scheme</th>'
            f"<th>how</th><th>description</th></tr>{schemes}</table></section>"
            f'{sections}<section id="schemas"><h2>Schemas</h2>{schemas}</section>'
            "</main></body></html>")


def _json_word(value: Any) -> str:
    return "null" if value is None else str(value).lower() if isinstance(value, bool) \
        else str(value)


def _scheme_label(scheme: dict[str, Any]) -> str:
    if scheme.get("type") == "apiKey":
        return f"{scheme['name']} ({scheme['in']})"
    if scheme.get("type") == "http":
        return f"Authorization: {scheme['scheme'].capitalize()} {scheme.get('bearerFormat', '')}"\
            .rstrip()
    return str(scheme.get("type", ""))


def render(document: dict[str, Any]) -> Page:
    """The page for `document`, and a CSP that allows its one style sheet and nothing else."""
    digest = base64.b64encode(hashlib.sha256(CSS.encode()).digest()).decode()
    policy = (f"default-src 'none'; style-src 'sha256-{digest}'; base-uri 'none'; "
              "form-action 'none'; frame-ancestors 'none'")
    return Page(Renderer(document).page(), policy)
