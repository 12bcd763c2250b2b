"""Issue 19: a backup is checked against its own index before any download, an unfinished backup
is listed as in progress and never chosen, and a restore without any index says its contents were
not verifiable.

WAL-G layouts come from ``tests/walg_writer.py`` (real pg_basebackup output in WAL-G's layout);
basebackup ones are the real pg_basebackup output of the pg15 scenario.  Every success has its
failing twin.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from it_support import copy_repo

from pytest_pgrestore.errors import CorruptBackup, PreflightError
from pytest_pgrestore.evidence._record import drill_warnings
from pytest_pgrestore.evidence._report import terminal_lines
from pytest_pgrestore.formats._base import IncompleteBackup
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


def _restore(settings) -> tuple[int, object]:
    with Restorer(settings).restore() as inst:
        with inst.connect() as conn:
            rows = conn.execute("select count(*) from t").fetchone()[0]
        return rows, inst.result


def _assert_refused_before_download(err, key: str) -> None:
    assert isinstance(err.value, IncompleteBackup)
    assert isinstance(err.value, CorruptBackup) and isinstance(err.value, PreflightError)
    assert key in str(err.value)
    result = err.value.result
    assert result.outcome == "REFUSED_PREFLIGHT"
    assert result.bytes_fetched == 0
    assert "run_dir" not in result.evidence  # no run dir, so no PGDATA: nothing was downloaded


# -- WAL-G ---------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def walg_layouts(workroot):
    from walg_writer import build_source

    src = build_source(workroot / "walg-complete-src")
    made: list[Path] = []

    def layout(name: str, **kw):
        out = workroot / "walg-complete" / f"{name}-{os.getpid()}"
        shutil.rmtree(out, ignore_errors=True)
        _, pushed = src.layout(out, method="none", **kw)  # stored size = tar size (see report)
        made.append(out)
        return out, pushed

    yield src, layout
    for out in made:
        shutil.rmtree(out, ignore_errors=True)


def test_walg_intact_multi_part_backup_restores(walg_layouts, settings_factory):
    src, layout = walg_layouts
    out, pushed = layout("intact", backups=(0, 2), part_size=256 << 10)
    parts = sorted((out / "basebackups_005" / pushed[-1].name / "tar_partitions").glob("part_*"))
    assert len(parts) >= 3
    rows, result = _restore(settings_factory(f"file://{out}"))
    assert (rows, result.outcome, result.backup) == (src.total_rows, "REACHED", pushed[-1].name)


def test_twin_walg_missing_tar_partition_is_refused_before_download(walg_layouts, settings_factory):
    _, layout = walg_layouts
    out, pushed = layout("missing-part", backups=(0, 2), part_size=256 << 10)
    parts = sorted((out / "basebackups_005" / pushed[-1].name / "tar_partitions").glob("part_*"))
    gone = parts[len(parts) // 2]
    gone.unlink()
    with pytest.raises(IncompleteBackup) as err:
        _restore(settings_factory(f"file://{out}"))
    _assert_refused_before_download(err, f"basebackups_005/{pushed[-1].name}/tar_partitions/{gone.name}")
    assert "files_metadata.json" in str(err.value)


def test_walg_backup_without_its_sentinel_is_in_progress_and_skipped(walg_layouts, settings_factory):
    src, layout = walg_layouts
    out, pushed = layout("in-progress", backups=(1, 2))
    (out / "basebackups_005" / f"{pushed[-1].name}_backup_stop_sentinel.json").unlink()
    settings = settings_factory(f"file://{out}")
    catalog = Restorer(settings).catalog()
    assert [b.name for b in catalog.backups] == [pushed[0].name]
    assert [(u.name, u.state) for u in catalog.unfinished] == [(pushed[-1].name, "in progress")]
    for target in ("latest", "oldest"):
        rows, result = _restore(settings_factory(f"file://{out}", target))
        assert (result.outcome, result.backup) == ("REACHED", pushed[0].name)
        assert target == "oldest" or rows == src.total_rows  # latest: the older backup, replayed to the end


def test_twin_walg_completed_backup_is_restored_by_latest(walg_layouts, settings_factory):
    src, layout = walg_layouts
    out, pushed = layout("completed", backups=(0, 2))
    catalog = Restorer(settings_factory(f"file://{out}")).catalog()
    assert catalog.unfinished == []
    rows, result = _restore(settings_factory(f"file://{out}"))
    assert (rows, result.outcome, result.backup) == (src.total_rows, "REACHED", pushed[-1].name)


# -- basebackup (real pg_basebackup output) ------------------------------------------------------
@pytest.fixture
def bb_copy(pg15):
    repo = copy_repo(pg15, Path(f"/tmp/pgr-complete-{os.getpid()}"))
    yield repo
    shutil.rmtree(repo, ignore_errors=True)


def test_basebackup_without_manifest_among_manifested_ones_is_in_progress(bb_copy, pg15, settings_factory):
    b1, b2 = pg15.backups["b1"].name, pg15.backups["b2"].name
    (bb_copy / "basebackups" / b2 / "backup_manifest").unlink()  # pg_basebackup writes it last
    catalog = Restorer(settings_factory(f"file://{bb_copy}")).catalog()
    assert [b.name for b in catalog.backups] == [b1]
    assert [(u.name, u.state) for u in catalog.unfinished] == [(b2, "in progress")]
    rows, result = _restore(settings_factory(f"file://{bb_copy}"))
    assert (result.outcome, result.backup) == ("REACHED", b1)
    assert rows == pg15.total_rows if hasattr(pg15, "total_rows") else rows > 0


def test_basebackup_zero_byte_base_tar_is_in_progress_not_an_internal_error(bb_copy, pg15, settings_factory):
    b1 = pg15.backups["b1"].name
    newer = bb_copy / "basebackups" / "99991231T235959"  # sorts last: pg_basebackup just began
    newer.mkdir()
    (newer / "base.tar").write_bytes(b"")
    catalog = Restorer(settings_factory(f"file://{bb_copy}")).catalog()
    assert ("99991231T235959", "in progress") in [(u.name, u.state) for u in catalog.unfinished]
    for target in ("latest", "oldest"):
        _, result = _restore(settings_factory(f"file://{bb_copy}", target))
        assert result.outcome == "REACHED"
    assert b1 in [b.name for b in catalog.backups]


def test_twin_basebackup_completed_newer_backup_is_restored_by_latest(bb_copy, pg15, settings_factory):
    _, result = _restore(settings_factory(f"file://{bb_copy}"))
    assert (result.outcome, result.backup) == ("REACHED", pg15.backups["b2"].name)
    assert Restorer(settings_factory(f"file://{bb_copy}")).catalog().unfinished == []


def test_basebackup_without_any_manifest_says_contents_not_verifiable(bb_copy, pg15, settings_factory):
    for b in ("b1", "b2"):
        (bb_copy / "basebackups" / pg15.backups[b].name / "backup_manifest").unlink()
    settings = settings_factory(f"file://{bb_copy}")
    _, result = _restore(settings)
    assert (result.outcome, result.backup) == ("REACHED", pg15.backups["b2"].name)
    assert result.evidence["contents_verified"] is False
    assert "no backup_manifest" in result.evidence["contents_check"]
    warnings = drill_warnings(result.evidence, settings)
    assert any(w.startswith("contents not verifiable") for w in warnings)
    record = {"id": "restore[latest]", "passed": True, "outcome": "REACHED", "rto": {"seconds": 1.0},
              "rpo": {}, "phases": [], "drills": [], "warnings": warnings}
    assert any("WARNING: contents not verifiable" in line for line, _ in terminal_lines([record]))


def test_twin_basebackup_with_manifest_says_contents_verified(bb_copy, settings_factory):
    settings = settings_factory(f"file://{bb_copy}")
    _, result = _restore(settings)
    assert result.evidence["contents_verified"] is True
    assert "pg_verifybackup" in result.evidence["contents_check"]
    assert not any("contents not verifiable" in w for w in drill_warnings(result.evidence, settings))


# -- pgBackRest (the real tool, a posix repository) ----------------------------------------------
@pytest.fixture(scope="module")
def pgbr_repo(workroot):
    from tool_support import PgBackRest, history, pgbackrest_source

    repo = workroot / "complete-pgbr-repo"
    tool = PgBackRest.posix(workroot / "complete-pgbr-tool", repo, compress_type="gz")
    with pgbackrest_source(workroot / "complete-pgbr-src", tool) as src:
        sc = history(src, tool.backup)
    return sc, repo


@pytest.fixture
def pgbr_copy(pgbr_repo):
    sc, repo = pgbr_repo
    copy = Path(f"/tmp/pgr-complete-pgbr-{os.getpid()}")
    shutil.copytree(repo, copy, symlinks=True)
    yield sc, copy
    shutil.rmtree(copy, ignore_errors=True)


def test_pgbackrest_intact_repository_restores(pgbr_copy, settings_factory):
    sc, copy = pgbr_copy
    rows, result = _restore(settings_factory(f"file://{copy}"))
    assert (rows, result.outcome, result.backup) == (sc.rows_at("c2", len(sc.commits["c2"]) - 1), "REACHED",
                                                    sc.backups["b2"])
    assert result.evidence["contents_verified"] is True


def test_twin_pgbackrest_file_named_in_the_manifest_missing_is_refused_before_download(pgbr_copy,
                                                                                      settings_factory):
    sc, copy = pgbr_copy
    label = sc.backups["b2"]
    stored = sorted(p for p in (copy / "backup").glob(f"*/{label}/pg_data/base/*/*") if p.is_file())
    gone = max(stored, key=lambda p: p.stat().st_size)  # a relation file the manifest names
    gone.unlink()
    with pytest.raises(IncompleteBackup) as err:
        _restore(settings_factory(f"file://{copy}"))
    _assert_refused_before_download(err, str(gone.relative_to(copy)))
    assert "backup.manifest" in str(err.value)


def test_pgrestore_list_shows_the_backup_in_progress(bb_copy, pg15, workroot):
    import json
    import subprocess
    import sys

    b2 = pg15.backups["b2"].name
    (bb_copy / "basebackups" / b2 / "backup_manifest").unlink()
    cmd = [sys.executable, "-m", "pytest_pgrestore.cli", "list", f"file://{bb_copy}"]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    assert f"{b2}  in progress: no backup_manifest yet" in out
    data = json.loads(subprocess.run(cmd + ["--json"], capture_output=True, text=True, check=True).stdout)
    assert [(u["name"], u["state"]) for u in data["unfinished"]] == [(b2, "in progress")]
    assert b2 not in [b["name"] for b in data["backups"]]


# -- backup_label: the user's text in any encoding ------------------------------------------------
def _rewrite_label(tar_path: Path, edit) -> None:
    """Rewrite base.tar with its backup_label passed through ``edit`` (bytes → bytes), the other
    members as they were (pg_basebackup's own output)."""
    import io
    import tarfile

    out = tar_path.with_suffix(".new")
    with tarfile.open(tar_path) as src, tarfile.open(out, "w", format=tarfile.PAX_FORMAT) as dst:
        for member in src:
            data = src.extractfile(member) if member.isfile() else None
            if member.name.lstrip("./") == "backup_label":
                body = edit(data.read())
                member.size = len(body)
                dst.addfile(member, io.BytesIO(body))
            else:
                dst.addfile(member, data)
    out.replace(tar_path)


def test_a_latin1_byte_in_backup_labels_label_restores(bb_copy, pg15, settings_factory):
    """LABEL is free text in the server's encoding: a Latin-1 'é' (0xE9, not UTF-8) used to end in
    UnicodeDecodeError, exit 3.  The LSN lines are what is read; the backup restores."""
    b2 = pg15.backups["b2"].name
    for b in ("b1", "b2"):
        (bb_copy / "basebackups" / pg15.backups[b].name / "backup_manifest").unlink()
    _rewrite_label(bb_copy / "basebackups" / b2 / "base.tar",
                   lambda body: body.replace(b"LABEL: ", b"LABEL: caf\xe9 ", 1))
    rows, result = _restore(settings_factory(f"file://{bb_copy}"))
    assert (result.outcome, result.backup) == ("REACHED", b2)
    assert rows == pg15.total_rows


def test_twin_a_label_without_its_start_location_is_not_chosen(bb_copy, pg15, settings_factory):
    """Twin: the same rewrite, but the START WAL LOCATION line gone — the backup cannot be placed,
    so it is listed as unfinished and never chosen; latest restores the one before."""
    b2 = pg15.backups["b2"].name
    for b in ("b1", "b2"):
        (bb_copy / "basebackups" / pg15.backups[b].name / "backup_manifest").unlink()
    for history in (bb_copy / "wal").rglob("*.backup*"):  # nothing else may tell where b2 starts
        history.unlink()

    def drop_start(body: bytes) -> bytes:
        return b"".join(line for line in body.splitlines(keepends=True) if not line.startswith(b"START WAL"))

    _rewrite_label(bb_copy / "basebackups" / b2 / "base.tar", drop_start)
    catalog = Restorer(settings_factory(f"file://{bb_copy}")).catalog()
    assert b2 not in [b.name for b in catalog.backups]
    assert b2 in [u.name for u in catalog.unfinished]
