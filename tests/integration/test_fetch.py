"""The fetch layer against a real S3 server (SeaweedFS), through a fault-injecting proxy.

A large object comes as consecutive ranged GETs, several in flight, each guarded by the ETag of
the first response; the reader sees one byte-identical stream.  A part whose connection drops
is resumed inside its own range; an object rewritten mid-download fails as changed; the parts
waiting in memory never exceed the budget.
"""

from __future__ import annotations

import hashlib
import io
import os
from urllib.parse import urlsplit

import pytest
from fault_proxy import FaultProxy

from pytest_pgrestore.fetch import FetchLayer
from pytest_pgrestore.storage.local import LocalStore
from pytest_pgrestore.storage.s3 import ObjectChanged, S3Store

pytestmark = pytest.mark.integration

BUCKET = "fetchlayer"
PART = 1 << 20
SIZE = 20 * PART + 4321  # 21 parts, the last one short


@pytest.fixture(scope="module")
def objects(seaweed):
    seaweed.create_bucket(BUCKET)
    client = seaweed.admin_client()
    data = {"o/big": os.urandom(SIZE), "o/small": os.urandom(1000), "o/empty": b"",
            "o/changing": os.urandom(SIZE)}
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


def store_via(proxy: FaultProxy, seaweed) -> S3Store:
    return S3Store(BUCKET, "o", env={**seaweed.env(readonly=True), "AWS_ENDPOINT_URL": proxy.endpoint})


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def test_a_large_object_comes_as_parallel_ranged_parts_byte_identical(objects, proxy, seaweed):
    store = store_via(proxy, seaweed)
    layer = FetchLayer(store, concurrency=4, part_size=PART)
    free = layer._slots.free
    try:
        with layer.open("big") as f:
            data = f.read()
    finally:
        layer.close()
    assert sha(data) == sha(objects["o/big"])
    gets = [r for r in proxy.requests_for(f"/{BUCKET}/o/big") if r.method == "GET"]
    assert len(gets) == 21 and layer.stats.parts == 20 and layer.stats.ranged_objects == 1
    ranges = sorted((int(r.headers["range"][6:].split("-")[0]), r.headers["range"]) for r in gets)
    assert [start for start, _ in ranges] == [i * PART for i in range(21)]
    assert ranges[-1][1] == f"bytes={20 * PART}-{SIZE - 1}"
    etag = store.stat("big").etag
    assert all(r.headers.get("if-match") == f'"{etag}"' for r in gets if r.headers["range"] != f"bytes=0-{PART - 1}")
    assert layer.stats.bytes_network == SIZE
    assert layer._slots.free == free  # every buffered part was given back


@pytest.mark.parametrize("key", ["small", "empty"])
def test_an_object_of_one_part_or_less_is_read_whole(objects, proxy, seaweed, key):
    layer = FetchLayer(store_via(proxy, seaweed), concurrency=4, part_size=PART)
    try:
        with layer.open(key) as f:
            assert f.read() == objects[f"o/{key}"]
    finally:
        layer.close()
    gets = [r for r in proxy.requests_for(f"/{BUCKET}/o/{key}") if r.method == "GET"]
    if key == "small":
        assert len(gets) == 1  # its first part is all of it
    else:  # S3 refuses any range of an empty object (416, asked again by the client): then one plain GET
        assert [r for r in gets if "range" not in r.headers] == gets[-1:]
    assert layer.stats.ranged_objects == 0


