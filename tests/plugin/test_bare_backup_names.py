"""Backup folders with names people choose, restored by their bare name (issue 16).

A pg_basebackup layout whose folders are named ``20261207T204321Z`` (ISO 8601 basic with Z),
``nightly-2026-12-07`` or ``2026-12-07_0300``: the grammar knows none of these, so each is a
tentative backup target, resolved once the source is listed.  Each success runs against a copy of
the session's real backup whose older backup folder (b1) carries that name; its twin runs the
same targets against the untouched copy, where no backup has the name, and must fail with the
target refusal of before (exit 4, the corrected spelling, no traceback), refused before any
download.  Through the plugin (an inner pytest run) and through ``pgrestore plan`` / ``restore``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from plugin_support import copy_repo, leftovers

NAMES = ("20261207T204321Z", "nightly-2026-12-07", "2026-12-07_0300")
# What each name is refused as when no backup has it: the problem, then the hint
REFUSALS = {
    "20261207T204321Z": (
        "it is not in RFC 3339 form (YYYY-MM-DDTHH:MM:SS[.frac] then Z or ±hh:mm)",
        "fix: write 2026-12-07T20:43:21Z",
    ),
    "nightly-2026-12-07": (
        "it is not a keyword, a known backup name pattern, a time or a prefixed target",
        "fix: for a backup with another name write backup:NAME",
    ),
    "2026-12-07_0300": (
        "it is not a keyword, a known backup name pattern, a time or a prefixed target",
        "fix: for a backup with another name write backup:NAME",
    ),
}

DRILL = """
import pytest

pytestmark = pytest.mark.restore_target({name!r}, source={source!r})

def test_the_named_backup_is_restored(restored_db, restore_result):
    assert (restore_result.outcome, restore_result.backup) == ("REACHED", {name!r})
    assert restored_db.execute("select count(*) from t").fetchone()[0] == {rows}
"""

FACTORY = """
def test_a_factory_restore_by_bare_name(restore_factory):
    inst = restore_factory({name!r}, source={source!r})  # shares the restore of test_named_1
    assert (inst.result.outcome, inst.result.backup) == ("REACHED", {name!r})
"""

PGRESTORE = [sys.executable, "-m", "pytest_pgrestore.cli"]


@pytest.fixture(scope="module")
def renamed(plugin_root, scenario) -> dict[str, Path]:
    """name → a copy of the scenario's archive whose older backup folder (b1) is called ``name``."""
    root = Path(tempfile.mkdtemp(prefix="named-", dir=plugin_root))
    root.chmod(0o755)
    repos = {}
    for i, name in enumerate(NAMES):
        repo = copy_repo(scenario, root / f"repo{i}")
        folders = repo / "basebackups"
        (folders / scenario.backups["b1"].name).rename(folders / name)
        assert sorted(p.name for p in folders.iterdir()) == sorted([name, scenario.backups["b2"].name])
        repos[name] = repo
    yield repos
    shutil.rmtree(root, ignore_errors=True)


def rows_in_b1(scenario) -> int:
    return scenario.rows_at("c0", len(scenario.commits["c0"]) - 1)


def inner_run(
    pytester, workroot, monkeypatch, sources: dict[str, str], rows: int, *args: str
) -> pytest.RunResult:
    monkeypatch.setenv("COLUMNS", "400")  # short summary lines whole
    for i, name in enumerate(NAMES):
        pytester.makepyfile(**{f"test_named_{i}": DRILL.format(name=name, source=sources[name], rows=rows)})
    pytester.makepyfile(test_with_factory=FACTORY.format(name=NAMES[1], source=sources[NAMES[1]]))
    return pytester.runpytest_subprocess(
        "-p", "no:cacheprovider", f"--restore-workdir={workroot / 'runs'}", "-rA", *args, timeout=300
    )


def test_bare_user_chosen_names_restore_the_backup_of_that_name(
    pytester, scenario, renamed, workroot, monkeypatch
):
    rows = rows_in_b1(scenario)
    assert rows < scenario.total_rows  # b1 is not the newest backup: latest or immediate would differ
    result = inner_run(pytester, workroot, monkeypatch, {n: f"file://{renamed[n]}" for n in NAMES}, rows)
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.OK, output
    result.assert_outcomes(passed=2 * len(NAMES) + 1)
    assert "PASSED test_with_factory.py::test_a_factory_restore_by_bare_name" in result.outlines, output
    for i, name in enumerate(NAMES):
        assert f"PASSED test_named_{i}.py::restore[{name}]" in result.outlines, output
        assert f"PASSED test_named_{i}.py::test_the_named_backup_is_restored" in result.outlines, output
        assert any(line.startswith(f"restore[{name}] REACHED: backup {name},") for line in result.outlines)
    assert "invalid restore target" not in output
    assert leftovers(workroot) == ([], [])


