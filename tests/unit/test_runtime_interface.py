"""Issue 17, one runtime interface: the restore stage talks to ``runtimes.base.Runtime`` and
never to a runtime of a given kind; every runtime implements the whole interface."""

from __future__ import annotations

import ast
import inspect
from pathlib import Path

from pytest_pgrestore.runtimes._base import Binaries, Runtime, Server
from pytest_pgrestore.runtimes._binaries import PgBinaries
from pytest_pgrestore.runtimes._docker import DockerRuntime
from pytest_pgrestore.runtimes._docker_image import Image, ImageTools
from pytest_pgrestore.runtimes._docker_server import DockerServer
from pytest_pgrestore.runtimes._local import LocalRuntime, LocalServer

RESTORE = Path(__file__).resolve().parents[2] / "pytest_pgrestore" / "restore"
RUNTIMES = (LocalRuntime, DockerRuntime)


def _docker_references(path: Path) -> list[str]:
    """Module names, imported names, attributes and variables that name docker, with their line."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names: list[str] = []
        if isinstance(node, ast.ImportFrom):
            names = [node.module or "", *(a.name for a in node.names), *(a.asname or "" for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [n for a in node.names for n in (a.name, a.asname or "")]
        elif isinstance(node, ast.Attribute):
            names = [node.attr]
        elif isinstance(node, ast.Name):
            names = [node.id]
        elif isinstance(node, ast.arg):
            names = [node.arg]
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names = [node.name]
        found += [f"{path.name}:{node.lineno}: {n}" for n in names if "docker" in n.lower()]
    return found


def test_the_restore_stage_does_not_know_docker():
    files = sorted(RESTORE.glob("*.py"))
    assert any(p.name == "_attempt.py" for p in files), "premise: the restore stage was read"
    assert [ref for path in files for ref in _docker_references(path)] == []


def test_the_finder_sees_a_docker_reference(tmp_path):
    """Its twin: each way the attempt used to name docker is found."""
    src = tmp_path / "attempt.py"
    src.write_text("from ..runtimes.docker import DockerRuntime\nimport docker.errors\n"
                   "def f(self, docker=None):\n    if self.docker is not None:\n        return self.docker.port\n")
    refs = _docker_references(src)
    assert "attempt.py:1: runtimes.docker" in refs  # ast keeps the relative module without its dots
    assert "attempt.py:1: DockerRuntime" in refs
    assert any(r.endswith(": docker.errors") for r in refs)
    assert any(r.endswith(": docker") and ":3:" in r for r in refs)  # the argument
    assert sum(r.endswith(": docker") and ":4:" in r for r in refs) == 1
    assert _docker_references(_write(tmp_path, "x = self.runtime.port\n")) == []


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "clean.py"
    path.write_text(text)
    return path


def _interface(cls) -> dict[str, object]:
    """The public methods and properties a class declares (its own and inherited ones)."""
    return {name: member for name, member in inspect.getmembers(cls)
            if not name.startswith("_") and (callable(member) or isinstance(member, property))}


def test_every_runtime_implements_the_whole_interface():
    required = _interface(Runtime)
    assert {"binaries", "owner", "attach", "listen_port", "wal_heartbeat", "start", "describe", "instance",
            "close"} <= set(required), "premise: the interface was read"
    for cls in RUNTIMES:
        assert issubclass(cls, Runtime) and not inspect.isabstract(cls), cls
        assert isinstance(cls.name, str) and cls.name, cls
        mine = _interface(cls)
        for name, member in required.items():
            assert name in mine, (cls, name)
            if callable(member):  # every keyword the attempt passes is accepted
                expected = inspect.signature(member).parameters
                got = inspect.signature(mine[name]).parameters
                assert all(p in got for p in expected), (cls, name, list(expected), list(got))
    assert {cls.name for cls in RUNTIMES} == {"local", "docker"}


def test_every_server_implements_the_server_protocol():
    members = [n for n in dir(Server) if not n.startswith("_")] + list(Server.__annotations__)
    assert {"host", "port", "socket_dir", "poll", "stop", "offline", "run_tool"} <= set(members)
    for cls in (LocalServer, DockerServer):
        fields = set(getattr(cls, "__dataclass_fields__", {})) | set(dir(cls))
        missing = [n for n in members if n not in fields]
        assert missing == [], (cls, missing)
        for name in ("poll", "stop", "offline", "run_tool"):
            expected = inspect.signature(getattr(Server, name)).parameters
            got = inspect.signature(getattr(cls, name)).parameters
            assert all(p in got for p in expected), (cls, name)


def test_the_attempt_calls_the_runtime_and_chooses_through_the_runtimes_package():
    tree = ast.parse((RESTORE / "_attempt.py").read_text())
    imported = {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
    assert {"runtimes", "runtimes._base"} <= imported
    assert not any(m and m.startswith("runtimes.") and m != "runtimes._base" for m in imported), imported
    calls = {node.func.attr for node in ast.walk(tree) if isinstance(node, ast.Call)
             and isinstance(node.func, ast.Attribute) and isinstance(node.func.value, ast.Attribute)
             and node.func.value.attr == "runtime"}
    assert {"binaries", "attach", "listen_port", "wal_heartbeat", "start", "describe", "instance",
            "close"} <= calls


def test_every_runtimes_binaries_implement_the_binaries_protocol():
    """The restore stage runs pg_controldata and pg_verifybackup through them, never asking where."""
    members = [n for n in dir(Binaries) if not n.startswith("_")]
    assert {"bindir", "version", "major", "origin", "tool", "has", "run"} <= set(members)
    image = Image("postgres:15", "sha256:" + "0" * 64, (999, 999), "/usr/bin:/bin", 15)
    for cls, made in ((PgBinaries, PgBinaries(Path("/nowhere/bin"), "15.1", 15, "test")),
                      (ImageTools, ImageTools(None, image, 15))):
        missing = [n for n in members if n not in set(dir(cls)) | set(vars(made))]  # no property is run
        assert missing == [], (cls, missing)
        for name in ("tool", "has", "run"):
            expected = inspect.signature(getattr(Binaries, name)).parameters
            assert all(p in inspect.signature(getattr(cls, name)).parameters for p in expected), (cls, name)


def test_the_restore_stage_does_not_probe_what_its_binaries_can_do():
    """No getattr(binaries, ...): the Binaries protocol says what every runtime's binaries do."""
    tree = ast.parse((RESTORE / "_recover.py").read_text())
    probes = [node.lineno for node in ast.walk(tree) if isinstance(node, ast.Call)
              and isinstance(node.func, ast.Name) and node.func.id in ("getattr", "hasattr")
              and isinstance(node.args[0], ast.Name) and node.args[0].id == "binaries"]
    assert probes == []


def test_the_restore_stage_does_not_probe_what_its_server_can_do():
    """No getattr(server, ...) in the restore stage: watching recovery and syncing the log are
    the Server protocol's (recovery_prober, sync_log), for every runtime alike."""
    probes = []
    for path in RESTORE.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                    and node.func.id in ("getattr", "hasattr") and node.args
                    and "server" in ast.unparse(node.args[0])):
                probes.append(f"{path.name}:{node.lineno}")
    assert probes == []
    for cls in (LocalServer, DockerServer):
        assert callable(cls.recovery_prober) and callable(cls.sync_log)
