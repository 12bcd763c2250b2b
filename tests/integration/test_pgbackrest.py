"""pgBackRest repositories as drill sources: real `pgbackrest` backups of a real server whose
archive_command is ``pgbackrest archive-push``, into SeaweedFS over TLS and into a posix repo.

Scenario (each source): demo schema, commits ``c0`` → full → ``c1`` → ``rp_between`` → incr
(posix: diff) → incident → ``c2`` → WAL switch; each commit adds a row to ``t``.
The posix repo then gets more full/incr backups, one per compression type.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from it_support import our_postgres_processes, run_dirs
from tool_support import (
    PgBackRest,
    ToolScenario,
    chown_tree,
    drill_with_report,
    gate_cli,
    history,
    pgbackrest_source,
    self_signed_cert,
)

from pytest_pgrestore.demo._seaweed import SeaweedS3
from pytest_pgrestore.errors import CorruptBackup, FormatError, PreflightError, RestoreFailed
from pytest_pgrestore.formats._pgbackrest import StanzaError, UnsupportedRepository
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="apt-get install pgbackrest")]

CODECS = ("lz4", "bz2", "none")  # the posix repo's extra full backups (gz: b1/b2; zst: the S3 repo)


@pytest.fixture(autouse=True)
def nothing_left_behind(workroot):
    yield
    assert run_dirs(workroot) == []
    assert our_postgres_processes(workroot) == []


@pytest.fixture(scope="module")
def tls_s3(workroot):
    cert, key = self_signed_cert(workroot / "pgbr-tls")
    with SeaweedS3(workroot / "pgbr-s3", tls=(cert, key)) as s3:
        s3.cert = cert
        yield s3


def https_env(s3, *, readonly: bool = True) -> dict[str, str]:
    return {**s3.env(readonly=readonly), "AWS_ENDPOINT_URL": s3.https_endpoint, "AWS_CA_BUNDLE": str(s3.cert)}


@pytest.fixture(scope="module")
def pgbr_s3(workroot, tls_s3) -> ToolScenario:
    """pgBackRest, S3 repo over TLS at s3://pgbr/repo, zst, full + incr."""
    tls_s3.create_bucket("pgbr")
    tool = PgBackRest.s3(workroot / "pgbr-s3-tool", endpoint_port=tls_s3.ports["s3_https"], bucket="pgbr",
                         path="/repo", key=tls_s3.admin.access_key, secret=tls_s3.admin.secret_key,
                         compress_type="zst")
    with pgbackrest_source(workroot / "pgbr-s3-src", tool) as src:
        sc = history(src, tool.backup)
    sc.url, sc.env = "s3://pgbr/repo", https_env(tls_s3)
    return sc


@pytest.fixture(scope="module")
def pgbr_posix(workroot) -> ToolScenario:
    """pgBackRest, posix repo, gz full + diff, then one full (+ incr for lz4) per codec in CODECS."""
    repo = workroot / "pgbr-posix-repo"
    tool = PgBackRest.posix(workroot / "pgbr-posix-tool", repo, compress_type="gz")
    with pgbackrest_source(workroot / "pgbr-posix-src", tool) as src:
        sc = history(src, tool.backup, second="diff", tablespace=workroot / "pgbr-posix-ts")
        codec_backups = {}
        for codec in CODECS:
            tool.options["compress-type"] = codec
            tool.write_config(src)
            label = tool.backup("full")
            codec_backups[label] = codec
            src.commit_rows(1, table="extra")
            if codec == "lz4":
                label = tool.backup("incr")
                codec_backups[label] = "lz4 incr"
                src.commit_rows(1, table="extra")
        src.switch_wal()
    sc.url, sc.extra = f"file://{repo}", {"repo": repo, "codec_backups": codec_backups, "tool": tool}
    return sc


def restore_rows(settings, table: str = "t") -> tuple[int, object]:
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            return conn.execute(f"select count(*) from {table}").fetchone()[0], inst.result


def copy_repo(sc: ToolScenario, name: str) -> Path:
    dest = Path(f"/tmp/pgr-pgbr-{os.getpid()}-{name}")
    shutil.rmtree(dest, ignore_errors=True)
    shutil.copytree(sc.extra["repo"], dest, symlinks=True)
    return dest


