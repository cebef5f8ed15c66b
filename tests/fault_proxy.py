"""A TCP proxy on 127.0.0.1 that breaks HTTP exchanges on purpose.

It stands between the gateway and a real server (moto's S3, the test meeting API)
and passes bytes through unchanged, except for the requests a rule names: those it
delays, trickles, cuts, stalls, resets, drops or answers itself. It follows HTTP/1.1
framing (Content-Length, chunked, 1xx interim answers) so that a fault hits one
request and not the ones around it, and it counts the connections it holds, so that
a test can see whether the gateway let go of them.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import socket
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from enum import Enum

PIECE = 64 * 1024


class Fault(Enum):
    """What happens to a request that a rule matches."""

    PASS = "pass"  # forwarded as it is (a rule that only counts)
    REFUSE_ANSWER = "refuse_answer"  # request read, connection closed without a word
    RESET = "reset"  # request read, connection reset (RST)
    HANG = "hang"  # request read, never answered; held until the client gives up
    DEAF = "deaf"  # request head read, then nothing more read or sent: a dead network path
    ANSWER = "answer"  # answered with `answer` by the proxy itself, then closed
    DELAY = "delay"  # the real answer, `delay` seconds late
    TRICKLE = "trickle"  # the real answer, its body in `piece`-byte pieces `delay` apart
    CUT_BODY = "cut_body"  # the real head and `after` bytes of body, then closed (FIN)
    RESET_BODY = "reset_body"  # the real head and `after` bytes of body, then reset
    STALL_BODY = "stall_body"  # the real head and `after` bytes of body, then silence
    DROP_ANSWER = "drop_answer"  # forwarded, done by the server, its answer never sent
    LONG_BODY = "long_body"  # the real answer, with `after` more bytes than it says it has


@dataclass
class Rule:
    """Apply `fault` to requests whose method and target match, `times` times (None: always)."""

    fault: Fault
    method: str | None = None
    path: str | None = None  # a substring of the request target
    times: int | None = None
    after: int = 0
    delay: float = 0.0
    piece: int = PIECE
    answer: bytes = b""
    hits: int = 0

    def matches(self, method: str, target: str) -> bool:
        return ((self.method is None or self.method == method)
                and (self.path is None or self.path in target)
                and (self.times is None or self.hits < self.times))


@dataclass
class Message:
    """The head of one request or answer, parsed just enough to frame its body."""

    raw: bytes
    start: str
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def parse(cls, raw: bytes) -> Message:
        lines = raw.decode("latin-1").split("\r\n")
        headers: dict[str, str] = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if sep:
                headers[name.strip().lower()] = value.strip()
        return cls(raw, lines[0], headers)

    @property
    def chunked(self) -> bool:
        return "chunked" in self.headers.get("transfer-encoding", "").lower()

    @property
    def length(self) -> int | None:
        value = self.headers.get("content-length")
        return int(value) if value is not None else None

    @property
    def closes(self) -> bool:
        return self.headers.get("connection", "").lower() == "close"


def http_answer(status: int, body: bytes, *, content_type: str = "application/json",
                content_length: int | None = None) -> bytes:
    """A complete answer for Fault.ANSWER; `content_length` may lie (a truncated body)."""
    length = len(body) if content_length is None else content_length
    return (f"HTTP/1.1 {status} Fault\r\nContent-Type: {content_type}\r\n"
            f"Content-Length: {length}\r\nConnection: close\r\n\r\n").encode() + body


async def _read_head(reader: asyncio.StreamReader) -> bytes | None:
    try:
        return await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        return None


async def _body(reader: asyncio.StreamReader, head: Message, *,
                until_close: bool) -> AsyncIterator[bytes]:
    """The raw bytes of a message body (chunk framing included), as they arrive."""
    if head.chunked:
        while True:
            line = await reader.readuntil(b"\r\n")
            yield line
            size = int(line.split(b";")[0], 16)
            if size == 0:
                while (trailer := await reader.readuntil(b"\r\n")) != b"\r\n":
                    yield trailer
                yield trailer
                return
            async for piece in _exactly(reader, size + 2):
                yield piece
    elif head.length is not None:
        async for piece in _exactly(reader, head.length):
            yield piece
    elif until_close:
        while piece := await reader.read(PIECE):
            yield piece


async def _exactly(reader: asyncio.StreamReader, size: int) -> AsyncIterator[bytes]:
    while size:
        piece = await reader.read(min(PIECE, size))
        if not piece:
            raise asyncio.IncompleteReadError(b"", size)
        size -= len(piece)
        yield piece


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset rather than a FIN: SO_LINGER with a zero timeout."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Closed(Exception):
    """The exchange ended on purpose (a fault) or because a side went away."""


class FaultProxy:
    """Start with `await FaultProxy.start(host, port)`; stop with `await proxy.close()`."""

    def __init__(self, target_host: str, target_port: int, *,
                 receive_buffer: int | None = None) -> None:
        self.target = (target_host, target_port)
        self.receive_buffer = receive_buffer
        self.rules: list[Rule] = []
        self.requests: list[tuple[str, str]] = []
        self.heads: list[Message] = []  # of the requests, in order
        self.faults: list[tuple[Fault, str, str]] = []
        self.port = 0
        self._server: asyncio.Server | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        self._closing = asyncio.Event()

    @classmethod
    async def start(cls, target_host: str, target_port: int, *,
                    receive_buffer: int | None = None) -> FaultProxy:
        """`receive_buffer` (SO_RCVBUF) bounds what a client can send that nobody reads."""
        proxy = cls(target_host, target_port, receive_buffer=receive_buffer)
        await proxy.listen()
        return proxy

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def open_connections(self) -> int:
        """Connections from clients that are still open (held, idle or busy)."""
        return len(self._tasks)

    def add(self, fault: Fault, *, method: str | None = None, path: str | None = None,
            times: int | None = None, after: int = 0, delay: float = 0.0, piece: int = PIECE,
            answer: bytes = b"") -> Rule:
        """A rule, checked after the ones added before it."""
        rule = Rule(fault, method, path, times, after, delay, piece, answer)
        self.rules.append(rule)
        return rule

    def clear(self) -> None:
        self.rules.clear()

    async def listen(self) -> None:
        """Accept connections (again, on the same port after `refuse`)."""
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if self.receive_buffer is not None:  # set before listen(): accepted sockets inherit it
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, self.receive_buffer)
        sock.bind(("127.0.0.1", self.port))
        self._server = await asyncio.start_server(self._serve, sock=sock)
        self.port = self._server.sockets[0].getsockname()[1]

    async def refuse(self) -> None:
        """Stop listening and drop every connection: new ones are refused, as by a dead host."""
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        await self.drop_connections()

    async def drop_connections(self) -> None:
        """Abort every connection; each exchange then ends on its own."""
        self._closing.set()
        for writer in list(self._writers):
            writer.transport.abort()
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5)
        self._closing.clear()

    async def close(self) -> None:
        await self.refuse()

    def _rule(self, method: str, target: str) -> Rule | None:
        self.requests.append((method, target))
        for rule in self.rules:
            if rule.matches(method, target):
                rule.hits += 1
                if rule.fault is not Fault.PASS:
                    self.faults.append((rule.fault, method, target))
                return rule
        return None

    async def _serve(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                     ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        self._writers.add(client_w)
        server_w: asyncio.StreamWriter | None = None
        try:
            server_r, server_w = await asyncio.open_connection(*self.target)
            self._writers.add(server_w)
            while await self._exchange(client_r, client_w, server_r, server_w):
                pass
        except (_Closed, OSError, ValueError, asyncio.IncompleteReadError,
                asyncio.LimitOverrunError):
            pass
        finally:
            for writer in (client_w, server_w):
                if writer is not None:
                    self._writers.discard(writer)
                    writer.close()  # what is buffered still goes out, then a FIN
            self._tasks.discard(task)

    async def _exchange(self, client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter,
                        server_r: asyncio.StreamReader, server_w: asyncio.StreamWriter) -> bool:
        """Relay one request and its answer; False when the connection is done."""
        raw = await _read_head(client_r)
        if raw is None:
            return False
        request = Message.parse(raw)
        self.heads.append(request)
        method, target = [*request.start.split(" "), "", ""][:2]
        rule = self._rule(method, target)
        fault = rule.fault if rule is not None else Fault.PASS
        if fault is Fault.DEAF:
            transport = client_w.transport
            assert isinstance(transport, asyncio.ReadTransport)
            transport.pause_reading()
            await self._closing.wait()  # reading nothing, it cannot see the client leave
            raise _Closed
        if fault in (Fault.REFUSE_ANSWER, Fault.RESET, Fault.HANG, Fault.ANSWER):
            await self._refuse(rule, client_r, client_w, request)
            return False
        server_w.write(raw)
        answer = None
        if request.headers.get("expect", "").lower() == "100-continue":
            # The client sends its body only after a 100 (or never, after a final answer).
            answer = await self._interim(server_r, client_w)
        if answer is None:
            async for piece in _body(client_r, request, until_close=False):
                server_w.write(piece)
                await server_w.drain()
            while answer is None:  # more 100s may come (werkzeug sends a second one)
                answer = await self._interim(server_r, client_w)
        if fault is Fault.DROP_ANSWER:
            await client_w.drain()
            raise _Closed
        if fault is Fault.DELAY and rule is not None:
            await asyncio.sleep(rule.delay)
        status = int(answer.start.split(" ")[1])
        bodyless = method == "HEAD" or status in (204, 304)
        long_by = rule.after if fault is Fault.LONG_BODY and rule is not None else 0
        if long_by and not bodyless and answer.length is not None:
            # The same head and Content-Range, a Content-Length that counts the extra.
            client_w.write(re.sub(rb"(?im)^content-length:[^\r]*",
                                  f"Content-Length: {answer.length + long_by}".encode(),
                                  answer.raw))
        else:
            client_w.write(answer.raw)
        sent = 0
        if not bodyless:
            async for piece in _body(server_r, answer, until_close=True):
                piece = await self._body_fault(rule, fault, sent, piece, client_r, client_w)
                client_w.write(piece)
                sent += len(piece)
                await client_w.drain()
            if long_by:
                client_w.write(b"\0" * long_by)
                await client_w.drain()
                raise _Closed
        await client_w.drain()
        return not (answer.closes or request.closes
                    or (not bodyless and answer.length is None and not answer.chunked))

    async def _interim(self, server_r: asyncio.StreamReader,
                       client_w: asyncio.StreamWriter) -> Message | None:
        """The next answer head from the server; a 100 Continue is passed on and None returned."""
        raw = await _read_head(server_r)
        if raw is None:
            raise _Closed
        answer = Message.parse(raw)
        if answer.start.split(" ")[1] == "100":
            client_w.write(raw)
            await client_w.drain()
            return None
        return answer

    async def _refuse(self, rule: Rule | None, client_r: asyncio.StreamReader,
                      client_w: asyncio.StreamWriter, request: Message) -> None:
        """The faults that never reach the server."""
        assert rule is not None
        if request.headers.get("expect", "").lower() != "100-continue":
            async for _ in _body(client_r, request, until_close=False):
                pass
        if rule.fault is Fault.RESET:
            _reset(client_w)
        elif rule.fault is Fault.ANSWER:
            client_w.write(rule.answer)
            await client_w.drain()
        elif rule.fault is Fault.HANG:
            await _until_closed(client_r)

    async def _body_fault(self, rule: Rule | None, fault: Fault, sent: int, piece: bytes,
                          client_r: asyncio.StreamReader, client_w: asyncio.StreamWriter
                          ) -> bytes:
        """The piece to send now, after applying a body fault; raises when the body ends here."""
        if rule is None or fault in (Fault.PASS, Fault.DELAY):
            return piece
        if fault is Fault.TRICKLE:
            for start in range(0, len(piece), rule.piece):
                await asyncio.sleep(rule.delay)
                client_w.write(piece[start:start + rule.piece])
                await client_w.drain()
            return b""
        if sent + len(piece) <= rule.after:
            return piece
        client_w.write(piece[: max(0, rule.after - sent)])
        await client_w.drain()
        if fault is Fault.CUT_BODY:
            client_w.close()
        elif fault is Fault.RESET_BODY:
            _reset(client_w)
        elif fault is Fault.STALL_BODY:
            await _until_closed(client_r)
        raise _Closed


async def _until_closed(reader: asyncio.StreamReader) -> None:
    """Hold the connection, discarding anything more, until the other side closes it."""
    while await reader.read(PIECE):
        pass


async def until(condition: Callable[[], bool], seconds: float = 10.0) -> bool:
    """Poll a condition that becomes true once background work settles."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + seconds
    while not condition():
        if loop.time() > deadline:
            return False
        await asyncio.sleep(0.02)
    return True
