"""WAL-G-layout backups of a real PostgreSQL 15 server, restored from SeaweedFS with no wal-g binary.

The layouts are written by ``tests/walg_writer.py`` from real ``pg_basebackup`` output and the real
WAL archive.  Every success sits next to a twin with one injected defect that must fail by name.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import psycopg
import pytest
from walg_writer import build_source

from pytest_pgrestore.errors import CorruptBackup, PreflightError
from pytest_pgrestore.formats._walg import EncryptedWithoutKey, UnsupportedEncryption
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

KEY = bytes(range(32))
KEY_ENV = {"WALG_LIBSODIUM_KEY": KEY.hex(), "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"}
METHODS = ["lz4", "zstd", "brotli", "lzma", "none", "libsodium"]
BUCKET = "walg"


@pytest.fixture(scope="module")
def walg(workroot, seaweed):
    """The source, and ``prefix(name)`` → s3 URL of a layout uploaded under that name."""
    src = build_source(workroot / "walg-src")
    seaweed.create_bucket(BUCKET)
    uploaded: dict[str, str] = {}

    def upload(name: str, out: Path, pushed) -> str:
        """Sentinels last and in push order, as WAL-G writes them: LATEST is the newest LastModified."""
        held = out.parent / f"{name}.sentinels"
        held.mkdir(exist_ok=True)
        order = [f"{p.name}_backup_stop_sentinel.json" for p in pushed]
        for f in order:
            if (out / "basebackups_005" / f).exists():
                (out / "basebackups_005" / f).rename(held / f)
        seaweed.upload_dir(out, BUCKET, name)
        client = seaweed.admin_client()
        try:
            for f in order:
                if (held / f).exists():
                    client.put_object(Bucket=BUCKET, Key=f"{name}/basebackups_005/{f}", Body=(held / f).read_bytes())
                    (held / f).rename(out / "basebackups_005" / f)
        finally:
            client.close()
        uploaded[name] = f"s3://{BUCKET}/{name}"
        return uploaded[name]

    def layout(name: str, *, mutate=None, **kw) -> tuple[str, list]:
        if name in uploaded and mutate is None:
            return uploaded[name], layouts[name]
        out = workroot / "walg-layouts" / name
        shutil.rmtree(out, ignore_errors=True)
        _, pushed = src.layout(out, **kw)
        if mutate:
            mutate(out, pushed)
        layouts[name] = pushed
        return upload(name, out, pushed), pushed

    layouts: dict[str, list] = {}
    return src, layout


def method_kw(method: str) -> dict:
    return {"method": "lz4", "key": KEY} if method == "libsodium" else {"method": method}


def between(a, b) -> str:
    return (a.time + (b.time - a.time) / 2).isoformat().replace("+00:00", "Z")


def restore(settings, query="select count(*) from t"):
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            rows = conn.execute(query).fetchone()[0]
            big = conn.execute("select count(*) from big").fetchone()[0]
        return rows, big, inst.result


def s3_env(seaweed, method: str = "") -> dict:
    env = seaweed.env(readonly=True)
    return {**env, **KEY_ENV} if method == "libsodium" else env


# -- every compression, and libsodium: latest and a time between two commits -------------------
@pytest.mark.parametrize("method", METHODS)
def test_latest_restores_every_row(walg, seaweed, settings_factory, method):
    src, layout = walg
    url, pushed = layout(method, backups=(0, 2), **method_kw(method))
    rows, big, result = restore(settings_factory(url, env=s3_env(seaweed, method)))
    assert (rows, big, result.outcome, result.format) == (src.total_rows, 5000, "REACHED", "walg")
    assert result.backup == pushed[-1].name


@pytest.mark.parametrize("method", METHODS)
def test_time_between_two_commits(walg, seaweed, settings_factory, method):
    src, layout = walg
    url, _ = layout(method, backups=(0, 2), **method_kw(method))
    c3 = src.commits["c3"]
    rows, _, result = restore(settings_factory(url, between(c3[0], c3[1]), env=s3_env(seaweed, method)))
    assert rows == src.rows_at("c3", 0)
    assert "before commit" in result.stop_reason


# -- names: a WAL-G backup name, and LATEST ---------------------------------------------------
def test_walg_backup_name_and_latest(walg, seaweed, settings_factory):
    src, layout = walg
    url, pushed = layout("lz4-all", backups=(0, 1, 2), method="lz4")
    assert pushed[1].name == "base_000000010000000000000004"
    rows, _, result = restore(settings_factory(url, "base_000000010000000000000004", env=s3_env(seaweed)))
    assert (rows, result.backup) == (src.rows_at("c1", 1), "base_000000010000000000000004")
    rows, _, result = restore(settings_factory(url, "backup:LATEST", env=s3_env(seaweed)))
    assert (rows, result.backup) == (src.rows_at("c2", 1), pushed[2].name)


def test_walg_environment_alone_is_enough(walg, seaweed, workroot):
    """A team's WAL-G variables, unchanged: WALG_S3_PREFIX, AWS_ENDPOINT, path style, region, concurrency."""
    from pytest_pgrestore.settings._options import resolve_settings

    src, layout = walg
    url, _ = layout("libsodium", backups=(0, 2), **method_kw("libsodium"))
    aws = seaweed.env(readonly=True)
    env = {"WALG_S3_PREFIX": url, "AWS_ENDPOINT": aws["AWS_ENDPOINT_URL"], "AWS_S3_FORCE_PATH_STYLE": "true",
           "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": aws["AWS_ACCESS_KEY_ID"],
           "AWS_SECRET_ACCESS_KEY": aws["AWS_SECRET_ACCESS_KEY"], "AWS_EC2_METADATA_DISABLED": "true",
           "WALG_DOWNLOAD_CONCURRENCY": "3", "WALG_LIBSODIUM_KEY": KEY.hex(), "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"}
    settings = resolve_settings(cli={"workdir": str(workroot / "runs")}, env=env, ini={})
    assert settings.origins["source"] == "env WALG_S3_PREFIX"
    rows, _, result = restore(settings)
    assert (rows, result.outcome) == (src.total_rows, "REACHED")


