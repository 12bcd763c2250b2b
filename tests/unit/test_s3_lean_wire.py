"""The lean GET's HTTP/1.1 exchange against a scripted server on 127.0.0.1.

SeaweedFS (tests/integration/test_fetch.py and every format's tests) only ever answers well.
These are the answers it never gives — a chunked or unsized body, folded or doubled headers, a
kept-alive connection closed while idle, a body cut short, a certificate for someone else —
each of which must either be read exactly or be handed back to the full client (``get``
returns None), never half-taken.
"""

from __future__ import annotations

import http.client
import logging
import socket
import ssl
import subprocess
import threading
from collections.abc import Callable

import pytest

from pytest_pgrestore.store._s3 import S3Store

BODY = bytes(range(256)) * 40  # 10 KiB


class Scripted:
    """Accepts connections on 127.0.0.1; each request is answered by ``answer(request, n)`` (n counts
    requests across connections), which returns the raw bytes to send and whether to close after."""

    def __init__(self, answer: Callable[[bytes, int], tuple[bytes, bool]], *, tls: ssl.SSLContext | None = None):
        self.answer, self.tls = answer, tls
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections, self.requests = 0, []
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            if self.tls is not None:
                conn = self.tls.wrap_socket(conn, server_side=True)
            buf = b""
            while True:
                while b"\r\n\r\n" not in buf:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buf += chunk
                request, _, buf = buf.partition(b"\r\n\r\n")
                self.requests.append(request)
                reply, close = self.answer(request, len(self.requests))
                conn.sendall(reply)
                if close:
                    return
        except (OSError, ssl.SSLError):
            return
        finally:
            conn.close()

    def close(self) -> None:
        self.sock.close()


def ok(body: bytes = BODY, *extra: str, status: str = "200 OK") -> bytes:
    head = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", 'ETag: "abc"', *extra]
    return ("\r\n".join(head) + "\r\n\r\n").encode() + body


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def serve():
    servers, stores = [], []

    def start(answer, *, tls=None, ca=None):
        server = Scripted(answer, tls=tls)
        servers.append(server)
        scheme = "https" if tls else "http"
        env = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret-example-never-shown",
               "AWS_ENDPOINT_URL": f"{scheme}://127.0.0.1:{server.port}", "AWS_DEFAULT_REGION": "us-east-1"}
        if ca:
            env["AWS_CA_BUNDLE"] = str(ca)
        store = S3Store("bucket", "pg", env=env)
        stores.append(store)
        return server, store._lean()

    yield start
    for store in stores:
        store.close()
    for server in servers:
        server.close()


def read_all(resp) -> bytes:
    out = b""
    while chunk := resp["Body"].read(3000):
        out += chunk
    resp["Body"].close()
    return out


def test_a_signed_get_is_read_exactly_and_its_connection_kept_for_the_next(serve):
    server, lean = serve(lambda req, n: (ok(BODY[:n * 1000]), False))
    for n in (1, 2, 3):
        resp = lean.get("pg/obj", {})
        assert resp["ContentLength"] == n * 1000 and resp["ETag"] == '"abc"'
        assert read_all(resp) == BODY[:n * 1000]
    assert server.connections == 1
    first = server.requests[0].decode()
    assert first.startswith("GET /bucket/pg/obj HTTP/1.1\r\n")
    assert f"Host: 127.0.0.1:{server.port}" in first and "Authorization: AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/" in first
    assert "host;x-amz-content-sha256;x-amz-date" in first  # the Host sent is the Host signed


def test_a_range_is_sent_and_its_206_read(serve):
    server, lean = serve(lambda req, n: (ok(BODY[5:15], "Content-Range: bytes 5-14/10240",
                                            status="206 Partial Content"), False))
    resp = lean.get("pg/obj", {"Range": "bytes=5-14", "IfMatch": '"abc"'})
    assert read_all(resp) == BODY[5:15] and resp["ContentRange"] == "bytes 5-14/10240"
    assert b"\r\nRange: bytes=5-14\r\n" in server.requests[0] and b'\r\nIf-Match: "abc"\r\n' in server.requests[0]


def test_twin_a_200_to_a_range_request_goes_to_the_client(serve):
    server, lean = serve(lambda req, n: (ok(), False))
    assert lean.get("pg/obj", {"Range": "bytes=5-14"}) is None
    assert not lean._idle  # its body (the whole object) is never read: the connection is dropped


def test_a_kept_alive_connection_the_server_closed_is_replaced_once(serve):
    server, lean = serve(lambda req, n: (ok(), True))  # "keep-alive" announced, then closed anyway
    assert read_all(lean.get("pg/a", {})) == BODY
    assert read_all(lean.get("pg/b", {})) == BODY  # the stale one fails before a status: a fresh one
    assert server.connections == 2 and len(server.requests) == 2


def test_twin_a_fresh_connection_closed_before_a_status_goes_to_the_client(serve):
    server, lean = serve(lambda req, n: (b"", True))
    assert lean.get("pg/a", {}) is None
    assert server.connections == 1  # no retry on a connection that was never stale


