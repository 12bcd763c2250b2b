"""A fault-injecting TCP proxy on 127.0.0.1 in front of an HTTP server (SeaweedFS's S3 port).

Every request's headers are logged.  The proxy adds ``Connection: close`` to each request (an
unsigned header, so SigV4 still holds), which makes one request per connection and lets a
response simply run until the server closes.  A :class:`DropRule` cuts the connection (TCP
reset) once a response body for a matching path has carried ``after`` bytes — once.
"""

from __future__ import annotations

import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class DropRule:
    path: str  # request path, e.g. "/bucket/key"
    after: int  # body bytes relayed before the cut
    before_cut: Callable[[], None] | None = None  # runs after the last byte is relayed, before the cut
    range_prefix: str | None = None  # only a GET whose Range starts so ("bytes=2097152-"); None: no Range
    fired: int = 0


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]
    body_bytes: int = 0  # response body bytes relayed
    cut: bool = False


@dataclass
class FaultProxy:
    upstream: tuple[str, int]
    rules: list[DropRule] = field(default_factory=list)
    log: list[Request] = field(default_factory=list)

    def __post_init__(self) -> None:
        self._sock = socket.create_server(("127.0.0.1", 0))
        self._sock.settimeout(0.2)
        self.port = self._sock.getsockname()[1]
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._accept, name="fault-proxy", daemon=True)
        self._thread.start()

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def requests_for(self, path: str) -> list[Request]:
        return [r for r in self.log if r.path.split("?")[0] == path]

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)
        self._sock.close()

    def __enter__(self) -> FaultProxy:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- relay ----------------------------------------------------------------------------
    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._sock.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(client,), daemon=True).start()

    def _serve(self, client: socket.socket) -> None:
        upstream = socket.create_connection(self.upstream, timeout=30)
        client.settimeout(30)
        try:
            head = _read_head(client)
            if head is None:
                return
            request = _parse_request(head)
            with self._lock:
                self.log.append(request)
            upstream.sendall(_with_connection_close(head))
            self._relay_response(upstream, client, request)
        except OSError:
            pass
        finally:
            upstream.close()
            client.close()

    def _relay_response(self, upstream: socket.socket, client: socket.socket, request: Request) -> None:
        rule = next(
            (
                r
                for r in self.rules
                if r.fired == 0
                and request.method == "GET"
                and request.path.split("?")[0] == r.path
                and (request.headers.get("range", "").startswith(r.range_prefix) if r.range_prefix
                     else "range" not in request.headers)
            ),
            None,
        )
        buffered, body_started = b"", False
        while data := upstream.recv(1 << 16):
            if not body_started:
                buffered += data
                end = buffered.find(b"\r\n\r\n")
                if end < 0:
                    continue
                body_started, data = True, buffered[end + 4 :]
                client.sendall(buffered[: end + 4])
            if rule is not None and request.body_bytes + len(data) >= rule.after:
                keep = rule.after - request.body_bytes
                client.sendall(data[:keep])
                request.body_bytes += keep
                rule.fired += 1
                if rule.before_cut:
                    rule.before_cut()
                request.cut = True
                client.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))  # RST
                return
            client.sendall(data)
            request.body_bytes += len(data)


def _read_head(sock: socket.socket) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(1 << 14)
        if not chunk:
            return None
        data += chunk
    return data  # the S3 client sends GET and HEAD without a body


def _parse_request(head: bytes) -> Request:
    lines = head.split(b"\r\n\r\n", 1)[0].decode("latin-1").split("\r\n")
    method, path, _ = lines[0].split(" ", 2)
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return Request(method, path, headers)


def _with_connection_close(head: bytes) -> bytes:
    top, _, rest = head.partition(b"\r\n\r\n")
    lines = [ln for ln in top.split(b"\r\n") if not ln.lower().startswith(b"connection:")]
    return b"\r\n".join([*lines, b"Connection: close"]) + b"\r\n\r\n" + rest
