"""``--restore-cache``: a fetched base backup is kept, keyed by each object's ETag.

Real restores of a real backup in SeaweedFS.  The first run fetches and fills the cache; the
second fetches nothing from the store and is marked as served from the cache (not an RTO
measurement unless ``--restore-cache-counts``); then the backup's tar is rewritten in the store
(same files, other bytes: a new ETag) and the third run fetches that object anew.
"""

from __future__ import annotations

import secrets

import pytest

from pytest_pgrestore.evidence import _record as evidence
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture
def private_copy(pg15, seaweed):
    """The pg15 scenario under a prefix of its own: this test rewrites an object."""
    prefix = f"cache-{secrets.token_hex(3)}"
    seaweed.upload_dir(pg15.repo, "drills", prefix)
    return f"s3://drills/{prefix}", prefix


def restore(settings):
    with Restorer(settings).restore() as inst:
        rows = inst.admin_connect().execute("select count(*) from t").fetchone()[0]
        return inst.result, rows


def test_a_cached_backup_skips_the_download_until_an_object_changes(private_copy, pg15, seaweed,
                                                                    settings_factory, tmp_path):
    url, prefix = private_copy
    cache = tmp_path / "cache"
    settings = settings_factory(url, env=pg15.s3_env, cache=str(cache))

    first, rows = restore(settings)
    assert rows == pg15.total_rows
    assert first.evidence["cache"]["hits"] == 0 and first.evidence["cache"]["misses"] >= 2  # base.tar, manifest
    assert first.evidence["fetch"]["bytes_network"] > 0
    assert first.evidence["cache"]["bytes_stored"] == first.evidence["fetch"]["bytes_network"]
    record = evidence.restore_record("restore[latest]", first, settings, violations=[])
    assert record["rto"]["served_from_cache"] is False and record["rto"]["counts"] is True
    assert cache.stat().st_mode & 0o777 == 0o700  # it holds production data
    assert {p.stat().st_mode & 0o777 for p in cache.rglob("data")} == {0o600}

    second, rows = restore(settings)
    assert rows == pg15.total_rows and str(second.outcome) == "REACHED"
    assert second.evidence["fetch"]["bytes_network"] == 0  # not one byte of the base backup from the store
    assert second.evidence["cache"]["misses"] == 0
    assert second.evidence["cache"]["bytes_from_cache"] == first.evidence["fetch"]["bytes_network"]
    record = evidence.restore_record("restore[latest]", second, settings, violations=[])
    assert record["rto"]["served_from_cache"] is True and record["rto"]["counts"] is False
    counting = settings.replace("test", cache_counts="true")
    assert evidence.restore_record("restore[latest]", second, counting, violations=[])["rto"]["counts"] is True

    name = pg15.backups["b2"].name
    key = f"{prefix}/basebackups/{name}/base.tar"
    admin = seaweed.admin_client()
    try:
        body = admin.get_object(Bucket="drills", Key=key)["Body"].read()
        old = admin.head_object(Bucket="drills", Key=key)["ETag"]
        admin.put_object(Bucket="drills", Key=key, Body=body + bytes(10240))  # zeros after the end: same files
        assert admin.head_object(Bucket="drills", Key=key)["ETag"] != old
    finally:
        admin.close()

    third, rows = restore(settings)
    assert rows == pg15.total_rows
    assert third.evidence["cache"]["invalidated"] == 1 and third.evidence["cache"]["misses"] == 1
    assert third.evidence["fetch"]["bytes_network"] == len(body) + 10240  # only the changed object
    assert third.evidence["cache"]["hits"] >= 1  # the manifest, unchanged


def test_a_read_cut_short_leaves_no_entry(pg15, seaweed, tmp_path):
    from pytest_pgrestore.restore._cache import BackupCache
    from pytest_pgrestore.restore._fetch import FetchLayer
    from pytest_pgrestore.store._s3 import S3Store

    store = S3Store("drills", "pg15", env=pg15.s3_env)
    cache = BackupCache(tmp_path / "cache")
    layer = FetchLayer(store, concurrency=2, cache=cache)
    key = f"basebackups/{pg15.backups['b2'].name}/base.tar"
    try:
        with layer.open(key) as f:
            f.read(1000)  # and then the reader stops
        assert list((tmp_path / "cache").rglob("data")) == []
        with layer.open(key) as f:
            whole = f.read()
        assert [p.stat().st_size for p in (tmp_path / "cache").rglob("data")] == [len(whole)]
        assert not list((tmp_path / "cache").rglob(".tmp*"))
    finally:
        layer.close()
    assert cache.summary()["misses"] == 2 and cache.summary()["hits"] == 0