def test_parts_waiting_in_memory_stay_within_the_budget(objects, proxy, seaweed):
    layer = FetchLayer(store_via(proxy, seaweed), concurrency=8, part_size=PART, buffer_bytes=2 * PART)
    try:
        with layer.open("big") as f:
            reader = f.raw
            assert len(reader._pending) == 1  # one part ahead until the reader has had to wait
            reader._want = layer.depth  # as after waiting: 8 could be in flight ...
            reader._schedule()
            assert len(reader._pending) == 2  # ... the budget allows 2
            seen = 0
            while chunk := f.read(PART // 2):
                assert len(reader._pending) <= 2
                seen += len(chunk)
            assert seen == SIZE
    finally:
        layer.close()


def test_a_part_whose_connection_drops_is_resumed_inside_its_range(objects, proxy, seaweed):
    path = f"/{BUCKET}/o/big"
    layer = FetchLayer(store_via(proxy, seaweed), concurrency=4, part_size=PART)
    try:
        with layer.open("big") as f:
            head = bytearray(PART // 3)
            assert f.raw.readinto(head) == len(head)  # unbuffered: the rest is still on the wire
            f.raw._first._body.close()  # the first part's connection goes away mid-body
            data = bytes(head) + f.read()
    finally:
        layer.close()
    assert sha(data) == sha(objects["o/big"])
    ranges = [r.headers["range"] for r in proxy.requests_for(path) if r.method == "GET"]
    resumed = [r for r in ranges if r.endswith(f"-{PART - 1}") and r != f"bytes=0-{PART - 1}"]
    assert len(resumed) == 1  # from where it broke off, up to its own end
    assert 0 < int(resumed[0][6:].split("-")[0]) < PART


def test_an_object_rewritten_during_the_download_fails_as_changed(objects, proxy, seaweed):
    layer = FetchLayer(store_via(proxy, seaweed), concurrency=2, part_size=PART)
    admin = seaweed.admin_client()
    try:
        with layer.open("changing") as f, pytest.raises(ObjectChanged) as err:
            f.read(PART)
            admin.put_object(Bucket=BUCKET, Key="o/changing", Body=os.urandom(SIZE))  # a newer version
            f.read()
    finally:
        admin.close()
        layer.close()
    assert f"s3://{BUCKET}/o/changing" in str(err.value) and "If-Match" in str(err.value)


def test_a_local_store_is_read_as_it_is_and_counted(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * 5000)
    layer = FetchLayer(LocalStore(tmp_path), concurrency=4, part_size=PART)
    try:
        with layer.open("f") as f:
            assert f.read() == b"x" * 5000
    finally:
        layer.close()
    assert layer.stats.bytes_network == 5000 and layer.stats.objects == 1


def test_gets_are_signed_requests_of_our_own_and_a_refusal_is_explained_by_the_client(objects, proxy, seaweed):
    """Base-backup GETs skip boto3's per-call machinery (signed by botocore's SigV4 signer, sent by
    urllib3, marked by our User-Agent); a GET the server refuses is asked again by the full client,
    whose error names the object and never carries the signature."""
    from pytest_pgrestore.errors import SourceNotFound

    layer = FetchLayer(store_via(proxy, seaweed), concurrency=4, part_size=PART)
    try:
        with layer.open("small") as f:
            assert f.read() == objects["o/small"]
        with pytest.raises(SourceNotFound) as err:
            layer.open("no-such-object")
    finally:
        layer.close()
    (get,) = [r for r in proxy.requests_for(f"/{BUCKET}/o/small") if r.method == "GET"]
    assert get.headers["user-agent"].startswith("pytest-pgrestore")
    assert get.headers["authorization"].startswith("AWS4-HMAC-SHA256 Credential=")
    missing = [r for r in proxy.requests_for(f"/{BUCKET}/o/no-such-object") if r.method == "GET"]
    assert missing[0].headers["user-agent"].startswith("pytest-pgrestore")
    assert "Boto3" in missing[-1].headers["user-agent"]  # then the client, which maps the error
    assert f"s3://{BUCKET}/o/no-such-object" in str(err.value) and "Signature" not in str(err.value)


def test_a_wrong_secret_fails_as_denied_naming_the_secret_and_never_showing_it(objects, proxy, seaweed):
    from pytest_pgrestore.errors import AccessDenied

    env = {**seaweed.env(readonly=True), "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_SECRET_ACCESS_KEY": "not-the-secret"}
    layer = FetchLayer(S3Store(BUCKET, "o", env=env), concurrency=4, part_size=PART)
    try:
        with pytest.raises(AccessDenied) as err:
            layer.open("small")
    finally:
        layer.close()
    assert "secret key is wrong" in str(err.value) and "not-the-secret" not in str(err.value)
    assert len([r for r in proxy.requests_for(f"/{BUCKET}/o/small") if r.method == "GET"]) >= 2  # lean, then client
