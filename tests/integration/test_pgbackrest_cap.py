"""A real pgBackRest repository file decoded with its manifest size as a cap (issue 19).

One real ``pgbackrest backup`` (posix repo, zst) of a real server with a 4 MiB table.  The table's
repository file, decoded by ``formats._pgbackrest_io.open_codec`` with its ``size`` from
``backup.manifest`` as ``limit``, comes back whole; the same file replaced (same name) by one that
decodes to 64 MiB more fails at the cap, naming the file and the key, with no byte past the cap
handed on — pgBackRest's SHA-1 would catch it too, but only after the whole file was written.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import pytest
import zstandard
from tool_support import PgBackRest, pgbackrest_source

from pytest_pgrestore.errors import CorruptBackup
from pytest_pgrestore.formats._pgbackrest_io import open_codec

pytestmark = [pytest.mark.integration,
              pytest.mark.skipif(shutil.which("pgbackrest") is None, reason="apt-get install pgbackrest")]

MiB = 1 << 20


@pytest.fixture(scope="module")
def repo_file(workroot):
    """(repository file, the manifest's entry for it, label) of the 4 MiB table's relation file."""
    repo = workroot / "pgbr-cap-repo"
    tool = PgBackRest.posix(workroot / "pgbr-cap-tool", repo, compress_type="zst")
    with pgbackrest_source(workroot / "pgbr-cap-src", tool) as src:
        with src.connect() as conn:
            conn.execute("CREATE TABLE cap AS SELECT g, md5(g::text) AS h FROM generate_series(1, 60000) g")
            conn.execute("CHECKPOINT")
            rel = conn.execute("SELECT pg_relation_filepath('cap')").fetchone()[0]
        label = tool.backup("full")
    folder = repo / "backup" / tool.stanza / label
    entry = None
    for line in (folder / "backup.manifest").read_text().splitlines():
        if line.startswith(f"pg_data/{rel}="):
            entry = json.loads(line.split("=", 1)[1])
    assert entry is not None and entry["size"] > 2 * MiB, entry
    stored = folder / f"pg_data/{rel}.zst"
    assert stored.exists()
    yield stored, entry, f"pg_data/{rel} (stored in {stored.relative_to(repo)})"
    shutil.rmtree(repo, ignore_errors=True)


@pytest.fixture(scope="module")
def big_repo(workroot):
    """(repo, stanza, the repository file of a table past the one-piece size, its manifest entry)."""
    repo = workroot / "pgbr-cap-big-repo"
    tool = PgBackRest.posix(workroot / "pgbr-cap-big-tool", repo, compress_type="zst")
    with pgbackrest_source(workroot / "pgbr-cap-big-src", tool) as src:
        with src.connect() as conn:
            conn.execute("CREATE TABLE big AS SELECT g, md5(g::text) AS h FROM generate_series(1, 150000) g")
            conn.execute("CHECKPOINT")
            rel = conn.execute("SELECT pg_relation_filepath('big')").fetchone()[0]
        label = tool.backup("full")
    folder = repo / "backup" / tool.stanza / label
    entry = next(json.loads(line.split("=", 1)[1]) for line in (folder / "backup.manifest").read_text().splitlines()
                 if line.startswith(f"pg_data/{rel}="))
    assert entry["size"] > 4 * MiB, "premise: decoded as a stream, not in one piece"
    yield repo, tool.stanza, folder / f"pg_data/{rel}.zst", entry
    shutil.rmtree(repo, ignore_errors=True)


def test_a_restore_stops_writing_an_oversized_repository_file_at_its_manifest_size(big_repo, workroot,
                                                                                  settings_factory):
    """End to end: the restore of a repository whose file decodes to 64 MiB past its manifest size
    fails as a named corrupt backup, at the cap — not after writing the whole file."""
    from pytest_pgrestore.restore._restorer import Restorer

    repo, stanza, stored, entry = big_repo
    copy = workroot / "pgbr-cap-bomb"
    shutil.copytree(repo, copy)
    bomb = copy / stored.relative_to(repo)
    bomb.write_bytes(zstandard.ZstdCompressor().compress(bytes(entry["size"] + 64 * MiB)))
    try:
        with pytest.raises(CorruptBackup) as err:
            with Restorer(settings_factory(f"file://{copy}?stanza={stanza}", "immediate")).restore():
                pass
        assert f"decodes to more than its size in backup.manifest ({entry['size']} bytes)" in str(err.value)
        assert "stopped at that cap" in str(err.value)
    finally:
        shutil.rmtree(copy, ignore_errors=True)


def test_twin_the_intact_repository_restores(big_repo, settings_factory):
    from pytest_pgrestore.restore._restorer import Restorer

    repo, stanza, _stored, _entry = big_repo
    with Restorer(settings_factory(f"file://{repo}?stanza={stanza}", "immediate")).restore() as inst:
        with inst.connect() as conn:
            assert conn.execute("select count(*) from big").fetchone()[0] == 150000


def _decode_into(path: Path, limit: int, label: str, out: Path) -> str:
    digest = hashlib.sha1()
    with path.open("rb") as raw, open_codec(raw, "zst", label=label, limit=limit) as stream, out.open("wb") as dst:
        while chunk := stream.read(1 << 20):
            digest.update(chunk)
            dst.write(chunk)
    return digest.hexdigest()


def test_a_repository_file_decoding_past_its_manifest_size_stops_at_the_cap(repo_file, tmp_path):
    stored, entry, label = repo_file
    bomb = tmp_path / stored.name  # same name, 64 MiB past the manifest's size
    bomb.write_bytes(zstandard.ZstdCompressor().compress(bytes(entry["size"] + 64 * MiB)))
    out = tmp_path / "restored"
    with pytest.raises(CorruptBackup) as err:
        _decode_into(bomb, entry["size"], label, out)
    message = str(err.value)
    assert message.startswith(f"{label} decodes to more than its size in backup.manifest ({entry['size']} bytes)")
    assert "stopped at that cap" in message
    assert out.stat().st_size <= entry["size"]  # written up to the cap, never past it


def test_twin_the_real_repository_file_decodes_to_its_size_and_checksum(repo_file, tmp_path):
    stored, entry, label = repo_file
    out = tmp_path / "restored"
    assert _decode_into(stored, entry["size"], label, out) == entry["checksum"]
    assert out.stat().st_size == entry["size"]
