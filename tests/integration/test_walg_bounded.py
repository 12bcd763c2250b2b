"""Bounded extraction for WAL-G backups (issue 19): the sentinel's ``UncompressedSize`` bounds a restore.

WAL-G's ``UncompressedSize`` is the sum of the tar header sizes of every file it packed into the
backup's tars (read from WAL-G's source, see ``restore._diskcheck._walg_chain_size`` and
``tests/walg_writer.py``), so the disk pre-flight's figure is a cap for extraction, as the
basebackup manifest's is.  The layouts are real ``pg_basebackup`` output re-laid out as WAL-G does,
on a local directory (``file://``):

* a decompression bomb: ``part_001.tar.zst`` replaced by one holding the real members and then
  256 of the backup's own relation files again, 8 MiB of zeros each (2 GiB); the restore fails
  naming the object and the member at the reservation, and the run dir stays under it;
* its twin: the same object rebuilt intact restores REACHED;
* a delta chain's reservation holds its parents' tars too (the sizes summed along the chain), and
  a chain with a ``copy_N`` tar (copied whole, counted by no sentinel) gets no cap.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import tarfile
from pathlib import Path

import pytest
import zstandard
from bomb_support import MiB, Zeros

from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.restore._diskcheck import Need, _object_keys, backup_size, reservation
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

BOMB_MEMBERS, BOMB_EACH = 256, 8 * MiB


@pytest.fixture(scope="module")
def walg_src(workroot):
    from walg_writer import build_source

    src = build_source(workroot / f"walg-bounded-src-{os.getpid()}")
    made: list[Path] = []

    def layout(name: str, **kw):
        out = workroot / "walg-bounded" / f"{name}-{os.getpid()}"
        shutil.rmtree(out, ignore_errors=True)
        _, pushed = src.layout(out, **kw)
        made.append(out)
        return out, pushed

    yield src, layout
    for out in made:
        shutil.rmtree(out, ignore_errors=True)
    shutil.rmtree(workroot / f"walg-bounded-src-{os.getpid()}", ignore_errors=True)


def _part(out: Path, name: str) -> Path:
    return next((out / "basebackups_005" / name / "tar_partitions").glob("part_001.tar*"))


def _rewrite_part(out: Path, name: str, *, bomb: bool) -> tuple[Path, int]:
    """``part_001.tar.zst`` rebuilt: its members as they were, then (``bomb``) 256 of its own
    relation files again at 8 MiB of zeros each.  Returns the object and its members' sizes."""
    part = _part(out, name)
    real = zstandard.ZstdDecompressor().stream_reader(part.read_bytes(), read_across_frames=True).read()
    declared = 0
    buf = io.BytesIO()
    with zstandard.ZstdCompressor(level=3).stream_writer(buf, closefd=False) as comp, \
            tarfile.open(fileobj=comp, mode="w|", format=tarfile.PAX_FORMAT) as out_tar, \
            tarfile.open(fileobj=io.BytesIO(real)) as src:
        members = src.getmembers()
        for m in members:
            out_tar.addfile(m, src.extractfile(m) if m.isreg() else None)
            declared += m.size if m.isreg() else 0
        if bomb:
            relations = [m for m in members if m.isreg() and re.fullmatch(r"/?base/\d+/\d+", m.name)]
            assert len(relations) >= BOMB_MEMBERS
            for m in relations[:BOMB_MEMBERS]:
                info = tarfile.TarInfo(m.name)
                info.size, info.mode = BOMB_EACH, 0o600
                out_tar.addfile(info, Zeros(BOMB_EACH))
    part.write_bytes(buf.getvalue())
    return part, declared


def _du(path: Path) -> int:
    return sum(f.lstat().st_blocks * 512 for f in path.rglob("*") if f.is_file() and not f.is_symlink())


def _mib(message: str, pattern: str) -> int:
    m = re.search(pattern, message)
    assert m, message
    return int((float(m.group(1)) + 0.1) * MiB)


def _sentinel(out: Path, name: str) -> dict:
    return json.loads((out / "basebackups_005" / f"{name}_backup_stop_sentinel.json").read_text())


