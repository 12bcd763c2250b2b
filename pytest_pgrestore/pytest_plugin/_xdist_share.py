"""Once per run under pytest-xdist: each restore is made by one worker and shared by all.

The controller makes a private directory (``<workdir>/xdist-<pid>-<token>``, mode 0700) and
hands it and its own pid to every worker (``workerinput``).  A worker that needs a restore
takes that restore's file lock there (the FileLock pattern of pytest-xdist's docs):

* the first one restores — the run dir and the server's supervisor belong to the *controller*
  (:func:`~pytest_pgrestore.restore._owner.owned_by`), so they outlive the worker — then writes down how
  to reach the server, the evidence, or the failure;
* every other worker waits for the lock and attaches to that server (or fails with the same
  error, without restoring again).

Workers never stop a shared server: the controller stops each one and removes its run dir at
session finish (``--restore-keep=always`` leaves it running, as without xdist).  A worker killed
half-way leaves a run dir the controller owns; that is removed at session finish too, and the
supervisors clean up by themselves should the controller be killed.

Every restore a worker performs is logged in ``<digest>.restores``: the evidence record's
``sharing.restores`` is that count, so a restore made twice would show.  Writing drills keep
their per-test clones (``restored_db_writable``): the template is made once, under the lock.

Only the local runtime is shared; with ``--restore-runtime docker|auto`` each worker restores
for itself.
"""

from __future__ import annotations

import json
import logging
import os
import pickle
import secrets
import shutil
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from ..restore._instance import RestoredInstance
from ..restore._manager import RestoreKey, RestoreManager, key_for
from ..restore._result import RestoreResult
from ..settings._options import Settings

log = logging.getLogger(__name__)

__all__ = ["SharedRestores", "SharedServer", "register", "sharing_for", "stop_run"]

SHARE_KEY = "pgrestore_share_dir"
PID_KEY = "pgrestore_controller_pid"
_STASH = pytest.StashKey["_Controller"]()


@dataclass
class SharedServer:
    """Stands in for the runtime's server on every worker: a shared server is never stopped or
    restarted by a worker (a check that needs it offline is skipped)."""

    host: str
    port: int
    socket_dir: str
    run_dir: Path


# -- worker side -------------------------------------------------------------------------------
class SharedRestores:
    def __init__(self, directory: Path, controller_pid: int, worker: str) -> None:
        self.dir, self.controller_pid, self.worker = directory, controller_pid, worker
        self._servers: list = []  # the runtime objects of restores made here (kept referenced)

    def applies(self, settings: Settings) -> bool:
        return settings.runtime == "local"

    def ensure(self, settings: Settings, restore_here: Callable[[], RestoredInstance]) -> RestoredInstance:
        """The shared instance for ``settings``: restored here by the first worker, else attached."""
        from filelock import FileLock

        key = key_for(settings)
        self.dir.parent.mkdir(mode=0o755, parents=True, exist_ok=True)
        self.dir.mkdir(mode=0o700, exist_ok=True)  # the password seeds in it are for the harness only
        base = self.dir / key.digest
        with FileLock(f"{base}.lock"):
            state = _read_json(base.with_suffix(".json"))
            if state is None:
                state = self._restore(base, key, settings, restore_here)
            else:
                log.info("%s: attaching to the restore %s made", key.label, state.get("restored_by"))
            with base.with_suffix(".used").open("a") as used:
                used.write(f"{self.worker}\n")
        if state.get("failed"):
            raise _load(base.with_suffix(".error"))
        return self._attach(state, _load(base.with_suffix(".result")))

    def _restore(self, base: Path, key: RestoreKey, settings: Settings,
                 restore_here: Callable[[], RestoredInstance]) -> dict:
        from ..restore._owner import owned_by

        with base.with_suffix(".restores").open("a") as log_file:
            log_file.write(f"{self.worker} pid {os.getpid()} at {time.time():.3f}\n")
        state: dict[str, Any] = {"source": key.source, "target": key.target, "format": key.format, "restored_by": self.worker}
        try:
            with owned_by(self.controller_pid):
                inst = restore_here()
        except Exception as exc:
            state["failed"] = True
            _dump(base.with_suffix(".error"), exc)
            _write_json(base.with_suffix(".json"), state)
            raise
        self._servers.append(inst.server)
        result = inst.result
        result.evidence["sharing"] = {"mode": "xdist", "restored_by": self.worker}
        if settings.keep == "always":  # the controller leaves it running, as finish() would
            result.evidence["kept"] = str(inst.run_dir)
        state.update(host=inst.host, port=inst.port, user=inst.user, dbname=inst.dbname,
                     socket_dir=str(inst.socket_dir), version=inst.version, run_dir=str(inst.run_dir),
                     password_seed=secrets.token_urlsafe(24), keep=settings.keep)
        _dump(base.with_suffix(".result"), result)
        _write_json(base.with_suffix(".json"), state)
        return state

    def _attach(self, state: dict, result: RestoreResult) -> RestoredInstance:
        inst = RestoredInstance(host=state["host"], port=state["port"], user=state["user"], dbname=state["dbname"],
                                socket_dir=state["socket_dir"], version=state["version"], result=result,
                                run_dir=Path(state["run_dir"]), password_seed=state["password_seed"])
        inst.server = SharedServer(inst.host, inst.port, inst.socket_dir, inst.run_dir)
        return inst