def object_count(s3, bucket: str, prefix: str) -> int:
    client = s3.admin_client()
    try:
        pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix)
        return sum(len(page.get("Contents", ())) for page in pages)
    finally:
        client.close()


# -- S3 over TLS, zst: latest, a time between two commits, each backup by name ---------------------
def test_s3_latest_replays_every_commit_and_never_writes_to_the_repository(pgbr_s3, tls_s3, settings_factory):
    before = object_count(tls_s3, "pgbr", "repo/")
    rows, result = restore_rows(settings_factory(pgbr_s3.url, env=pgbr_s3.env))
    assert (rows, result.outcome, result.format) == (pgbr_s3.total_rows, "REACHED", "pgbackrest")
    assert result.backup == pgbr_s3.backups["b2"]  # the incremental, resolved through its full
    assert result.source == f"{pgbr_s3.url}?stanza=main"  # the only stanza, picked and shown
    assert object_count(tls_s3, "pgbr", "repo/") == before


@pytest.mark.parametrize("name,index", [("c1", 0), ("c2", 1)])
def test_s3_time_between_two_commits(pgbr_s3, settings_factory, name, index):
    rows, result = restore_rows(settings_factory(pgbr_s3.url, pgbr_s3.between(name, index), env=pgbr_s3.env))
    assert (rows, result.outcome) == (pgbr_s3.rows_at(name, index), "REACHED")
    assert result.backup == pgbr_s3.backups["b1" if name == "c1" else "b2"]


@pytest.mark.parametrize("role,rows", [("b1", 2), ("b2", 4)])
def test_s3_named_backup(pgbr_s3, settings_factory, role, rows):
    target = f"backup:{pgbr_s3.backups[role]}"
    got, result = restore_rows(settings_factory(pgbr_s3.url, target, env=pgbr_s3.env))
    assert (got, result.outcome, result.backup) == (rows, "REACHED", pgbr_s3.backups[role])


def test_s3_catalog_reads_the_repository_natively(pgbr_s3, settings_factory):
    catalog = Restorer(settings_factory(pgbr_s3.url, env=pgbr_s3.env)).catalog()
    assert [b.name for b in catalog.backups] == [pgbr_s3.backups["b1"], pgbr_s3.backups["b2"]]
    assert [b.details["type"] for b in catalog.backups] == ["full", "incr"]
    assert catalog.selector == "main" and "?stanza=main" in catalog.source
    assert all(b.pg_major == 15 and b.segment_size == 16 << 20 for b in catalog.backups)


