"""The fetch layer against a real S3 server (SeaweedFS), through a fault-injecting proxy.

Every object is one streamed GET while the reader is the slower side; once the reader waits on
the link, the rest of a large object comes as consecutive ranged GETs, several in flight, each
guarded by the ETag of the first response; the reader sees one byte-identical stream either way.
A part whose connection drops is resumed inside its own range; an object rewritten
mid-download fails as changed; the parts waiting in memory never exceed the budget.
"""

from __future__ import annotations

import hashlib
import io
import os
from urllib.parse import urlsplit

import pytest
from fault_proxy import DropRule, FaultProxy

from pytest_pgrestore.restore._fetch import FetchLayer, _PartReader
from pytest_pgrestore.store._local import LocalStore
from pytest_pgrestore.store._s3 import ObjectChanged, S3Store

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


@pytest.fixture
def split_at_once(monkeypatch):
    """The stream is split into parts at its first checkpoint, however fast the link."""
    monkeypatch.setattr(_PartReader, "NETWORK_BOUND", -1.0)


def _gets(proxy, key: str) -> list:
    return [r for r in proxy.requests_for(f"/{BUCKET}/o/{key}") if r.method == "GET"]


def read_through(layer: FetchLayer, key: str) -> bytes:
    """All of ``key`` as the reader sees it; the layer is closed after."""
    try:
        with layer.open(key) as f:
            return f.read()
    finally:
        layer.close()


def test_a_reader_slower_than_the_link_gets_a_large_object_in_one_get(objects, proxy, seaweed):
    """The reader (decompression, writes) is the slower side: the one stream goes on to the end;
    parallel GETs would only cost CPU here, ours and the server's."""
    import time

    layer = FetchLayer(store_via(proxy, seaweed), concurrency=4, part_size=PART)
    try:
        with layer.open("big") as f:
            chunks = []
            while chunk := f.read(PART // 4):
                chunks.append(chunk)
                time.sleep(0.01)  # a busy reader: the link keeps ahead of it
    finally:
        layer.close()
    assert sha(b"".join(chunks)) == sha(objects["o/big"])
    (get,) = _gets(proxy, "big")
    assert get.headers["range"] == "bytes=0-"
    assert layer.stats.ranged_objects == 0 and layer.stats.parts == 0 and layer.stats.bytes_network == SIZE


def test_twin_a_reader_waiting_on_the_link_gets_the_rest_in_parallel_parts(objects, proxy, seaweed):
    """The twin: a reader that does nothing but read waits on the link (a relay in Python) for
    most of the first part, so the rest of the object comes as parallel ranged parts."""
    layer = FetchLayer(store_via(proxy, seaweed), concurrency=4, part_size=PART)
    assert sha(read_through(layer, "big")) == sha(objects["o/big"])
    ranges = [r.headers["range"] for r in _gets(proxy, "big")]
    assert ranges[0] == "bytes=0-" and len(ranges) > 1
    starts = sorted(int(r[6:].split("-")[0]) for r in ranges[1:])
    assert starts[0] % PART == 0 and starts == list(range(starts[0], SIZE, PART))  # the rest, part by part
    assert layer.stats.ranged_objects == 1 and layer.stats.parts == len(ranges) - 1


def test_a_large_object_comes_as_parallel_ranged_parts_byte_identical(objects, proxy, seaweed, split_at_once):
    store = store_via(proxy, seaweed)
    layer = FetchLayer(store, concurrency=4, part_size=PART)
    free = layer._slots.free
    assert sha(read_through(layer, "big")) == sha(objects["o/big"])
    gets = _gets(proxy, "big")
    assert len(gets) == 21 and layer.stats.parts == 20 and layer.stats.ranged_objects == 1
    ranges = sorted((int(r.headers["range"][6:].split("-")[0]), r.headers["range"]) for r in gets)
    assert [start for start, _ in ranges] == [i * PART for i in range(21)]
    assert ranges[0][1] == "bytes=0-"  # the first GET asks for all of it; the reader used one part
    assert ranges[-1][1] == f"bytes={20 * PART}-{SIZE - 1}"
    etag = store.stat("big").etag
    assert all(r.headers.get("if-match") == f'"{etag}"' for r in gets if r.headers["range"] != "bytes=0-")
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


def test_parts_waiting_in_memory_stay_within_the_budget(objects, proxy, seaweed, split_at_once):
    layer = FetchLayer(store_via(proxy, seaweed), concurrency=8, part_size=PART, buffer_bytes=2 * PART)
    try:
        with layer.open("big") as f:
            reader = f.raw
            assert not reader._pending  # streaming: nothing fetched ahead
            assert reader.readinto(bytearray(PART)) == PART  # up to the first checkpoint
            assert reader._first is not None and not reader._pending  # one stream so far
            assert reader.readinto(bytearray(PART // 2)) == PART // 2  # past it: split, parts ahead
            assert reader._first is None and 1 <= len(reader._pending) <= 2
            reader._want = layer.depth  # as after waiting: 8 could be in flight ...
            reader._schedule()
            assert len(reader._pending) == 2  # ... the budget allows 2
            seen = PART + PART // 2
            while chunk := f.read(PART // 2):
                assert len(reader._pending) <= 2
                seen += len(chunk)
            assert seen == SIZE
    finally:
        layer.close()


def test_a_stream_whose_connection_drops_is_resumed_from_where_it_broke_off(objects, proxy, seaweed):
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
    resumed = [r for r in ranges if r.endswith("-") and r != "bytes=0-"]
    assert len(resumed) == 1  # from where it broke off, to the object's end
    assert 0 < int(resumed[0][6:].split("-")[0]) < PART


def test_a_part_whose_connection_drops_is_resumed_inside_its_range(objects, proxy, seaweed, split_at_once):
    path = f"/{BUCKET}/o/big"
    layer = FetchLayer(store_via(proxy, seaweed), concurrency=2, part_size=PART)
    proxy.rules.append(DropRule(path=path, after=PART // 3, range_prefix=f"bytes={2 * PART}-"))
    assert sha(read_through(layer, "big")) == sha(objects["o/big"])
    ranges = [r.headers["range"] for r in _gets(proxy, "big")]
    (cut,) = [r for r in proxy.requests_for(path) if r.cut]
    start, end = cut.headers["range"][6:].split("-")
    _cut_part, resumed = [r for r in ranges if r.endswith(f"-{end}")]  # the part, then once more
    assert int(start) <= int(resumed[6:].split("-")[0]) <= int(end)  # from where it broke off, to its own end


def test_an_object_rewritten_during_the_download_fails_as_changed(objects, proxy, seaweed, split_at_once):
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
