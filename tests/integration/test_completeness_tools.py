"""Issue 19 with the real tools: completeness from each format's own index and unfinished backups,
for barman-cloud (barman-cloud-backup into SeaweedFS over TLS) and pgBackRest (a posix repo).

barman-cloud-backup (EnterpriseDB/barman, barman/cloud.py, ``CloudBackup._coordinate_backup``)
uploads the tars while it copies PGDATA (``data.tar``, then ``data_0001.tar``… past
``--max-archive-size``, one ``<oid>.tar`` per tablespace) and uploads ``backup.info`` only in its
``finally:`` — status DONE, or FAILED from ``handle_backup_errors``.  Mid-backup a backup id has
tars and no backup.info.

pgBackRest (pgbackrest/pgbackrest, src/command/backup/backup.c ``cmdBackup`` and
complete.c.inc ``backupComplete``) saves ``backup.manifest.copy`` before copying files, copies
the files, then at the end writes ``backup.manifest`` and only then adds the backup to
``backup.info``.  Mid-backup the backup's folder holds pg_data/… and backup.manifest.copy, no
backup.manifest, and backup.info does not name it.

Every success has its failing twin; one real backup set per tool, variants are copies.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from tool_support import BarmanCloud, barman_source, history, self_signed_cert

from pytest_pgrestore.demo._seaweed import SeaweedS3
from pytest_pgrestore.errors import CorruptBackup, PreflightError
from pytest_pgrestore.formats._base import IncompleteBackup
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

HAVE_BARMAN = (Path(sys.executable).parent / "barman-cloud-backup").exists()
BUCKET = "complete"


def _restore(settings) -> tuple[int, object]:
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            rows = conn.execute("select count(*) from t").fetchone()[0]
        return rows, inst.result


def _assert_refused_before_download(err, key: str) -> None:
    assert isinstance(err.value, IncompleteBackup)
    assert isinstance(err.value, CorruptBackup) and isinstance(err.value, PreflightError)
    assert key in str(err.value), str(err.value)
    result = err.value.result
    assert result.outcome == "REFUSED_PREFLIGHT"
    assert result.bytes_fetched == 0
    assert "run_dir" not in result.evidence  # no run dir, so no PGDATA: nothing was downloaded


def _pgrestore_list(url: str, env: dict[str, str]) -> tuple[str, dict]:
    cmd = [sys.executable, "-m", "pytest_pgrestore.cli", "list", url]
    full_env = {**os.environ, **env}
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=full_env).stdout
    data = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True,
                                     env=full_env).stdout)
    return out, data


# -- barman-cloud ---------------------------------------------------------------------------------
def _barman_backup(tool: BarmanCloud, src, *, compression: str | None, max_archive_size: str | None) -> str:
    """tool_support's barman-cloud-backup call, plus --max-archive-size (which makes data_0001.tar…)."""
    if max_archive_size is None:
        return tool.backup(src, compression=compression)
    exe = Path(sys.executable).parent / "barman-cloud-backup"
    argv = [str(exe), "--cloud-provider", "aws-s3", "--endpoint-url", tool.endpoint,
            "-h", str(src.workdir / "sock"), "-p", "5432", "-U", "postgres", "--immediate-checkpoint",
            "--max-archive-size", max_archive_size, tool.url, tool.server]
    before = set(tool.backup_ids())
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **tool.env}
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (new,) = sorted(set(tool.backup_ids()) - before)
    return new


@pytest.fixture(scope="module")
def barman_s3(workroot):
    if not HAVE_BARMAN:
        pytest.skip("pip install 'barman[cloud]'")
    cert, key = self_signed_cert(workroot / "complete-barman-tls")
    with SeaweedS3(workroot / "complete-barman-s3", tls=(cert, key)) as s3:
        s3.cert = cert
        s3.create_bucket(BUCKET)
        yield s3


@pytest.fixture(scope="module")
def barman_set(workroot, barman_s3):
    """b1: gzip, one data.tar.gz; b2: plain, split into data.tar, data_0001.tar… (--max-archive-size);
    both with tablespace ts1's <oid>.tar."""
    s3 = barman_s3
    tool = BarmanCloud(workroot / "complete-barman-tool", endpoint=s3.https_endpoint, ca_bundle=s3.cert,
                       bucket=BUCKET, path="orig", server="pg", key=s3.admin.access_key,
                       secret=s3.admin.secret_key, wal_compression="gzip")
    with barman_source(workroot / "complete-barman-src", tool) as src:
        sc = history(src, lambda kind: _barman_backup(tool, src, compression="gzip" if kind == "full" else None,
                                                       max_archive_size=None if kind == "full" else "4MB"),
                     second="plain", tablespace=workroot / "complete-barman-ts")
    sc.env = {**s3.env(readonly=True), "AWS_ENDPOINT_URL": s3.https_endpoint, "AWS_CA_BUNDLE": str(s3.cert)}
    return sc


def _keys(s3, prefix: str) -> list[str]:
    client = s3.admin_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix=prefix)
        return sorted(o["Key"] for page in pages for o in page.get("Contents", ()))
    finally:
        client.close()