# -- a full + 2 delta chain against a plain restore of the same point -----------------------------
_CHECKSUMS = """
select c.oid::regclass::text, md5(pg_read_binary_file(pg_relation_filepath(c.oid)))
from pg_class c where c.relkind in ('r', 'i', 't', 'm', 'S') and c.relpersistence = 'p'
  and pg_relation_filepath(c.oid) is not null and pg_relation_size(c.oid) > 0 order by 1
"""


def relation_checksums(settings) -> dict[str, str]:
    with Restorer(settings).restore() as inst:
        with inst.admin_connect("postgres", autocommit=True) as conn:
            conn.execute("checkpoint")
            return dict(conn.execute(_CHECKSUMS).fetchall())


def test_delta_chain_matches_a_plain_restore(walg, seaweed, settings_factory, workroot):
    src, layout = walg
    url, pushed = layout("delta", deltas=True, method="zstd")
    assert [p.name.partition("_D_")[2] for p in pushed] == ["", pushed[0].name[5:], pushed[1].name[5:29]]
    chain = relation_checksums(settings_factory(url, "backup:LATEST", env=s3_env(seaweed)))
    # the same pg_basebackup output stored whole: a plain restore of the same point
    full_url, fulls = layout("lz4-all", backups=(0, 1, 2), method="lz4")
    plain = relation_checksums(settings_factory(full_url, f"backup:{fulls[2].name}", env=s3_env(seaweed)))
    assert len(chain) > 100
    assert chain == plain


def test_twin_delta_whose_parent_is_gone_is_refused_before_download(walg, seaweed, settings_factory):
    def drop_middle(out: Path, pushed) -> None:
        (out / "basebackups_005" / f"{pushed[1].name}_backup_stop_sentinel.json").unlink()

    src, layout = walg
    url, pushed = layout("delta-broken", deltas=True, method="zstd", mutate=drop_middle)
    with pytest.raises(Exception) as err:
        restore(settings_factory(url, f"backup:{pushed[2].name}", env=s3_env(seaweed)))
    assert pushed[1].name in str(err.value) and "not in the store" in str(err.value)