def test_s3_same_drill_files_pass_unchanged(pgbr_s3, workroot):
    """drills/ (the runbook checklist the demo runs on a basebackup source) against pgBackRest."""
    drills = Path(__file__).resolve().parents[2] / "drills"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    env.update(pgbr_s3.env, AWS_CONFIG_FILE="/dev/null", AWS_SHARED_CREDENTIALS_FILE="/dev/null",
               PGRESTORE_DRILL_INCIDENT_AT=pgbr_s3.incident_at)
    proc = subprocess.run(
        [sys.executable, "-m", "pytest", str(drills), "-p", "no:cacheprovider", "-q",
         f"--restore-source={pgbr_s3.url}", f"--restore-workdir={workroot / 'runs'}"],
        cwd=drills.parent, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    assert " failed" not in proc.stdout and "skipped" not in proc.stdout


def test_gate_passes_a_bare_source_whose_drill_resolved_the_only_stanza(pgbr_posix, workroot):
    """issue 20: the drill records ``…?stanza=main`` (the catalog picked the only stanza); the gate
    asked with the bare source (another spelling of it, even) finds it; twin: a newer failing drill
    of the same bare source makes the same gate fail, naming it."""
    repo = pgbr_posix.extra["repo"]
    evidence = workroot / "gate-evidence"
    shutil.rmtree(evidence, ignore_errors=True)
    evidence.mkdir()
    proc = drill_with_report(pgbr_posix, workroot, f"file://{repo}", "latest", evidence / "drill-1.json")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    recorded = json.loads((evidence / "drill-1.json").read_text())["restores"][0]["source"]
    assert recorded == f"file://{repo}?stanza=main"
    for asked in (f"file://{repo}", f"{repo}/"):
        gate = gate_cli(evidence, asked)
        assert gate.returncode == 0, gate.stdout + gate.stderr
        assert f"PASS: a drill of file://{repo}?stanza=main passed" in gate.stdout
    # twin: a newer drill of the same bare source, its target past the archive, fails
    proc = drill_with_report(pgbr_posix, workroot, f"{repo}/", "lsn:FF/0", evidence / "drill-2.json")
    assert proc.returncode != 0, proc.stdout[-4000:]
    gate = gate_cli(evidence, f"file://{repo}")
    assert gate.returncode == 1, gate.stdout + gate.stderr
    assert f"FAIL: the newest drill of file://{repo}?stanza=main failed" in gate.stderr
    assert "drill-2.json" in gate.stderr


# -- posix repo: every codec, full/diff/incr ----------------------------------------------------
def test_posix_time_target_through_a_diff_backup(pgbr_posix, settings_factory):
    rows, result = restore_rows(settings_factory(pgbr_posix.url, pgbr_posix.between("c2", 0)))
    assert (rows, result.outcome, result.backup) == (pgbr_posix.rows_at("c2", 0), "REACHED",
                                                     pgbr_posix.backups["b2"])
    assert pgbr_posix.backups["b2"].endswith("D")


def test_posix_tablespace_lands_in_the_run_dir(pgbr_posix, settings_factory):
    with Restorer(settings_factory(pgbr_posix.url)).restore() as inst:
        with inst.connect() as conn:
            assert conn.execute("select count(*) from in_ts").fetchone()[0] == 100
            (location,) = conn.execute("select pg_tablespace_location(oid) from pg_tablespace "
                                       "where spcname = 'ts1'").fetchone()
        assert location.startswith(str(inst.run_dir)), location


@pytest.fixture(params=["whole", "streamed"])
def file_path(request, monkeypatch):
    """Which of the two ways a file is copied: small files are read and decoded in one call, large
    ones streamed; "streamed" sends every file, however small, down the streaming path."""
    if request.param == "streamed":
        from pytest_pgrestore.formats import _pgbackrest as pgbackrest

        monkeypatch.setattr(pgbackrest, "_WHOLE", -1)
    return request.param


@pytest.mark.parametrize("codec", ["lz4", "lz4 incr", "bz2", "none"])
def test_posix_each_compression_restores_by_name(pgbr_posix, settings_factory, codec, file_path):
    label = next(k for k, v in pgbr_posix.extra["codec_backups"].items() if v == codec)
    rows, result = restore_rows(settings_factory(pgbr_posix.url, f"backup:{label}"))
    assert (rows, result.outcome) == (pgbr_posix.total_rows, "REACHED")


def _files(root: Path) -> dict[str, bytes]:
    """Relative path → content of every regular file under ``root``, not following symlinks."""
    out = {}
    for dirpath, _dirs, names in os.walk(root):  # os.walk does not descend into symlinked dirs
        for name in names:
            path = Path(dirpath, name)
            if path.is_file() and not path.is_symlink():
                out[str(path.relative_to(root))] = path.read_bytes()
    return out


def test_native_restore_matches_pgbackrest_restore(pgbr_posix, workroot):
    """Every file our reader writes, tablespace included, is byte-identical to `pgbackrest restore`'s."""
    from pytest_pgrestore.formats import get_format
    from pytest_pgrestore.store._local import LocalStore

    label = pgbr_posix.backups["b2"]  # a diff backup: files from two backups
    ours, theirs, theirs_ts = workroot / "cmp-ours", workroot / "cmp-theirs", workroot / "cmp-theirs-ts"
    fmt = get_format(LocalStore(pgbr_posix.extra["repo"]), "pgbackrest")
    mat = fmt.materialize(fmt.catalog().backup(label), ours / "pgdata", ours, owner=None)
    for d in (theirs, theirs_ts):
        d.mkdir()
        chown_tree(d)
    pgbr_posix.extra["tool"].run("restore", f"--set={label}", f"--pg1-path={theirs}", "--type=none",
                                 f"--tablespace-map-all={theirs_ts}")
    try:
        ignore = ("postgresql.auto.conf", "recovery.signal")  # pgbackrest restore writes recovery settings
        mine = {k: v for k, v in _files(ours / "pgdata").items() if k not in ignore}
        real = {k: v for k, v in _files(theirs).items() if k not in ignore}
        assert sorted(mine) == sorted(real)
        assert [k for k in mine if mine[k] != real[k]] == []
        (oid,) = mat.tablespaces
        assert _files(mat.tablespaces[oid]) == _files(theirs_ts / "ts1") != {}
    finally:
        for d in (ours, theirs, theirs_ts):
            shutil.rmtree(d, ignore_errors=True)


# -- twins: one defect each, named before or during the restore -------------------------------
def test_twin_deleted_wal_segment_is_refused_before_download(pgbr_posix, settings_factory):
    repo = copy_repo(pgbr_posix, "gap")
    try:
        newest = Restorer(settings_factory(f"file://{repo}")).catalog().backups[-1]
        name = newest.details["archive_stop"]  # the newest backup needs it to become consistent
        (victim,) = (repo / "archive/main").glob(f"15-1/*/{name}-*")
        victim.unlink()
        with pytest.raises(PreflightError) as err:
            restore_rows(settings_factory(f"file://{repo}"))
        assert name in err.value.what
        assert err.value.result.outcome == "REFUSED_PREFLIGHT" and err.value.result.bytes_fetched == 0
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def test_twin_s3_deleted_wal_segment_is_refused_before_download(pgbr_s3, tls_s3, settings_factory):
    """The copy holds no backup file at all (only info files, manifests and WAL): the refusal
    comes from the listing alone."""
    client = tls_s3.admin_client()
    try:
        keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket="pgbr", Prefix="repo/")
                for o in page.get("Contents", ()) if "/pg_data/" not in o["Key"]]
        newest = Restorer(settings_factory(pgbr_s3.url, env=pgbr_s3.env)).catalog().backups[-1]
        name = newest.details["archive_start"]
        for key in keys:
            if f"/{name}-" not in key:
                client.copy_object(Bucket="pgbr", Key="gap/" + key[len("repo/"):],
                                   CopySource={"Bucket": "pgbr", "Key": key})
    finally:
        client.close()
    with pytest.raises(PreflightError) as err:
        restore_rows(settings_factory("s3://pgbr/gap", env=pgbr_s3.env))
    assert name in err.value.what and "missing from the archive" in err.value.what
    assert err.value.result.outcome == "REFUSED_PREFLIGHT" and err.value.result.bytes_fetched == 0