def test_a_walg_decompression_bomb_fails_at_the_sentinels_size(walg_src, settings_factory, workroot):
    _, layout = walg_src
    out, pushed = layout("bomb", backups=(2,), method="zstd")
    name = pushed[-1].name
    part, declared = _rewrite_part(out, name, bomb=True)
    assert part.stat().st_size < 16 * MiB  # a few MiB of real data and 2 GiB of zeros
    sentinel = _sentinel(out, name)
    assert declared < sentinel["UncompressedSize"] < declared + 64 * 1024  # + pg_control, backup_label
    runs = workroot / "runs"
    before = {p.name for p in runs.iterdir()} if runs.exists() else set()
    with pytest.raises(CorruptBackup) as err:
        with Restorer(settings_factory(f"file://{out}", "immediate", keep="on-failure")).restore():
            pass
    message = str(err.value)
    assert message.startswith(f"basebackups_005/{name}/tar_partitions/{part.name}: member '/base/"), message
    assert "the disk pre-flight reserved for the backup's files" in message
    assert "UncompressedSize in the sentinel" in message  # where the cap comes from
    assert "Traceback" not in message and "No space left" not in message
    kept = [p for p in runs.iterdir() if p.name not in before]
    try:
        assert len(kept) == 1, kept
        reserved = _mib(message, r"pass the ([\d.]+) MiB")
        assert reserved < 2 * sentinel["UncompressedSize"] + 64 * MiB  # the sentinel's figure, not the disk's
        assert _du(kept[0] / "pgdata") <= reserved
        assert _du(kept[0]) < 200 * MiB  # far from the 2 GiB the object expands to
    finally:
        for p in kept:
            shutil.rmtree(p, ignore_errors=True)


def test_twin_the_same_walg_part_rebuilt_intact_restores(walg_src, settings_factory):
    src, layout = walg_src
    out, pushed = layout("bomb-twin", backups=(2,), method="zstd")
    _rewrite_part(out, pushed[-1].name, bomb=False)
    with Restorer(settings_factory(f"file://{out}")).restore() as inst:
        assert inst.result.outcome == "REACHED"
        with inst.connect() as conn:
            assert conn.execute("select count(*) from t").fetchone()[0] == src.total_rows


def test_a_delta_chains_reservation_holds_its_parents_tars_and_restores(walg_src, settings_factory):
    src, layout = walg_src
    out, pushed = layout("delta", deltas=True, method="lz4")
    settings = settings_factory(f"file://{out}")
    catalog = Restorer(settings).catalog()
    backup = catalog.backup(pushed[-1].name)
    assert backup is not None
    size, how = backup_size(None, catalog, backup)
    assert size == sum(_sentinel(out, p.name)["UncompressedSize"] for p in pushed)
    assert how == "UncompressedSize in the sentinels of its 3-backup delta chain"
    assert reservation(Need(size, how, 0, "")) is not None
    keys = _object_keys(catalog, backup)
    assert keys is not None and all(str(_part(out, p.name).relative_to(out)) in keys for p in pushed)
    # a delta's increments are smaller than the files they patch: its own sentinel undercounts them
    assert _sentinel(out, pushed[-1].name)["UncompressedSize"] < _sentinel(out, pushed[0].name)["UncompressedSize"]
    with Restorer(settings).restore() as inst:  # the whole chain extracts inside the reservation
        assert inst.result.outcome == "REACHED"
        with inst.connect() as conn:
            assert conn.execute("select count(*) from t").fetchone()[0] == src.total_rows


def test_copy_composer_tars_leave_the_backup_without_a_cap(walg_src, settings_factory):
    _, layout = walg_src
    out, pushed = layout("copy", backups=(2,), method="lz4", copy_names=True)
    assert _sentinel(out, pushed[-1].name)["UncompressedSize"] < 64 * 1024  # pg_control, backup_label only
    catalog = Restorer(settings_factory(f"file://{out}")).catalog()
    backup = catalog.backup(pushed[-1].name)
    assert backup is not None
    size, how = backup_size(None, catalog, backup)
    assert how.startswith("no upper bound:") and "copy_N" in how
    assert reservation(Need(size, how, 0, "")) is None