# -- twins: WAL gap, damaged tars, missing key, foreign encryption --------------------------------
def test_twin_missing_segment_mid_range_is_refused_before_download(walg, seaweed, settings_factory):
    src, layout = walg
    first = src.backups[0].stop_wal  # latest from b1 replays from here to the newest segment
    names = sorted(p.name for p in (src.repo / "wal").iterdir() if len(p.name) == 24 and p.name > first)
    gone = names[len(names) // 2]
    assert gone != names[-1]

    def drop(out: Path, pushed) -> None:
        (out / "wal_005" / f"{gone}.lz4").unlink()

    url, _ = layout("gap", backups=(0,), method="lz4", mutate=drop)
    check = Restorer(settings_factory(url, env=s3_env(seaweed))).catalog().wal_check  # wal-verify's view
    # within WALG_UPLOAD_CONCURRENCY (16) of the newest segment WAL-G calls it "probably uploading"
    assert [(r.start_segment, r.status) for r in check.missing] == [(gone, "MISSING_UPLOADING")]
    assert check.integrity_status == "WARNING"
    with pytest.raises(PreflightError) as err:
        restore(settings_factory(url, env=s3_env(seaweed)))
    assert gone in str(err.value)
    assert "reachable without a gap up to" in str(err.value)
    assert err.value.result.bytes_fetched == 0


def _flip_in_part(offset_fraction: float = 0.5):
    def flip(out: Path, pushed) -> None:
        part = next((out / "basebackups_005" / pushed[-1].name / "tar_partitions").glob("part_001.tar*"))
        data = bytearray(part.read_bytes())
        data[int(len(data) * offset_fraction)] ^= 0x20
        part.write_bytes(bytes(data))
    return flip


@pytest.mark.parametrize("method", ["lz4", "zstd", "gzip", "libsodium"])
def test_twin_flipped_byte_in_a_tar_fails_naming_the_object(walg, seaweed, settings_factory, method):
    src, layout = walg
    url, pushed = layout(f"flip-{method}", backups=(2,), mutate=_flip_in_part(), **method_kw(method))
    with pytest.raises(CorruptBackup) as err:
        restore(settings_factory(url, env=s3_env(seaweed, method)))
    assert f"basebackups_005/{pushed[-1].name}/tar_partitions/part_001.tar" in str(err.value)


def test_twin_flipped_byte_without_codec_check_is_caught_by_page_checksums(walg, seaweed, settings_factory):
    """With compression none (and brotli, lzma) nothing checks the payload during fetch: a full read
    of the relation verifies the page checksums and names the damaged block."""
    src, layout = walg

    def flip_big(out: Path, pushed) -> None:
        part = next((out / "basebackups_005" / pushed[-1].name / "tar_partitions").glob("part_001.tar"))
        data = bytearray(part.read_bytes())
        at = data.index(("/" + src.big_file).encode() + b"\0")  # the member's header; its data follows
        data[at + 512 + 8192 * 3 + 4000] ^= 0x01  # inside page 3
        part.write_bytes(bytes(data))

    url, _ = layout("flip-none", backups=(2,), method="none", mutate=flip_big)
    settings = settings_factory(url, env=s3_env(seaweed))
    with pytest.raises(psycopg.errors.DataCorrupted, match="invalid page in block 3"):
        restore(settings, query="select count(*) from t")
    rows, big, result = restore(settings_factory(layout("none", backups=(0, 2), method="none")[0],
                                                 env=s3_env(seaweed)))
    assert big == 5000  # the intact twin reads every page


def test_twin_encrypted_backup_without_key_says_so_before_download(walg, seaweed, settings_factory):
    src, layout = walg
    url, pushed = layout("libsodium", backups=(0, 2), **method_kw("libsodium"))
    with pytest.raises(EncryptedWithoutKey) as err:
        restore(settings_factory(url, env=s3_env(seaweed)))
    assert "no libsodium key is configured" in str(err.value)
    assert "WALG_LIBSODIUM_KEY" in str(err.value)


def test_twin_wrong_key_fails_the_mac_naming_the_object(walg, seaweed, settings_factory):
    src, layout = walg
    url, pushed = layout("libsodium", backups=(0, 2), **method_kw("libsodium"))
    env = {**seaweed.env(readonly=True), "WALG_LIBSODIUM_KEY": "ab" * 32, "WALG_LIBSODIUM_KEY_TRANSFORM": "hex"}
    with pytest.raises(CorruptBackup) as err:
        restore(settings_factory(url, env=env))
    text = str(err.value)
    assert "libsodium MAC" in text and ("wal_005/" in text or "tar_partitions/" in text)


def test_pgp_configuration_is_refused_before_download(walg, seaweed, settings_factory):
    src, layout = walg
    url, _ = layout("lz4-all", backups=(0, 1, 2), method="lz4")
    with pytest.raises(UnsupportedEncryption) as err:
        restore(settings_factory(url, env={**seaweed.env(readonly=True), "WALG_PGP_KEY_PATH": "/etc/key.asc"}))
    assert "OpenPGP" in str(err.value) and "WALG_PGP_KEY_PATH" in str(err.value)

