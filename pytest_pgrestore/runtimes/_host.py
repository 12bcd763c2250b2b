"""This machine's identity, shared by the sweeps of run dirs and of containers: the boot id, and a
process's start time (a pid alone may have been reused by another process)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["boot_id", "process_start"]


def boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def process_start(pid: int) -> str | None:
    """The process's start time in clock ticks since boot (field 22 of /proc/<pid>/stat)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]
