"""Plain helpers for the integration tests (fixtures live in conftest.py)."""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

from pytest_pgrestore.demo._source import SourceCluster


@dataclass
class Scenario:
    repo: Path  # file:// copy of the archive
    major: int
    commits: dict[str, list] = field(default_factory=dict)
    backups: dict[str, object] = field(default_factory=dict)
    s3_url: str | None = None
    s3_env: dict[str, str] = field(default_factory=dict)
    timeline_rows: int | None = None

    @property
    def file_url(self) -> str:
        return f"file://{self.repo}"

    def rows_at(self, name: str, index: int) -> int:
        """Row count once commit ``commits[name][index]`` is replayed."""
        total = 0
        for key in ("c0", "c1", "c2"):
            if key == name:
                return total + index + 1
            total += len(self.commits[key])
        raise KeyError(name)

    @property
    def total_rows(self) -> int:
        return sum(len(v) for v in self.commits.values())


def build_scenario(root: Path, *, major: int = 15, wal_segsize_mb: int | None = None) -> Scenario:
    root.mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)
    sc = Scenario(repo=root / "repo", major=major)
    with SourceCluster(root / "src", repo=sc.repo, major=major, wal_segsize_mb=wal_segsize_mb) as src:
        sc.commits["c0"] = src.commit_rows(2)
        sc.backups["b1"] = src.backup()
        sc.commits["c1"] = src.commit_rows(2)
        src.restore_point("rp_between")
        sc.backups["b2"] = src.backup()
        sc.commits["c2"] = src.commit_rows(3)
        src.switch_wal()
    return sc


def copy_repo(sc: Scenario, dest: Path) -> Path:
    """A private copy of a scenario's archive, to inject one defect into."""
    shutil.copytree(sc.repo, dest)
    return dest


def run_dirs(workroot: Path) -> list[str]:
    runs = workroot / "runs"
    from pytest_pgrestore.restore._rundir import list_run_dirs

    return [str(p.relative_to(runs)) for p in list_run_dirs(runs)]


def our_postgres_processes(workroot: Path) -> list[str]:
    """postmaster processes whose data directory lies under this test run's root."""
    found = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if cmd and cmd[0].endswith(b"postgres") and any(str(workroot / "runs").encode() in c for c in cmd):
            found.append(pid)
    return found


def postmaster_of(run_dir: Path, pgdata: Path | None = None) -> int | None:
    """The postmaster of a local run dir: found from its supervisor down through /proc."""
    from pytest_pgrestore.runtimes._local import find_postmaster

    try:
        supervisor = int((run_dir / "supervisor.pid").read_text())
        server_uid = os.stat(pgdata or run_dir / "pgdata").st_uid
    except (OSError, ValueError):
        return None
    return find_postmaster(supervisor, server_uid)


def wait_for(predicate, timeout: float) -> bool:
    """Poll ``predicate`` every 50 ms until it is true or ``timeout`` seconds pass."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return bool(predicate())
