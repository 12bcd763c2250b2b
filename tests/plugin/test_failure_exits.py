"""Failure cases through pytest itself: each restore item fails with its own message, no
traceback, and the run exits 1 (usage errors exit 4: test_options.py).

One inner run holds a module per case: a hostile tar, a truncated object, a workdir too small
for the restore, a restore point that is in no WAL.  (WAL gaps, targets past the archive and
targets after the last commit: test_drill_runs.py.)
"""

from __future__ import annotations

import io
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from plugin_support import copy_repo, leftovers

DRILL = """
import pytest

pytestmark = pytest.mark.restore_target({target!r}, source={source!r}{extra})

def test_drill(restored_db):
    pass
"""


def _base_tar(repo: Path, scenario) -> Path:
    return repo / "basebackups" / scenario.backups["b2"].name / "base.tar"


def hostile(scenario, root: Path) -> str:
    repo = copy_repo(scenario, root / "hostile")
    base = _base_tar(repo, scenario)
    original = base.read_bytes()
    with tarfile.open(base, "w", format=tarfile.GNU_FORMAT) as out:
        info = tarfile.TarInfo("../../escaped")
        info.size = 3
        out.addfile(info, io.BytesIO(b"bad"))
        with tarfile.open(fileobj=io.BytesIO(original)) as src:
            for m in src.getmembers():
                out.addfile(m, src.extractfile(m) if m.isfile() else None)
    return f"file://{repo}"


def truncated(scenario, root: Path) -> str:
    repo = copy_repo(scenario, root / "truncated")
    base = _base_tar(repo, scenario)
    with open(base, "r+b") as f:
        f.truncate(base.stat().st_size // 2)
    return f"file://{repo}"


@pytest.fixture
def small_tmpfs(workroot):
    path = workroot / "tmpfs-20m"
    path.mkdir(mode=0o755)
    proc = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=20m,mode=0755", "tmpfs", str(path)],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
    yield path
    subprocess.run(["umount", "-l", str(path)], check=False)


def test_each_failure_fails_its_restore_item_with_its_message_and_exit_1(
    pytester, scenario, workroot, small_tmpfs, monkeypatch
):
    monkeypatch.setenv("COLUMNS", "400")
    cases = {
        "test_hostile": (
            dict(target="latest", source=hostile(scenario, workroot)),
            "member '../../escaped' points outside the restore directory",
        ),
        "test_truncated": (
            dict(target="latest", source=truncated(scenario, workroot)),
            re.compile(
                r"base\.tar: (not a valid tar archive|the tar archive ends)"
            ),  # by where the cut falls
        ),
        "test_no_room": (
            dict(target="latest", source=scenario.file_url, extra=f", workdir={str(small_tmpfs)!r}"),
            f"not enough free disk space for the restore: {small_tmpfs} has 20.0 MiB free",
        ),
        "test_no_such_point": (
            dict(target="name:no_such_point", source=scenario.file_url),
            "ended ENDED_EARLY: PostgreSQL: recovery ended before configured recovery target "
            "was reached: restore point 'no_such_point' was not found",
        ),
    }
    for module, (fields, _) in cases.items():
        pytester.makepyfile(
            **{module: DRILL.format(extra="", **fields) if "extra" not in fields else DRILL.format(**fields)}
        )
    result = pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--restore-workdir={workroot / 'runs'}", "-rA", timeout=300,
    )  # fmt: skip
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.TESTS_FAILED, output
    result.assert_outcomes(failed=len(cases), errors=len(cases))
    for module, (fields, message) in cases.items():
        label = f"restore[{fields['target']}]"
        failed = [line for line in result.outlines if line.startswith(f"FAILED {module}.py::{label} - ")]
        found = message.search(failed[0]) if isinstance(message, re.Pattern) else message in failed[0]
        assert len(failed) == 1 and found, (module, failed, output)
        assert any(
            line.startswith(f"ERROR {module}.py::test_drill - Failed: {label} failed")
            for line in result.outlines
        ), output
    assert "Traceback" not in output
    assert not (workroot.parent / "escaped").exists() and not Path("/escaped").exists()
    assert leftovers(workroot) == ([], [])
    assert os.listdir(small_tmpfs) == []  # refused before anything was created there
