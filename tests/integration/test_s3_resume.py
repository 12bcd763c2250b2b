"""A connection dropped mid-download is resumed with a ranged GET guarded by the ETag.

A fault-injecting proxy on 127.0.0.1 sits between the read-only S3 client and SeaweedFS, logs
every request's headers and resets the connection once ≥ 8 MiB of a ≥ 64 MiB object's body went
through.  The read completes byte-identical; an object rewritten between the cut and the resume
fails "object changed during download".
"""

from __future__ import annotations

import hashlib
import io
import os
from urllib.parse import urlsplit

import pytest
from fault_proxy import DropRule, FaultProxy

from pytest_pgrestore.store._s3 import ObjectChanged, S3Store

pytestmark = pytest.mark.integration

BUCKET = "faults"
BIG = (64 << 20) + 4321  # ≥ 64 MiB, not a multiple of any buffer size
CUT = (8 << 20) + 777  # ≥ 8 MiB of body before the reset


@pytest.fixture(scope="module")
def objects(seaweed):
    """Two objects: one 64 MiB (multipart ETag) for the resume, one 12 MiB to be rewritten."""
    seaweed.create_bucket(BUCKET)
    client = seaweed.admin_client()
    data = {"big/base.tar": os.urandom(BIG), "big/changed.tar": os.urandom(12 << 20)}
    try:
        for key, body in data.items():
            client.upload_fileobj(io.BytesIO(body), BUCKET, key)
    finally:
        client.close()
    return data


@pytest.fixture
def proxy(seaweed):
    url = urlsplit(seaweed.endpoint)
    with FaultProxy((url.hostname, url.port)) as p:
        yield p


def through(proxy: FaultProxy, seaweed) -> S3Store:
    return S3Store(BUCKET, "big", env={**seaweed.env(readonly=True), "AWS_ENDPOINT_URL": proxy.endpoint})


def digest_of(stream) -> tuple[str, int]:
    h, n = hashlib.sha256(), 0
    with stream:
        while chunk := stream.read(1 << 20):
            h.update(chunk)
            n += len(chunk)
    return h.hexdigest(), n


def test_dropped_connection_is_resumed_byte_identical(objects, proxy, seaweed):
    path = f"/{BUCKET}/big/base.tar"
    rule = DropRule(path, after=CUT)
    proxy.rules.append(rule)
    store = through(proxy, seaweed)
    etag = store.stat("base.tar").etag

    digest, size = digest_of(store.open("base.tar"))

    assert rule.fired == 1
    assert (digest, size) == (hashlib.sha256(objects["big/base.tar"]).hexdigest(), BIG)
    first, *resumes = [r for r in proxy.requests_for(path) if r.method == "GET"]
    assert first.cut and first.body_bytes == CUT and "range" not in first.headers
    assert len(resumes) == 1
    resume = resumes[0].headers
    start = int(resume["range"].removeprefix("bytes=").rstrip("-"))
    assert resume["range"] == f"bytes={start}-" and 0 < start <= CUT
    assert resume["if-match"] == f'"{etag}"'
    assert resumes[0].body_bytes == BIG - start


def test_ranged_read_is_resumed_inside_its_range(objects, proxy, seaweed):
    """A ranged read (pgBackRest bundles read slices) resumes up to its own end, not the object's."""
    path = f"/{BUCKET}/big/base.tar"
    store = through(proxy, seaweed)
    lo, hi = 1000, (20 << 20) + 1
    reader = store.open_range("base.tar", lo, hi, etag=store.stat("base.tar").etag)
    raw = reader.raw
    first = reader.read(1 << 20)
    raw._body.close()  # the connection under the stream goes away mid-body
    rest = reader.read()
    assert first + rest == objects["big/base.tar"][lo:hi]
    assert raw.resumes == 1
    ranges = [r.headers["range"] for r in proxy.requests_for(path) if r.method == "GET"]
    assert ranges[0] == f"bytes={lo}-{hi - 1}"
    resumed_at = int(ranges[1].removeprefix("bytes=").split("-")[0])
    assert lo < resumed_at <= lo + (1 << 20) + (1 << 20) and ranges[1].endswith(f"-{hi - 1}")


def test_object_changed_between_attempts_fails_naming_it(objects, proxy, seaweed):
    path = f"/{BUCKET}/big/changed.tar"
    admin = seaweed.admin_client()

    def rewrite() -> None:
        admin.put_object(Bucket=BUCKET, Key="big/changed.tar", Body=b"a newer version " * 1000)

    proxy.rules.append(DropRule(path, after=CUT, before_cut=rewrite))
    store = through(proxy, seaweed)
    try:
        with pytest.raises(ObjectChanged) as err:
            digest_of(store.open("changed.tar"))
    finally:
        admin.close()
    message = str(err.value)
    assert f"object s3://{BUCKET}/big/changed.tar changed during download" in message
    assert "If-Match" in message
    gets = [r for r in proxy.requests_for(path) if r.method == "GET"]
    assert len(gets) >= 2 and all("if-match" in g.headers for g in gets[1:])  # a refused GET is asked again by the client