@pytest.mark.parametrize("xdist", [(), ("-n", "2")], ids=["one-process", "xdist"])
def test_twin_names_no_backup_has_are_the_target_refusal_of_before_exit_4(
    pytester, scenario, workroot, monkeypatch, xdist
):
    # the same targets and drills; the defect: no backup folder of the source carries those names
    sources = {name: scenario.file_url for name in NAMES}
    result = inner_run(pytester, workroot, monkeypatch, sources, rows_in_b1(scenario), *xdist)
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    result.assert_outcomes(failed=len(NAMES) + 1, errors=len(NAMES))
    b1, b2 = scenario.backups["b1"].name, scenario.backups["b2"].name
    for i, name in enumerate(NAMES):
        problem, hint = REFUSALS[name]
        label = f"restore[{name}]"
        refused = f"invalid restore target {name!r} (from marker restore_target target=): {problem}"
        assert f"FAILED test_named_{i}.py::{label} - {refused}" in result.outlines, output
        assert any(
            line.startswith(f"ERROR test_named_{i}.py::test_the_named_backup_is_restored - Failed: {label} "
                            f"failed: {refused}") for line in result.outlines
        ), output
    factory = "FAILED test_with_factory.py::test_a_factory_restore_by_bare_name - pytest.UsageError: "
    shared = f"invalid restore target {NAMES[1]!r} (from marker restore_target target=)"  # remembered
    assert any(line.startswith(factory + shared) for line in result.outlines), output
    listed = f"nor is it the name of a backup in {scenario.file_url} (2 backups: {b1}, {b2})"
    assert output.count(listed) == len(NAMES) + 1  # once per restore item, once for the factory's test
    for _, hint in REFUSALS.values():
        assert f"  {hint}" in output
    assert "pgrestore: restore[" in output and "the exit status is 4 (usage error)" in output
    assert "Traceback" not in output
    assert leftovers(workroot) == ([], [])  # refused from the listing: nothing was restored
    assert not (workroot / "runs").exists() or not any((workroot / "runs").rglob("pgdata"))


def test_twin_a_factory_restore_of_a_name_no_backup_has_exits_4(pytester, scenario, workroot, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    pytester.makepyfile(test_with_factory=FACTORY.format(name=NAMES[0], source=scenario.file_url))
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider", f"--restore-workdir={workroot / 'runs'}")
    output = "\n".join(result.outlines + result.errlines)
    assert result.ret == pytest.ExitCode.USAGE_ERROR, output
    result.assert_outcomes(failed=1)
    problem, hint = REFUSALS[NAMES[0]]
    assert f"invalid restore target {NAMES[0]!r} (from keyword restore_factory target=): {problem}" in output
    assert hint in output and "pgrestore: test_a_factory_restore_by_bare_name failed on a value" in output
    assert leftovers(workroot) == ([], [])


# -- pgrestore plan / restore -------------------------------------------------------------------
def pgrestore(*args: str, workdir: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "PGRESTORE_", "WALG_"))}
    env["PGRESTORE_WORKDIR"] = str(workdir)
    return subprocess.run([*PGRESTORE, *args], capture_output=True, text=True, env=env, timeout=180)


@pytest.mark.parametrize("name", NAMES)
def test_cli_plans_a_bare_name_as_that_backup(name, renamed, workroot):
    out = pgrestore("plan", f"file://{renamed[name]}", "--target", name, "--json", workdir=workroot / "runs")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["target"], data["backup"]) == (name, name)
    assert data["recovery"]["recovery_target"] == "immediate"


@pytest.mark.parametrize("command", ["plan", "restore"])
@pytest.mark.parametrize("name", NAMES)
def test_twin_cli_a_bare_name_no_backup_has_exits_4(name, command, scenario, workroot):
    pgdata = workroot / "pgdata"
    extra = ["--pgdata", str(pgdata)] if command == "restore" else []
    out = pgrestore(command, scenario.file_url, "--target", name, *extra, workdir=workroot / "runs")
    assert out.returncode == 4, out.stdout + out.stderr
    problem, hint = REFUSALS[name]
    # the CLI names its --target by the plugin's option, as for every other target refusal
    refused = f"invalid restore target {name!r} (from --restore-target): {problem}\n"
    assert out.stderr.startswith(f"pgrestore: usage error: {refused}"), out.stderr
    assert f"\n  {hint}\n" in out.stderr and "Traceback" not in out.stderr
    assert not pgdata.exists() and leftovers(workroot) == ([], [])


def test_cli_restores_a_bare_name(renamed, workroot):
    name = NAMES[0]
    pgdata = workroot / "pgdata"
    out = pgrestore("restore", f"file://{renamed[name]}", "--target", name, "--pgdata", str(pgdata), "--json",
                    workdir=workroot / "runs")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert (data["outcome"], data["backup"], data["target"]) == ("REACHED", name, name)
    assert (pgdata / "PG_VERSION").exists() and leftovers(workroot) == ([], [])
