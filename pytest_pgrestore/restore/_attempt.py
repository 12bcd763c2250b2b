"""One recovery attempt: fetch one backup, replay toward the target, decide the verdict."""

from __future__ import annotations

import logging
import os
import shlex
import time
from contextlib import contextmanager
from pathlib import Path

from .. import _faults
from ..errors import PgRestoreError, RestoreFailed
from ..runtimes import choose
from ..runtimes._base import Binaries, Runtime, Server
from ..settings._target import format_lsn
from ..signals import deferred_interrupts
from . import _measure as measure
from ._instance import RestoredInstance
from ._plan import Plan, find_split, make_plan, split_error
from ._recover import (
    control_data,
    describe_preload,
    missing_preload,
    quarantine,
    server_settings,
    verify_backup,
    watch,
    write_config,
)
from ._result import Attempt, Outcome, RestoreResult
from ._rundir import RunDir, port_is_free
from ._spool import HEAD_START_SEGMENTS, WalSpool, write_wrapper
from ._verdict import decide

log = logging.getLogger(__name__)

__all__ = ["RestoreAttempt"]


class RestoreAttempt:
    def __init__(self, restorer, catalog, plan: Plan, result: RestoreResult, clock, *,
                 pgdata=None, port: int | None = None) -> None:
        self.restorer, self.catalog, self.plan = restorer, catalog, plan
        self.pgdata, self.port = pgdata, port
        self.result, self.clock = result, clock
        self.settings = restorer.settings
        self.rundir: RunDir | None = None
        self.server: Server | None = None
        self.spool: WalSpool | None = None
        # where the server runs: chosen now when the choice needs nothing of the backup, else by
        # _binaries once the backup's major version is known
        self.runtime: Runtime | None = choose(self.settings, None, evidence=result.evidence)
        self.owner = self.runtime.owner if self.runtime is not None else None

    # what exists once run() has come so far
    def _run_dir(self) -> RunDir:
        assert self.rundir is not None, "run() makes the run dir before anything uses it"
        return self.rundir

    def _spool(self) -> WalSpool:
        assert self.spool is not None, "_start starts the spool (if it did not start early)"
        return self.spool

    # -- the happy path, step by step -----------------------------------------------------
    def run(self) -> RestoredInstance:
        s, backup, result = self.settings, self.plan.backup, self.result
        _describe_backup(result, backup, self.plan)
        started = time.monotonic()
        with self.clock("binaries"):
            bins = self._binaries(backup.pg_major) if backup.pg_major else None
        if self.port is not None and not port_is_free(self.port):
            raise PgRestoreError(f"port {self.port} on 127.0.0.1 is already in use",
                                 checked=f"binding 127.0.0.1:{self.port}",
                                 fix="choose another --listen-port, or stop what listens there")
        try:
            with deferred_interrupts():  # the run dir exists only once finish() knows to remove it
                self.rundir = RunDir.create(s.workdir, owner=self.owner, label=f"{result.source} {result.target}",
                                            pgdata=self.pgdata)
                _faults.point("attempt.rundir")
            run = self.rundir
            result.evidence["run_dir"] = str(run.path)
            if self.runtime is not None:  # the spool's owner is known: replay's first WAL arrives with the backup
                self.runtime.attach(run, port=self.port)
                self._start_spool(early=True)
            bins = self._fetch_and_verify(bins)
            server, socket_dir = self._start(bins)
            with self.clock("recover", log_file=run.log_file), self._replay_progress():
                obs = watch(server, user=s.user, log_file=run.log_file,
                            deadline=started + s.timeout, spool=self.spool)
            self._spool().stop()
            self._decide(obs)
            return self._instance(bins, socket_dir)
        except BaseException:
            self.finish(failed=True)
            raise

    def _binaries(self, major: int) -> Binaries:
        if self.runtime is None:
            self.runtime = choose(self.settings, major, evidence=self.result.evidence)
            assert self.runtime is not None, "given the major version, choose always picks a runtime"
        tools = self.runtime.binaries(major)
        self.owner = self.runtime.owner
        if self.rundir is not None and self.runtime.run is None:  # chosen after the run dir was made
            self.runtime.attach(self.rundir, port=self.port)
        return tools

    def _fetch_and_verify(self, bins: Binaries | None) -> Binaries:
        from ._fetch import fetching

        fmt, run, result = self.restorer.format(), self._run_dir(), self.result
        with self.clock("fetch"), fetching(fmt, self.settings, result, backup=self.plan.backup,
                                           progress=self._progress()) as reading:
            mat = reading.materialize(self.plan.backup, run.pgdata, run.path, owner=self.owner)
        result.bytes_fetched += mat.bytes_fetched
        result.evidence["bytes_written"] = mat.bytes_written
        result.evidence["contents_verified"] = mat.contents_verified
        result.evidence["contents_check"] = mat.contents_check
        major = int((run.pgdata / "PG_VERSION").read_text().split(".")[0])
        result.pg_version = major
        if bins is None or bins.major != major:
            bins = self._binaries(major)
        result.versions["postgresql"] = bins.version
        result.evidence["binaries"] = f"{bins.bindir} ({bins.origin})"
        if mat.manifest:
            with self.clock("verify"):
                result.evidence["manifest_check"] = verify_backup(bins, run.pgdata, mat.manifest)
        return bins

    def _start_spool(self, *, early: bool = False) -> None:
        """Prefetch the plan's WAL into the run dir's spool, up to its window.  Started ``early``
        (before the base backup is fetched, when the runtime, so the spool's owner, is already
        known) it fetches replay's first :data:`HEAD_START_SEGMENTS` only, until the server
        starts: replay then does not wait at its start, and the download keeps its CPU.  The
        spool reads through a copy of the format, whose store the fetch layer does not wrap (WAL
        is not base backup: not counted in its bytes, not put in the cache)."""
        import copy

        self.spool = WalSpool(copy.copy(self.restorer.format()), self.plan, self._run_dir().spool, owner=self.owner,
                              concurrency=self.settings.fetch_concurrency,
                              before_deliver=self.restorer.hooks.before_deliver)
        self.spool.start(head_start=HEAD_START_SEGMENTS if early else None)

    def _progress(self):
        from ._progress import Progress

        return Progress.for_settings(self.settings, label=f"pgrestore restore[{self.result.target}]")

    @contextmanager
    def _replay_progress(self):
        size = self.catalog.wal.segment_size or self.plan.backup.segment_size
        watch = self._progress().replay(self.spool, self.plan, segment_size=size)
        try:
            yield
        finally:
            if watch is not None:
                watch.close()

    def _start(self, bins: Binaries) -> tuple[Server, Path]:
        run, plan = self._run_dir(), self.plan
        assert self.runtime is not None, "_binaries chose it at the latest"
        with self.clock("prepare"):
            control = control_data(bins, run.pgdata)
            self.result.evidence["preload"] = describe_preload(run.pgdata, self.settings.preload)
            self.result.evidence["kept_from_production"] = quarantine(run.pgdata, run.path / "evidence")
            socket_dir = run.socket_dir()
            port = self.runtime.listen_port()
            wrapper = write_wrapper(run.path / "restore_wal.sh", run.spool, os.getpid(),
                                    max_wait_s=self.settings.timeout, heartbeat=self.runtime.wal_heartbeat())
            settings = server_settings(control, major=bins.major, port=port, socket_dir=socket_dir,
                                       restore_command=_restore_command(wrapper),
                                       recovery=plan.recovery, preload=self.settings.preload)
            conf = write_config(run.path, settings)
            run.chown_tree()
        if self.spool is None:
            self._start_spool()
        self._spool().widen()
        cmdline = dict(settings)  # the command line beats every file a hostile PGDATA could carry
        history = {f"{tli:08X}.history": key for tli, key in self.catalog.wal.history_keys.items()}
        self._describe_runtime()  # before the start too: a start that fails still says where it ran
        server = self.server = self.runtime.start(config_file=conf, settings=cmdline, socket_dir=socket_dir,
                                                  spool=self.spool, extra_wal=history,
                                                  kept=self.result.evidence["kept_from_production"])
        self._describe_runtime()
        if self.restorer.hooks.after_start:
            self.restorer.hooks.after_start(server)
        return server, socket_dir

    def _describe_runtime(self) -> None:
        assert self.runtime is not None, "_binaries chose it at the latest"
        detail = self.runtime.describe()
        if detail is not None:
            self.result.evidence["runtime_detail"] = detail

    def _decide(self, obs) -> None:
        plan, result = self.plan, self.result
        archive_end = plan.archive_end_lsn
        size = self.catalog.wal.segment_size or 16 << 20
        wal = self.catalog.wal
        if plan.target.kind == "latest":  # a listing taken after replay: WAL may have arrived since
            with self.clock("relist"):
                fresh = wal = self.restorer.format().catalog().wal
            newest = fresh.newest_segno(plan.timeline)
            archive_end = (newest + 1) * size if newest is not None else archive_end
        verdict = decide(obs, plan.target, timeline=plan.timeline, segment_size=size, archive_end_lsn=archive_end)
        split = find_split(wal, plan.backup, plan.timeline) \
            if plan.target.kind == "latest" and self.settings.timeline == "latest" else None
        result.outcome, result.detail, result.stop_reason = verdict.outcome, verdict.detail, verdict.stop_reason
        result.replay_lsn = format_lsn(obs.replay_lsn) if obs.replay_lsn is not None else None
        result.last_replay_time = obs.last_replay_time.isoformat() if obs.last_replay_time else None
        result.archive_end_lsn = format_lsn(archive_end) if archive_end else None
        result.timeline = plan.timeline
        stats = self._spool().stats
        result.wal_segments += stats.segments
        result.evidence["wal_bytes"] = stats.bytes
        result.evidence["wal_on_demand"] = list(stats.on_demand)
        result.log_tail = obs.log_lines[-40:]
        measure.after_replay(result, spool=self.spool, wal=wal, plan=plan, replay_lsn=obs.replay_lsn)
        result.attempts.append(Attempt(plan.backup.name, verdict.outcome, verdict.detail))
        missing = missing_preload(obs.log_lines, self.settings.preload) \
            if verdict.outcome is Outcome.START_FAILED else []
        if missing:
            raise RestoreFailed(
                f"restore of {result.source} to {plan.target} ended {verdict.outcome}: --restore-preload names "
                f"{', '.join(missing)}, which PostgreSQL {result.pg_version} at "
                f"{result.evidence.get('binaries') or result.evidence.get('runtime_detail') or '?'} does not have",
                checked=f"the server's start: could not access file \"{missing[0]}\" (shared_preload_libraries)",
                fix=f"install the extension for PostgreSQL {result.pg_version} where the server runs (the "
                    f"binaries, or the docker image), or leave {', '.join(missing)} out of --restore-preload",
                result=result)
        if split is not None and verdict.outcome is Outcome.REACHED:
            # production went on along another line while the drill replayed (the plan's listing did
            # not show it yet): what was reached is not latest
            err = split_error(split, wal, plan.backup, when="after replay, ")
            result.outcome, result.detail = Outcome.SPLIT_TIMELINE, err.what
            result.attempts[-1] = Attempt(plan.backup.name, Outcome.SPLIT_TIMELINE, err.what)
            raise RestoreFailed(err.what, checked=err.checked, fix=err.fix, result=result)
        if verdict.outcome is not Outcome.REACHED:
            raise RestoreFailed(f"restore of {result.source} to {plan.target} ended {verdict.outcome}: "
                                f"{verdict.detail}",
                                checked=f"backup {plan.backup.name}, server log {self._run_dir().log_file.name} "
                                        f"and recovery state",
                                fix=_FIXES.get(verdict.outcome), result=result)

    def _instance(self, bins: Binaries, socket_dir) -> RestoredInstance:
        s, server = self.settings, self.server
        assert server is not None and self.runtime is not None, "_start started the server on it"
        inst = self.runtime.instance(host=server.host, port=server.port, user=s.user, dbname=s.dbname,
                                     socket_dir=server.socket_dir, version=bins.version, result=self.result,
                                     run_dir=self._run_dir().path)
        inst.server = server  # checks that need the cluster stopped (pg_checksums) restart it in place
        with inst.admin_connect("template1", autocommit=True) as conn:
            if not conn.execute("select 1 from pg_database where datname = %s", (s.dbname,)).fetchone():
                names = [r[0] for r in conn.execute("select datname from pg_database where datallowconn")]
                raise PgRestoreError(f"the restored cluster has no database {s.dbname!r}",
                                     checked=f"databases in the backup: {', '.join(sorted(names))}",
                                     fix="set --restore-dbname (env PGRESTORE_DBNAME) to one of them")
        measure.first_query(inst, self.clock, s)  # closes the RTO clock
        cleared = inst.retire_production_passwords()  # after the clock: the copy's hygiene, not its RTO
        self.result.evidence["production_passwords"] = (
            f"cleared for the life of the copy: {len(cleared)} role(s) had one" if cleared
            else "none in the backup")
        # least privilege: drills connect as a role of the harness's own unless --restore-user was given
        role = inst.create_drill_role() if s.drill_role_default else s.user
        self.result.evidence["drill_role"] = role
        self.result.evidence["drill_superuser"] = inst.is_superuser(role)
        return inst

    # -- retries and teardown -------------------------------------------------------------
    def retry_plan(self, exc: RestoreFailed) -> Plan | None:
        """xid:/name: cannot be placed from a listing: try the next older backup."""
        if not (self.plan.target.needs_replay_search and self.plan.fallbacks
                and self.result.outcome is Outcome.ENDED_EARLY and not self.plan.target.backup):
            return None
        log.info("%s not found from backup %s; trying %s", self.plan.target, self.plan.backup.name,
                 self.plan.fallbacks[0].name)
        return make_plan(self.catalog, self.plan.target, timeline=self.settings.timeline,
                         inclusive=self.settings.target_inclusive, backup=self.plan.fallbacks[0])

    def release(self) -> None:
        """Hand the running server and its run dir over to their owner: only the spool stops."""
        if self.spool is not None:
            self.spool.stop()
        self.rundir = None

    def finish(self, *, failed: bool, keep_running: bool = False) -> None:
        keep = keep_running or self.settings.keep == "always" or (self.settings.keep == "on-failure" and failed)
        if self.spool is not None:
            self.spool.stop()
        if self.rundir is None:
            return
        if keep:
            self.rundir.keep()
            if self.runtime is not None:
                self.runtime.close(keep=True)
            self.result.evidence["kept"] = str(self.rundir.path)
            why = "--keep-running" if keep_running else f"--restore-keep={self.settings.keep}"
            log.warning("kept the restored server and %s on purpose (%s): it holds a copy of production data; "
                        "connect with psql -h %s -p %s, delete the directory when done", self.rundir.path, why,
                        self.server.socket_dir if self.server else "?", self.server.port if self.server else "?")
            return
        if self.server is not None:
            self.server.stop()
        if self.runtime is not None:
            self.runtime.close()
        self.rundir.remove(keep_pgdata=not failed)  # a manual restore's PGDATA is the product
        self.rundir = None