@pytest.mark.parametrize("closing", ["Connection: close", "Connection: Keep-Alive, Close", "HTTP/1.0"])
def test_a_response_that_ends_its_connection_is_not_kept(serve, closing):
    def answer(req, n):
        reply = ok(BODY, closing) if closing.startswith("Connection") else ok(BODY).replace(b"HTTP/1.1", b"HTTP/1.0", 1)
        return reply, False

    server, lean = serve(answer)
    assert read_all(lean.get("pg/a", {})) == BODY
    assert read_all(lean.get("pg/b", {})) == BODY
    assert server.connections == 2


@pytest.mark.parametrize("reply", [
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nETag: x\r\n\r\nhello",  # no length: read to the close, not taken
    b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n\r\nhello!",
    b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\nhellohello",
    b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nBroken header\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 200 OK\r\nX-Long: " + b"a" * 9000 + b"\r\nContent-Length: 5\r\n\r\nhello",
    b"ICY 200 OK\r\nContent-Length: 5\r\n\r\nhello",
    b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\n\r\nnope!",
    b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 301 Moved Permanently\r\nLocation: http://127.0.0.1:9/\r\nContent-Length: 0\r\n\r\n",
    b"HTTP/1.1 200 OK\r\n" + b"X-Many: 1\r\n" * 101 + b"Content-Length: 5\r\n\r\nhello",
], ids=["chunked", "chunked-and-sized", "unsized", "two-lengths", "signed-length", "underscored-length",
        "folded", "no-colon", "oversized-line", "not-http", "404", "500", "redirect", "too-many-headers"])
def test_a_response_this_reader_does_not_take_goes_to_the_client_on_a_dropped_connection(serve, reply):
    server, lean = serve(lambda req, n: (reply, False))
    assert lean.get("pg/a", {}) is None
    assert not lean._idle


def test_a_body_cut_before_its_length_is_a_broken_transfer_to_resume(serve):
    server, lean = serve(lambda req, n: (ok(BODY)[:-100], True))
    resp = lean.get("pg/a", {})
    with pytest.raises(http.client.IncompleteRead):  # a stream error: the store's reader resumes at the cut
        read_all(resp)
    with pytest.raises(http.client.IncompleteRead):
        resp["Body"].read(10)
    assert not lean._idle


def test_a_body_closed_before_its_end_drops_the_connection(serve):
    server, lean = serve(lambda req, n: (ok(), False))
    resp = lean.get("pg/a", {})
    assert resp["Body"].read(100) == BODY[:100]
    resp["Body"].close()
    assert not lean._idle
    assert read_all(lean.get("pg/b", {})) == BODY and server.connections == 2


@pytest.mark.parametrize("etag", ['"abc"\r\nX-Evil: 1', '"abc\n"', '"caf\u00e9"'])
def test_a_header_value_that_would_split_the_request_is_never_sent(serve, etag):
    server, lean = serve(lambda req, n: (ok(), False))
    assert lean.get("pg/a", {"IfMatch": etag}) is None
    assert server.requests == []


def test_nothing_logged_carries_the_signature_or_the_secret(serve, caplog):
    replies = {1: b"HTTP/1.1 200 OK\r\nX-Folded: a\r\n b\r\n\r\n", 2: b""}  # not taken; no response
    server, lean = serve(lambda req, n: (replies[n], True))
    with caplog.at_level(logging.DEBUG, logger="pytest_pgrestore"):
        assert lean.get("pg/a", {}) is None and lean.get("pg/b", {}) is None
    ours = [r.getMessage() for r in caplog.records if r.name.startswith("pytest_pgrestore")]
    assert ours and all("Signature" not in m and "secret-example" not in m and "AKIDEXAMPLE" not in m for m in ours)


@pytest.fixture(scope="module")
def certs(tmp_path_factory):
    out = tmp_path_factory.mktemp("certs")

    def make(name: str, san: str):
        cert, key = out / f"{name}.pem", out / f"{name}.key"
        subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
                        f"/CN={name}", "-addext", f"subjectAltName={san}", "-keyout", str(key), "-out", str(cert)],
                       check=True, capture_output=True)
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        return cert, ctx

    return {"right": make("right", "IP:127.0.0.1"), "other": make("other", "DNS:other.example")}


def test_over_tls_the_bundles_ca_is_trusted(serve, certs):
    cert, ctx = certs["right"]
    server, lean = serve(lambda req, n: (ok(), False), tls=ctx, ca=cert)
    assert read_all(lean.get("pg/a", {})) == BODY and read_all(lean.get("pg/b", {})) == BODY
    assert server.connections == 1


def test_twin_over_tls_a_certificate_for_another_name_is_refused(serve, certs):
    cert, ctx = certs["other"]
    server, lean = serve(lambda req, n: (ok(), False), tls=ctx, ca=cert)
    assert lean.get("pg/a", {}) is None  # the client then fails with its own TLS error
    assert server.requests == []
