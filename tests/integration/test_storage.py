"""LocalStore and S3Store against real files and a real SeaweedFS, with their failure twins."""

from __future__ import annotations

import json
import os
import pickle
import socket
import time
from datetime import timezone
from pathlib import Path

import pytest

from pytest_pgrestore.demo._seaweed import SeaweedS3, SeaweedStartError
from pytest_pgrestore.errors import AccessDenied, SourceNotFound, SourceUnreachable, UsageError
from pytest_pgrestore.store._local import LocalStore
from pytest_pgrestore.store._s3 import ObjectChanged, S3Store

pytestmark = pytest.mark.integration

BUCKET = "backups"
PREFIX = "pg/main"
BIG = 9 * 1024 * 1024 + 123  # above boto3's 8 MiB multipart threshold: a multipart ETag


def _content(seed: int, size: int) -> bytes:
    block = bytes((seed * 31 + i) % 251 for i in range(4096))
    return (block * (size // len(block) + 1))[:size]


FILES = {
    "a-b": b"dash sorts before slash",
    "a/c": b"in a directory",
    "base/backup_label": b"START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n",
    "base/big.tar": _content(1, BIG),
    "empty": b"",
    "wal/000000010000000000000002": _content(2, 1 << 20),
    "wal/000000010000000000000003.partial": _content(3, 70_000),
}


@pytest.fixture(scope="module")
def aws_isolated(tmp_path_factory):
    """No AWS setting of the developer's leaks in, and botocore never probes instance metadata."""
    d = tmp_path_factory.mktemp("aws")
    for name in ("config", "credentials"):
        (d / name).write_text("")
    with pytest.MonkeyPatch.context() as mp:
        for name in [n for n in os.environ if n.startswith("AWS_")]:
            mp.delenv(name)
        mp.setenv("AWS_EC2_METADATA_DISABLED", "true")
        mp.setenv("AWS_CONFIG_FILE", str(d / "config"))
        mp.setenv("AWS_SHARED_CREDENTIALS_FILE", str(d / "credentials"))
        yield


@pytest.fixture(scope="module")
def backup_dir(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("backup")
    for key, data in FILES.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(data)
    return root


@pytest.fixture(scope="module")
def s3server(tmp_path_factory, aws_isolated, backup_dir):
    with SeaweedS3(tmp_path_factory.mktemp("seaweed")) as s3:
        s3.create_bucket(BUCKET)
        stats = s3.upload_dir(backup_dir, BUCKET, PREFIX)
        assert (stats.count, stats.bytes) == (len(FILES), sum(map(len, FILES.values())))
        yield s3


def s3_store(s3server: SeaweedS3, bucket: str = BUCKET, prefix: str = PREFIX, **overrides: str) -> S3Store:
    return S3Store(bucket, prefix, env={**s3server.env(), **overrides})


@pytest.fixture(params=["local", "s3"])
def store(request, backup_dir):
    if request.param == "local":
        yield LocalStore(backup_dir)
    else:
        with s3_store(request.getfixturevalue("s3server")) as s3:  # the read-only key
            yield s3


# -- the ObjectStore contract, on both stores ---------------------------------------------------


def test_list_is_recursive_and_in_key_order(store):
    infos = list(store.list())
    assert [i.key for i in infos] == sorted(FILES)
    assert {i.key: i.size for i in infos} == {k: len(v) for k, v in FILES.items()}
    assert all(i.last_modified.tzinfo is timezone.utc for i in infos)


@pytest.mark.parametrize(
    ("prefix", "keys"),
    [
        ("wal/", ["wal/000000010000000000000002", "wal/000000010000000000000003.partial"]),
        (
            "wal/0000000100000000000000",
            ["wal/000000010000000000000002", "wal/000000010000000000000003.partial"],
        ),
        ("a", ["a-b", "a/c"]),
        ("base/backup", ["base/backup_label"]),
        ("nothing/here/", []),
        ("a-b/x", []),
    ],
)
def test_list_prefix(store, prefix, keys):
    assert [i.key for i in store.list(prefix)] == keys


def test_stat(store):
    info = store.stat("base/big.tar")
    assert info is not None and info.key == "base/big.tar" and info.size == BIG
    assert store.stat("wal/000000010000000000000009") is None


def test_open_streams_whole_object(store):
    with store.open("base/big.tar") as f:
        head = f.read(10)
        buf = bytearray(1000)
        n = f.readinto(buf)
        rest = f.read()
    assert head + bytes(buf[:n]) + rest == FILES["base/big.tar"]


@pytest.mark.parametrize("nbytes", [0, 1, 24, 70_000, 10**9])
def test_read_tail(store, nbytes):
    data = FILES["wal/000000010000000000000003.partial"]
    assert store.read_tail("wal/000000010000000000000003.partial", nbytes) == (
        data[-nbytes:] if nbytes else b""
    )


def test_read_tail_of_empty_object(store):
    assert store.read_tail("empty", 16) == b""


@pytest.mark.parametrize(("start", "end"), [(0, 1), (5, 4096), (BIG - 10, None), (1 << 20, (1 << 20) + 5)])
def test_open_range(store, start, end):
    info = store.stat("base/big.tar")
    with store.open_range("base/big.tar", start, end, etag=info.etag) as f:
        assert f.read() == FILES["base/big.tar"][start:end]


def test_missing_object_is_source_not_found(store):
    with pytest.raises(SourceNotFound, match="nope"):
        store.open("wal/nope")


# -- S3 specifics -------------------------------------------------------------------------------


def test_seaweed_reports_etag_and_last_modified_on_list_and_head(s3server):
    store = s3_store(s3server)
    listed = {i.key: i for i in store.list()}
    for key in FILES:
        head = store.stat(key)
        assert head == listed[key]  # size, last_modified and ETag agree
        assert head.etag
    assert listed["base/big.tar"].etag.endswith("-2")  # multipart


def test_open_range_with_a_stale_etag_is_object_changed(s3server):
    store = s3_store(s3server)
    with pytest.raises(ObjectChanged, match="changed while it was being read"):
        store.open_range("base/big.tar", 100, etag="0123456789abcdef0123456789abcdef-2")


def test_store_cannot_write_even_with_the_admin_key(s3server):
    store = s3_store(
        s3server, AWS_ACCESS_KEY_ID=s3server.admin.access_key, AWS_SECRET_ACCESS_KEY=s3server.admin.secret_key
    )
    assert not [n for n in dir(store) if n.startswith(("put", "upload", "delete", "copy", "write", "remove"))]
    with pytest.raises(PermissionError, match="PutObject refused"):
        store._client.put_object(Bucket=BUCKET, Key="x", Body=b"")
    assert store.stat("x") is None


def test_description_and_config_summary_show_no_secret(s3server):
    store = s3_store(s3server)
    assert store.description == f"s3://{BUCKET}/{PREFIX} (endpoint {s3server.endpoint})"
    summary = store.config_summary()
    assert summary["endpoint"] == s3server.endpoint
    assert summary["endpoint_source"] == "env AWS_ENDPOINT_URL"
    assert (summary["region"], summary["path_style"]) == ("us-east-1", True)
    assert s3server.readonly.secret_key not in json.dumps(summary) + repr(store) + repr(store.settings)


def test_readonly_key_cannot_write_through_seaweed(s3server):
    # the identity itself is read-only: SeaweedFS refuses even a raw client
    import boto3

    env = s3server.env()
    client = boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
        region_name="us-east-1",
    )
    with pytest.raises(client.exceptions.ClientError, match="AccessDenied"):
        client.put_object(Bucket=BUCKET, Key="x", Body=b"")


# -- failure twins ------------------------------------------------------------------------------


def _all_text(err: BaseException) -> str:
    parts = []
    while err is not None:
        parts += [str(err), repr(err)]
        err = err.__cause__ or err.__context__
    return "\n".join(parts)


@pytest.mark.parametrize("operation", ["list", "stat", "open"])
def test_wrong_secret_is_access_denied_without_the_secret(s3server, operation):
    wrong = "WRONG-" + s3server.readonly.secret_key[6:]
    store = s3_store(s3server, AWS_SECRET_ACCESS_KEY=wrong)
    with pytest.raises(AccessDenied) as info:
        {
            "list": lambda: list(store.list()),
            "stat": lambda: store.stat("a-b"),
            "open": lambda: store.open("a-b"),
        }[operation]()
    text = _all_text(info.value)
    assert wrong not in text and s3server.readonly.secret_key not in text
    assert s3server.readonly.access_key not in text  # at most its first 4 characters
    assert f"access key id {s3server.readonly.access_key[:4]}..." in str(info.value)
    assert "wrong" in str(info.value)
    pickle.loads(pickle.dumps(info.value))


def test_unknown_access_key_is_access_denied(s3server):
    store = s3_store(s3server, AWS_ACCESS_KEY_ID="AKIAUNKNOWN000000000")
    with pytest.raises(AccessDenied, match="does not know the access key id: credentials are wrong") as info:
        list(store.list())
    assert "AKIAUNKNOWN" not in str(info.value)


def test_no_credentials_anywhere_is_access_denied(s3server):
    env = {k: v for k, v in s3server.env().items() if not k.startswith(("AWS_ACCESS", "AWS_SECRET"))}
    store = S3Store(BUCKET, PREFIX, env=env)
    with pytest.raises(AccessDenied, match="no AWS credentials found") as info:
        list(store.list())
    assert "AWS_SHARED_CREDENTIALS_FILE" not in str(info.value)  # it names the file itself
    assert os.environ["AWS_SHARED_CREDENTIALS_FILE"] in info.value.checked
    assert "disabled by AWS_EC2_METADATA_DISABLED" in info.value.checked


def test_denied_by_bucket_policy_names_action_bucket_and_key(s3server):
    admin = s3server.admin_client()
    admin.create_bucket(Bucket="guarded")
    admin.put_object(Bucket="guarded", Key="pg/secret/base.tar", Body=b"x")
    deny = {
        "Effect": "Deny",
        "Principal": "*",
        "Action": ["s3:GetObject"],
        "Resource": ["arn:aws:s3:::guarded/pg/secret/*"],
    }
    admin.put_bucket_policy(
        Bucket="guarded", Policy=json.dumps({"Version": "2012-10-17", "Statement": [deny]})
    )
    store = s3_store(s3server, bucket="guarded", prefix="pg")
    with pytest.raises(AccessDenied) as info:
        store.open("secret/base.tar")
    err = info.value
    assert "refused s3:GetObject on arn:aws:s3:::guarded/pg/secret/base.tar" in err.what
    assert "policy" in err.fix


def test_missing_bucket_is_source_not_found_naming_bucket_and_endpoint(s3server):
    store = s3_store(s3server, bucket="no-such-bucket")
    with pytest.raises(SourceNotFound) as info:
        list(store.list())
    assert "'no-such-bucket'" in info.value.what and s3server.endpoint in info.value.what


def test_empty_listing_is_not_an_error(s3server):
    assert list(s3_store(s3server, prefix="not/uploaded/yet").list()) == []


def test_unreachable_endpoint_fails_fast_naming_it(s3server):
    with socket.socket() as s:  # a port that was free a moment ago and now has no listener
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    endpoint = f"http://127.0.0.1:{port}"
    store = s3_store(s3server, AWS_ENDPOINT_URL=endpoint)
    began = time.monotonic()
    with pytest.raises(SourceUnreachable) as info:
        list(store.list())
    assert time.monotonic() - began < 10
    assert endpoint in info.value.what and "env AWS_ENDPOINT_URL" in info.value.what


def test_missing_local_dir_is_source_not_found(tmp_path):
    store = LocalStore(tmp_path / "gone")
    assert store.description == (tmp_path / "gone").as_uri()
    for call in (lambda: list(store.list()), lambda: store.stat("x"), lambda: store.open("x")):
        with pytest.raises(SourceNotFound, match=str(tmp_path / "gone")):
            call()


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads files whatever their mode")
def test_unreadable_local_file_is_access_denied(tmp_path):
    (tmp_path / "locked").write_bytes(b"x")
    (tmp_path / "locked").chmod(0)
    with pytest.raises(AccessDenied, match="permission denied"):
        LocalStore(tmp_path).open("locked")


def test_seaweed_leaves_nothing_running(tmp_path, aws_isolated):
    s3 = SeaweedS3(tmp_path / "sw", stop_grace=1).start()
    grpc_sockets = [Path(f"/tmp/seaweedfs-{n}-grpc-{p + 10000}.sock") for n, p in s3.ports.items()]
    assert s3.startup_seconds is not None and s3.startup_seconds < 30
    reader = s3_store(s3).open  # a half-read GET keeps weed from stopping on SIGTERM
    s3.admin_client().create_bucket(Bucket=BUCKET)
    s3.admin_client().put_object(Bucket=BUCKET, Key=f"{PREFIX}/big", Body=_content(4, 4 << 20))
    with reader("big") as f:
        f.read(10)
        s3.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(s3.pid, 0)
    assert not [p for p in grpc_sockets if p.exists()]


def test_failed_start_reports_the_log_and_leaves_nothing_running(tmp_path, aws_isolated):
    s3 = SeaweedS3(tmp_path / "sw", start_timeout=0)  # no time to answer: the start always fails (0.3 s did not)
    with pytest.raises(SeaweedStartError, match="did not answer within") as info:
        with s3:
            pass
    assert "last lines of" in info.value.checked and str(s3.log_path) in info.value.checked
    assert s3._proc is None
    with pytest.raises(ProcessLookupError):  # the whole group is gone
        os.killpg(s3.pid, 0)


def test_missing_ca_bundle_is_a_usage_error(aws_isolated, tmp_path):
    with pytest.raises(UsageError, match="AWS_CA_BUNDLE"):
        S3Store(BUCKET, env={"AWS_CA_BUNDLE": str(tmp_path / "missing.pem")})


def test_unknown_profile_is_a_usage_error(aws_isolated):
    with pytest.raises(UsageError, match="profile 'nightly'") as info:
        S3Store(BUCKET, env={"AWS_PROFILE": "nightly"})
    assert os.environ["AWS_CONFIG_FILE"] in info.value.checked