def _stored_file(repo: Path, label: str, suffix: str) -> Path:
    """The largest file stored in backup ``label`` itself (not by reference)."""
    files = [p for p in (repo / "backup/main" / label / "pg_data" / "base").rglob("*") if p.is_file()]
    return max((p for p in files if p.name.endswith(suffix)), key=lambda p: p.stat().st_size)


@pytest.mark.parametrize("codec", ["none", "bz2", "lz4"])
def test_twin_flipped_byte_is_named_by_its_codec_or_pgbackrests_checksum(pgbr_posix, settings_factory, codec,
                                                                          file_path):
    """The codec's own checks find it first where there are some (lz4's block decoding and content
    checksum, on either path; bz2's CRC); without a codec, the SHA-1 against the manifest does."""
    label = next(k for k, v in pgbr_posix.extra["codec_backups"].items() if v == codec)
    repo = copy_repo(pgbr_posix, f"flip-{codec}-{file_path}")
    try:
        victim = _stored_file(repo, label, "" if codec == "none" else f".{codec}")
        data = bytearray(victim.read_bytes())
        data[len(data) // 2] ^= 0x01
        victim.write_bytes(bytes(data))
        rel = str(victim.relative_to(repo / "backup/main" / label)).removesuffix(f".{codec}")
        with pytest.raises(CorruptBackup) as err:
            restore_rows(settings_factory(f"file://{repo}", f"backup:{label}"))
        assert rel in err.value.what
        assert ("fails pgBackRest's checksum" if codec == "none" else "does not decompress") in err.value.what
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def test_twin_damaged_archived_segment_aborts_replay(pgbr_posix, settings_factory):
    repo = copy_repo(pgbr_posix, "walflip")
    try:
        segs = sorted((repo / "archive/main").glob("15-1/*/*-*"))
        # the newest segment archived with gz: it holds c2, so replay to a time inside c2 reads it
        victim = [s for s in segs if s.name.endswith(".gz")][-1]
        raw = subprocess.run(["gzip", "-dc", str(victim)], capture_output=True, check=True).stdout
        flipped = bytearray(raw)
        flipped[100] ^= 0x01  # inside the page header of the first page: the content changes, gzip is valid
        victim.write_bytes(subprocess.run(["gzip", "-c"], input=bytes(flipped), capture_output=True,
                                          check=True).stdout)
        with pytest.raises(RestoreFailed) as err:
            restore_rows(settings_factory(f"file://{repo}", pgbr_posix.between("c2", 1)))
        assert err.value.result.outcome == "RESTORE_COMMAND_ABORT"
        assert victim.name in str(err.value) and "fails its checksum" in str(err.value)
    finally:
        shutil.rmtree(repo, ignore_errors=True)


# -- stanzas ------------------------------------------------------------------------------------
def test_several_stanzas_fail_before_download_listing_them(pgbr_posix, settings_factory):
    repo = copy_repo(pgbr_posix, "stanzas")
    try:
        for top in ("archive", "backup"):
            shutil.copytree(repo / top / "main", repo / top / "other", symlinks=True)
        with pytest.raises(StanzaError) as err:
            Restorer(settings_factory(f"file://{repo}")).catalog()
        assert "holds 2 stanzas: main, other" in err.value.what and "?stanza=" in err.value.fix
        rows, result = restore_rows(settings_factory(f"file://{repo}?stanza=other", pgbr_posix.between("c1", 0)))
        assert (rows, result.outcome) == (pgbr_posix.rows_at("c1", 0), "REACHED")
        with pytest.raises(StanzaError, match="stanza 'nope' is not in"):
            Restorer(settings_factory(f"file://{repo}?stanza=nope")).catalog()
    finally:
        shutil.rmtree(repo, ignore_errors=True)


def test_source_pointing_straight_at_the_stanza_folder(pgbr_posix, settings_factory):
    catalog = Restorer(settings_factory(f"{pgbr_posix.url}/backup/main")).catalog()
    assert catalog.selector == "main" and len(catalog.backups) == 2 + 4
    rows, result = restore_rows(settings_factory(f"{pgbr_posix.url}/archive/main", pgbr_posix.between("c2", 1)))
    assert (rows, result.outcome) == (pgbr_posix.rows_at("c2", 1), "REACHED")


def test_selector_for_another_format_is_refused(pgbr_posix, settings_factory):
    with pytest.raises(FormatError, match=r"\?server= does not apply to the pgbackrest format"):
        Restorer(settings_factory(f"{pgbr_posix.url}?server=pg", format="pgbackrest")).catalog()


# -- a failover: timeline 2 and its history file in the archive -----------------------------------
def test_latest_follows_the_new_timeline_after_a_failover(workroot, settings_factory):
    repo = workroot / "pgbr-tli-repo"
    tool = PgBackRest.posix(workroot / "pgbr-tli-tool", repo, compress_type="lz4")
    with pgbackrest_source(workroot / "pgbr-tli-src", tool) as src:
        src.commit_rows(2)
        tool.backup("full")
        src.commit_rows(2)
        assert src.new_timeline() == 2
        src.commit_rows(3)
        src.switch_wal()
    assert list(repo.glob("archive/main/15-1/00000002.history"))
    assert list(repo.glob("archive/main/15-1/*/*.partial-*"))  # the old timeline's last segment
    rows, result = restore_rows(settings_factory(f"file://{repo}"))
    assert (rows, result.outcome, result.timeline) == (7, "REACHED", 2)


# -- features the native reader refuses, by name, at catalog time --------------------------------
def _small_repo(workroot: Path, name: str, **options) -> tuple[PgBackRest, Path]:
    repo = workroot / f"{name}-repo"
    tool = PgBackRest.posix(workroot / f"{name}-tool", repo, compress_type="lz4", extra=options)
    with pgbackrest_source(workroot / f"{name}-src", tool) as src:
        src.commit_rows(2)
        tool.backup("full")
        src.commit_rows(2)
        if options.get("repo1-block") == "y":
            tool.backup("incr")
        src.switch_wal()
    return tool, repo


def test_encrypted_repository_is_refused_at_catalog_time(workroot, settings_factory):
    _tool, repo = _small_repo(workroot, "pgbr-enc", **{"repo1-cipher-type": "aes-256-cbc",
                                                       "repo1-cipher-pass": "drill-secret"})
    with pytest.raises(UnsupportedRepository) as err:
        Restorer(settings_factory(f"file://{repo}")).catalog()
    assert "encryption is not supported" in err.value.what and "pgbackrest restore" in err.value.fix


def test_block_incremental_is_refused_and_its_bundled_twin_restores(workroot, settings_factory):
    _tool, repo = _small_repo(workroot, "pgbr-block", **{"repo1-bundle": "y", "repo1-block": "y", "beta": "y"})
    with pytest.raises(UnsupportedRepository) as err:
        Restorer(settings_factory(f"file://{repo}")).catalog()
    assert "block incremental" in err.value.what
    _tool, bundled = _small_repo(workroot, "pgbr-bundle", **{"repo1-bundle": "y"})
    assert list(bundled.glob("backup/main/*/bundle/*"))  # really bundled
    rows, result = restore_rows(settings_factory(f"file://{bundled}"))
    assert (rows, result.outcome) == (4, "REACHED")


def test_an_uncompressed_bundled_repository_restores(workroot, settings_factory):
    """pgBackRest leaves a file's repo-size out of the manifest when it equals its size (stored
    uncompressed): a bundled file's range then ends at its size (it raised a TypeError)."""
    _tool, repo = _small_repo(workroot, "pgbr-bundle-none", **{"repo1-bundle": "y", "compress-type": "none"})
    assert list(repo.glob("backup/main/*/bundle/*"))  # really bundled
    rows, result = restore_rows(settings_factory(f"file://{repo}"))
    assert (rows, result.outcome) == (4, "REACHED")


# -- the GETs themselves, over TLS: ours on one kept-alive connection, refused for a foreign CA ------
def _lean_watch(monkeypatch):
    from pytest_pgrestore.store import _s3_lean as s3_lean

    seen = {"connections": 0, "handed_back": 0}
    opened, get = s3_lean._Connection.open.__func__, s3_lean.LeanGet.get

    def counting_open(cls, *args, **kwargs):
        seen["connections"] += 1
        return opened(cls, *args, **kwargs)

    def counting_get(self, key, extra):
        resp = get(self, key, extra)
        seen["handed_back"] += resp is None
        return resp

    monkeypatch.setattr(s3_lean._Connection, "open", classmethod(counting_open))
    monkeypatch.setattr(s3_lean.LeanGet, "get", counting_get)
    return seen


def test_s3_tls_gets_are_sent_by_us_on_one_kept_alive_connection(tls_s3, monkeypatch):
    from pytest_pgrestore.store._s3 import S3Store

    tls_s3.create_bucket("leantls")
    client = tls_s3.admin_client()
    bodies = {f"o/{i}": os.urandom(100 + 997 * i) for i in range(20)}
    for key, body in bodies.items():
        client.put_object(Bucket="leantls", Key=key, Body=body)
    client.close()
    seen = _lean_watch(monkeypatch)
    with S3Store("leantls", "o", env=https_env(tls_s3)) as store:
        for key, body in bodies.items():
            with store.open(key.removeprefix("o/")) as f:
                assert f.read() == body
        with store.open_range("19", 5, 50) as f:
            assert f.read() == bodies["o/19"][5:50]
    assert seen == {"connections": 1, "handed_back": 0}


def test_twin_s3_tls_with_another_ca_is_refused_by_us_and_explained_by_the_client(tls_s3, workroot, monkeypatch):
    from pytest_pgrestore.errors import SourceError
    from pytest_pgrestore.store._s3 import S3Store

    foreign, _ = self_signed_cert(workroot / "foreign-ca")
    tls_s3.create_bucket("leantls-twin")
    client = tls_s3.admin_client()
    client.put_object(Bucket="leantls-twin", Key="o/x", Body=b"never read")
    client.close()
    seen = _lean_watch(monkeypatch)
    env = {**https_env(tls_s3), "AWS_CA_BUNDLE": str(foreign)}
    with S3Store("leantls-twin", "o", env=env) as store, pytest.raises(SourceError) as err:
        store.open("x").read()
    assert seen["handed_back"] == 1
    assert "AWS_CA_BUNDLE" in err.value.fix and env["AWS_SECRET_ACCESS_KEY"] not in str(err.value)