def _describe_backup(result: RestoreResult, backup, plan: Plan) -> None:
    result.backup = backup.name
    result.backup_start_lsn = format_lsn(backup.start_lsn)
    result.backup_stop_lsn = format_lsn(backup.stop_lsn)
    result.backup_stop_time = backup.stop_time.isoformat() if backup.stop_time else None
    result.pg_version = backup.pg_major
    result.evidence["planned_segments"] = len(plan.segments)


_FIXES = {
    Outcome.TRUNCATED: "WAL that is listed in the archive was not replayed: check the segments after the "
                       "replay end for damage, and that archive_command is not failing",
    Outcome.ENDED_EARLY: "the archive does not contain the target: choose a target inside the reachable range "
                         "(pgrestore plan SOURCE --target T), or use `latest` / `lsn:`",
    Outcome.CORRUPT_WAL: "a WAL segment in the archive is damaged: re-archive it from the primary if it still "
                         "has it, or restore to a point before the damage",
    Outcome.PAUSED_PARAMS: "the primary raised a hot-standby parameter during the replayed WAL; raise it too",
    Outcome.RESTORE_COMMAND_ABORT: "WAL delivery failed hard: see the named object and the store's health",
    Outcome.START_FAILED: "see the server log lines in the result for why PostgreSQL stopped",
    Outcome.TIMEOUT: "raise --restore-timeout, or make the archive/restore faster",
}


def _restore_command(wrapper) -> str:
    """``exec`` saves a fork a file; the path is shell-quoted, and its ``%`` doubled because
    PostgreSQL expands ``%f``/``%p``/``%r`` in restore_command before the shell sees it."""
    return f"exec /bin/sh {shlex.quote(str(wrapper)).replace('%', '%%')} %f %p"