@pytest.fixture
def barman_copy(barman_s3, barman_set, request):
    """A server-side copy of the whole destination (base/ and wals/) under its own path: returns
    (scenario, path, S3 client); the test edits its copy."""
    path = f"t-{request.node.name[:40].replace('[', '-').replace(']', '')}-{os.getpid()}"
    client = barman_s3.admin_client()
    for key in _keys(barman_s3, "orig/"):
        client.copy_object(Bucket=BUCKET, Key=f"{path}/{key[len('orig/'):]}", CopySource={"Bucket": BUCKET, "Key": key})
    yield barman_set, path, client
    for key in _keys(barman_s3, f"{path}/"):
        client.delete_object(Bucket=BUCKET, Key=key)
    client.close()


def _tars(s3, path: str, backup_id: str) -> list[str]:
    return [k.rsplit("/", 1)[1] for k in _keys(s3, f"{path}/pg/base/{backup_id}/") if ".tar" in k]


def test_barman_intact_split_backup_restores(barman_s3, barman_copy, settings_factory):
    sc, path, _ = barman_copy
    tars = _tars(barman_s3, path, sc.backups["b2"])
    assert {"data.tar", "data_0001.tar", "data_0002.tar"} <= set(tars), tars  # really split
    rows, result = _restore(settings_factory(f"s3://{BUCKET}/{path}", env=sc.env))
    assert (rows, result.outcome, result.backup) == (sc.total_rows, "REACHED", sc.backups["b2"])