# -- controller side ---------------------------------------------------------------------------
class _Controller:
    def __init__(self, config: pytest.Config, settings: Settings) -> None:
        self.config, self.settings = config, settings
        self.dir: Path | None = None

    @pytest.hookimpl(optionalhook=True)
    def pytest_configure_node(self, node) -> None:  # pytest-xdist, once per worker
        if self.dir is None:
            self.dir = _make_dir(self.settings.workdir)
        node.workerinput[SHARE_KEY] = str(self.dir)
        node.workerinput[PID_KEY] = os.getpid()

    @pytest.hookimpl(trylast=True)  # after the evidence is written: it reads the counts below
    def pytest_sessionfinish(self, session) -> None:
        if self.dir is None:
            return
        try:
            self.teardown()
        except Exception as exc:  # teardown trouble must not hide the drills' results
            import warnings

            warnings.warn(pytest.PytestWarning(f"pgrestore: stopping the shared restores: {exc}"), stacklevel=1)

    def summary(self) -> dict[str, dict]:
        """Evidence ref (``source|target|format``) → ``sharing`` facts: restores made, by whom, used by."""
        out: dict[str, dict] = {}
        for path in sorted(self.dir.glob("*.json")) if self.dir else ():
            state = _read_json(path)
            if not state:
                continue
            made = _lines(path.with_suffix(".restores"))
            out[f"{state['source']}|{state['target']}|{state['format']}"] = {
                "mode": "xdist", "restores": len(made), "restored_by": state.get("restored_by"),
                "workers": sorted(set(_lines(path.with_suffix(".used")))),
            }
        return out

    def teardown(self) -> None:
        """Stop every shared server and remove its run dir; then whatever else this controller owns."""
        from ..restore._rundir import RunDir, list_run_dirs

        share = self.dir
        if share is None or not share.is_dir():
            return  # no worker restored anything
        kept = set()
        for path in sorted(share.glob("*.json")):
            state = _read_json(path) or {}
            if state.get("run_dir") and state.get("keep") == "always":
                RunDir(Path(state["run_dir"]), None).keep()
                kept.add(state["run_dir"])
                log.warning("kept the shared restored server in %s on purpose (--restore-keep=always): it holds "
                            "a copy of production data; delete it when done", state["run_dir"])
        shared = [Path(s["run_dir"]) for s in map(_read_json, share.glob("*.json")) if s and s.get("run_dir")]
        for run_dir in dict.fromkeys([*shared, *list_run_dirs(self.settings.workdir)]):
            record = _read_json(run_dir / "run.json") or {}
            if record.get("pid") == os.getpid() and str(run_dir) not in kept and not (run_dir / "keep").exists():
                stop_run(run_dir)
        shutil.rmtree(share, ignore_errors=True)


def stop_run(run_dir: Path, *, timeout: float = 30.0) -> None:
    """Ask the supervisor of ``run_dir`` to stop its server (fast, then immediate, then SIGKILL of
    the postmaster) and wait until it is gone — it ends every process the copy started — then
    remove the dir.  The supervisor is found from ``/proc`` (ours, naming this run dir), never from a
    pid the server user could have written."""
    from ..restore._rundir import RunDir
    from ..restore._sweep import supervisor_pids

    for sig, wait in ((signal.SIGINT, timeout), (signal.SIGQUIT, 5.0), (signal.SIGUSR1, 5.0), (signal.SIGKILL, 5.0)):
        pids = supervisor_pids(run_dir)
        if not pids:
            break
        for pid in pids:
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + wait
        while supervisor_pids(run_dir) and time.monotonic() < deadline:
            time.sleep(0.05)
    RunDir(run_dir, None).remove()


def _make_dir(workdir: Path) -> Path:
    """The share dir's path; the first worker that restores creates it (nothing is made for a
    run that restores nothing)."""
    for old in workdir.glob("xdist-*"):  # a controller killed before its teardown
        pid = old.name.split("-")[1]
        if pid.isdigit() and not os.path.isdir(f"/proc/{pid}"):
            shutil.rmtree(old, ignore_errors=True)
    return workdir / f"xdist-{os.getpid()}-{secrets.token_hex(4)}"


# -- wiring ---------------------------------------------------------------------------------------
def register(config: pytest.Config, manager: RestoreManager, settings: Settings) -> None:
    """On the xdist controller: hand the share dir to the workers; on a worker: share restores."""
    inputs = getattr(config, "workerinput", None)
    if inputs is not None:
        if SHARE_KEY in inputs:
            manager.share = SharedRestores(Path(inputs[SHARE_KEY]), int(inputs[PID_KEY]),
                                           inputs.get("workerid", os.environ.get("PYTEST_XDIST_WORKER", "?")))
        return
    if config.pluginmanager.hasplugin("xdist"):
        controller = _Controller(config, settings)
        config.stash[_STASH] = controller
        config.pluginmanager.register(controller, "pgrestore-xdist-share")


def sharing_for(config: pytest.Config) -> dict[str, dict]:
    """On the controller: the sharing facts of each restore (empty without xdist)."""
    controller = config.stash.get(_STASH, None)
    return controller.summary() if controller is not None else {}


def _dump(path: Path, obj) -> None:
    try:
        data = pickle.dumps(obj)
    except Exception:  # an exception that does not pickle: its text, as our own error
        from ..errors import PgRestoreError

        data = pickle.dumps(PgRestoreError(f"{type(obj).__name__}: {obj}"))
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


def _load(path: Path):
    return pickle.loads(path.read_bytes())  # noqa: S301 — written by our own workers, in a 0700 dir


def _read_json(path: Path) -> dict | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _write_json(path: Path, data: dict) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data))
    os.replace(tmp, path)


def _lines(path: Path) -> list[str]:
    try:
        return [ln.split()[0] for ln in path.read_text().splitlines() if ln.strip()]
    except OSError:
        return []