@pytest.mark.parametrize("which", ["middle part", "data.tar", "tablespace tar"])
def test_twin_barman_missing_tar_is_refused_before_download(barman_s3, barman_copy, settings_factory, which):
    sc, path, client = barman_copy
    b2 = sc.backups["b2"]
    tars = _tars(barman_s3, path, b2)
    parts = sorted(t for t in tars if t.startswith("data"))
    gone = {"middle part": parts[len(parts) // 2], "data.tar": "data.tar",
            "tablespace tar": next(t for t in tars if t[0].isdigit())}[which]
    assert gone in tars and (which != "middle part" or gone not in (parts[0], parts[-1]))
    client.delete_object(Bucket=BUCKET, Key=f"{path}/pg/base/{b2}/{gone}")
    with pytest.raises(IncompleteBackup) as err:
        _restore(settings_factory(f"s3://{BUCKET}/{path}", env=sc.env))
    _assert_refused_before_download(err, f"pg/base/{b2}/{gone}")
    assert "backup.info" in str(err.value)


def test_twin_barman_compressed_backup_without_any_data_tar_names_its_real_suffix(barman_s3, barman_copy,
                                                                                  settings_factory):
    """b1 is gzip: with data.tar.gz gone (its tablespace tar still there) the refusal names
    data.tar.gz, the object barman-cloud-backup writes — not data.tar."""
    sc, path, client = barman_copy
    b1 = sc.backups["b1"]
    assert "data.tar.gz" in _tars(barman_s3, path, b1)
    client.delete_object(Bucket=BUCKET, Key=f"{path}/pg/base/{b1}/data.tar.gz")
    with pytest.raises(IncompleteBackup) as err:
        _restore(settings_factory(f"s3://{BUCKET}/{path}", f"backup:{b1}", env=sc.env))
    _assert_refused_before_download(err, f"pg/base/{b1}/data.tar.gz")


def test_barman_backup_without_backup_info_is_in_progress_and_skipped(barman_copy, settings_factory):
    """barman-cloud-backup uploads backup.info last: b2's tars without it are a backup in progress."""
    sc, path, client = barman_copy
    b1, b2 = sc.backups["b1"], sc.backups["b2"]
    client.delete_object(Bucket=BUCKET, Key=f"{path}/pg/base/{b2}/backup.info")
    url = f"s3://{BUCKET}/{path}"
    catalog = Restorer(settings_factory(url, env=sc.env)).catalog()
    assert [b.name for b in catalog.backups] == [b1]
    assert [(u.name, u.state) for u in catalog.unfinished] == [(b2, "in progress")]
    rows, result = _restore(settings_factory(url, env=sc.env))
    assert (rows, result.outcome, result.backup) == (sc.total_rows, "REACHED", b1)  # b1, replayed to the end
    out, data = _pgrestore_list(url, sc.env)
    assert f"{b2}  in progress" in out, out
    assert [(u["name"], u["state"]) for u in data["unfinished"]] == [(b2, "in progress")]
    assert b2 not in [b["name"] for b in data["backups"]]


@pytest.mark.parametrize("status,state", [("FAILED", "failed"), ("STARTED", "in progress")])
def test_barman_backup_info_not_done_is_unfinished_and_skipped(barman_copy, settings_factory, status, state):
    """FAILED is what handle_backup_errors uploads; STARTED is barman's status while it runs."""
    sc, path, client = barman_copy
    b1, b2 = sc.backups["b1"], sc.backups["b2"]
    key = f"{path}/pg/base/{b2}/backup.info"
    text = client.get_object(Bucket=BUCKET, Key=key)["Body"].read().decode()
    assert "status=DONE\n" in text
    client.put_object(Bucket=BUCKET, Key=key, Body=text.replace("status=DONE\n", f"status={status}\n").encode())
    url = f"s3://{BUCKET}/{path}"
    catalog = Restorer(settings_factory(url, env=sc.env)).catalog()
    assert [(u.name, u.state) for u in catalog.unfinished] == [(b2, state)]
    _, result = _restore(settings_factory(url, env=sc.env))
    assert (result.outcome, result.backup) == ("REACHED", b1)


def test_twin_barman_completed_backup_is_restored_by_latest(barman_copy, settings_factory):
    sc, path, _ = barman_copy
    url = f"s3://{BUCKET}/{path}"
    assert Restorer(settings_factory(url, env=sc.env)).catalog().unfinished == []
    _, data = _pgrestore_list(url, sc.env)
    assert data["unfinished"] == []
    rows, result = _restore(settings_factory(url, env=sc.env))
    assert (rows, result.outcome, result.backup) == (sc.total_rows, "REACHED", sc.backups["b2"])


# -- pgBackRest (the real tool, a posix repository) ------------------------------------------------
@pytest.fixture(scope="module")
def pgbr_set(workroot):
    """b1 full, b2 incr (referencing b1), taken by pgbackrest itself."""
    from tool_support import PgBackRest, pgbackrest_source

    repo = workroot / "tools-pgbr-repo"
    tool = PgBackRest.posix(workroot / "tools-pgbr-tool", repo, compress_type="gz")
    with pgbackrest_source(workroot / "tools-pgbr-src", tool) as src:
        sc = history(src, tool.backup)
    return sc, repo


@pytest.fixture
def pgbr_copy(pgbr_set):
    sc, repo = pgbr_set
    copy = Path(f"/tmp/pgr-tools-pgbr-{os.getpid()}")
    shutil.rmtree(copy, ignore_errors=True)
    shutil.copytree(repo, copy, symlinks=True)
    yield sc, copy
    shutil.rmtree(copy, ignore_errors=True)


def _drop_from_backup_info(path: Path, label: str) -> None:
    """backup.info as it was before pgBackRest's backupComplete() added ``label`` to it: the line
    gone, backrest-checksum recomputed the way pgBackRest computes it (SHA-1 of the sections as JSON)."""
    from pytest_pgrestore.formats._pgbackrest_info import parse_ini

    lines = [ln for ln in path.read_text().splitlines() if not ln.startswith(f"{label}=")]
    parts, section, last = [], None, None
    for line in lines:
        if not line.strip():
            continue
        if line.startswith("[") and line.endswith("]"):
            section = line[1:-1]
            continue
        key, _, value = line.partition("=")
        if section == "backrest" and key == "backrest-checksum":
            continue
        parts.append(("}," if last is not None else "") + json.dumps(section) + ":{" if section != last else ",")
        last = section
        parts.append(json.dumps(key) + ":" + value)
    digest = hashlib.sha1(("{" + "".join(parts) + "}}").encode()).hexdigest()
    text = "\n".join(f'backrest-checksum="{digest}"' if ln.startswith("backrest-checksum=") else ln
                     for ln in lines) + "\n"
    assert parse_ini(text.encode(), path.name).checksum_ok
    for target in (path, path.with_name(path.name + ".copy")):
        target.write_text(text)


def test_pgbackrest_backup_not_yet_in_backup_info_is_skipped(pgbr_copy, settings_factory):
    """b2 mid-backup: its folder holds pg_data/… and backup.manifest.copy, no backup.manifest, and
    backup.info does not name it yet → latest restores b1, replayed to the end."""
    sc, copy = pgbr_copy
    b1, b2 = sc.backups["b1"], sc.backups["b2"]
    (folder,) = (copy / "backup").glob(f"*/{b2}")
    (folder / "backup.manifest").unlink()
    assert (folder / "backup.manifest.copy").is_file() and any((folder / "pg_data").rglob("*"))
    _drop_from_backup_info(folder.parent / "backup.info", b2)
    catalog = Restorer(settings_factory(f"file://{copy}")).catalog()
    assert [b.name for b in catalog.backups] == [b1]
    rows, result = _restore(settings_factory(f"file://{copy}"))
    assert (rows, result.outcome, result.backup) == (sc.total_rows, "REACHED", b1)


def test_twin_pgbackrest_completed_backup_is_restored_by_latest(pgbr_copy, settings_factory):
    sc, copy = pgbr_copy
    (folder,) = (copy / "backup").glob(f"*/{sc.backups['b2']}")
    assert (folder / "backup.manifest").is_file()
    catalog = Restorer(settings_factory(f"file://{copy}")).catalog()
    assert [b.name for b in catalog.backups] == [sc.backups["b1"], sc.backups["b2"]]
    rows, result = _restore(settings_factory(f"file://{copy}"))
    assert (rows, result.outcome, result.backup) == (sc.total_rows, "REACHED", sc.backups["b2"])
