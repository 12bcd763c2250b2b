"""A running restored server, as the fixtures and the CLI hand it out."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._result import RestoreResult

__all__ = ["RestoredInstance", "Hooks", "DRILL_ROLE", "drill_role_sql", "uses_pg_read_all_data", "read_grants", "write_grants"]

#: the advisory lock that serializes per-run password changes (any constant: the cluster is ours)
_PASSWORD_LOCK = 0x7067_7265_7374_6F72  # "pgrestor"
#: the least-privilege role drills connect as when --restore-user is not given (docs/safety.md)
DRILL_ROLE = "pgrestore_drill"
#: PostgreSQL 14 brought the predefined role pg_read_all_data; older servers get per-schema grants
PREDEFINED_READ_ALL_FROM = 140000
#: schemas the per-schema grants leave alone: the catalogs' own rules apply there
_SCHEMAS = ("select nspname from pg_namespace where nspname not in ('pg_catalog', 'information_schema') "
            "and nspname !~ '^pg_(toast|temp_|toast_temp_)' order by 1")


@dataclass
class Hooks:
    """Fault-injection points for tests of the contract (never set in production use)."""

    before_deliver: Callable[[str], None] | None = None  # called before each WAL delivery
    after_start: Callable[[object], None] | None = None  # called with the server once started


@dataclass
class RestoredInstance:
    host: str
    port: int
    user: str
    dbname: str
    socket_dir: str
    version: str
    result: RestoreResult
    run_dir: Path
    _passwords: dict[str, str] = field(default_factory=dict, repr=False)
    _admin_user: str | None = field(default=None, repr=False, compare=False)  # the bootstrap superuser
    #: the runtime's server (LocalServer, DockerServer): stop/restart for checks that need it offline
    server: object | None = field(default=None, repr=False, compare=False)
    #: set when several processes share this server (xdist): each role's password derives from it,
    #: so every process sets and uses the same one
    password_seed: str | None = field(default=None, repr=False, compare=False)

    @property
    def password(self) -> str:
        """The per-run password of ``user`` (``--restore-user``, the harness's own role)."""
        return self._password_for(self.user)

    @property
    def drill_user(self) -> str:
        """The role drills connect as: the least-privilege drill role the harness made after
        promotion (evidence ``drill_role``), or ``--restore-user`` when it was given.  Read from
        the evidence, so an xdist worker that attaches to a shared server agrees with it."""
        evidence = getattr(self.result, "evidence", None) or {}
        return evidence.get("drill_role") or self.user

    @property
    def dsn(self) -> str:
        """TCP connect string for the drill role (or ``--restore-user``) and ``--restore-dbname``
        (per-run password)."""
        return self.dsn_for()

    def dsn_for(self, *, user: str | None = None, dbname: str | None = None) -> str:
        """A TCP connect string; names are quoted by libpq's rules (a space, ``=`` or quote in a
        role or database name is a name, not another keyword).  ``user`` defaults to
        :attr:`drill_user`."""
        from psycopg.conninfo import make_conninfo

        user = user or self.drill_user
        return make_conninfo(host=self.host, port=self.port, user=user, password=self._password_for(user),
                             dbname=dbname or self.dbname)

    def admin_connect(self, dbname: str | None = None, **kwargs):
        """A superuser connection over the run dir's private socket: as the cluster's bootstrap
        superuser (the role of oid 10, whatever its name), so the harness's own work still runs
        when ``--restore-user`` names a role that is not one."""
        import psycopg

        if self._admin_user is None:
            try:
                with psycopg.connect(host=self.socket_dir, port=self.port, user=self.user, dbname="template1",
                                     connect_timeout=10) as conn:
                    row = conn.execute("select rolname from pg_roles where oid = 10").fetchone()
                self._admin_user = row[0] if row else self.user
            except psycopg.OperationalError:
                self._admin_user = self.user  # the connection below fails the same way, and says why
        return psycopg.connect(host=self.socket_dir, port=self.port, user=self._admin_user,
                               dbname=dbname or self.dbname, **kwargs)

    def connect(self, **kwargs):
        import psycopg

        return psycopg.connect(self.dsn, **kwargs)

    def retire_production_passwords(self) -> list[str]:
        """Production's passwords stop working for the life of the copy: every role that has one
        gets none (TCP logins need a password), but for the roles already given a per-run one.
        A role a drill asks for through :meth:`dsn_for` gets its per-run password then.
        Returns the roles whose password was cleared."""
        from psycopg import sql

        with self.admin_connect("template1", autocommit=True) as conn:
            rows = conn.execute("select rolname from pg_authid where rolpassword is not null order by 1")
            roles = [r[0] for r in rows if r[0] not in self._passwords]
            for role in roles:
                conn.execute(sql.SQL("ALTER ROLE {} PASSWORD NULL").format(sql.Identifier(role)))
        return roles

    def create_drill_role(self, *, predefined_roles: bool | None = None) -> str:
        """Make the least-privilege role drills connect as, and return its name.

        LOGIN, NOSUPERUSER, NOCREATEDB, NOCREATEROLE, NOREPLICATION and BYPASSRLS (a drill counts
        every row, whatever production's row-level security policies let a role see), CONNECT on
        every connectable database, pg_read_all_settings and pg_read_all_stats, and read access to
        all data: ``pg_read_all_data`` from
        PostgreSQL 14, per-schema USAGE and SELECT grants in every connectable database before
        (``predefined_roles`` forces either way; the tests use it to run the older path on a newer
        server).  A role of that name already in the backup is never reused with its production
        rights: the drill role then gets a random suffix.  Its password is the per-run one, set on
        first use."""
        from psycopg import sql

        with self.admin_connect("template1", autocommit=True) as conn:
            taken = {r[0] for r in conn.execute("select rolname from pg_roles where rolname like %s",
                                                (DRILL_ROLE + "%",))}
            name = DRILL_ROLE
            while name in taken:
                name = f"{DRILL_ROLE}_{secrets.token_hex(4)}"
            version = conn.info.server_version
            predefined = uses_pg_read_all_data(version, forced=predefined_roles)
            for stmt in drill_role_sql(name, predefined=predefined, server_version_num=version):
                conn.execute(stmt)
            databases = [r[0] for r in conn.execute("select datname from pg_database where datallowconn order by 1")]
            for db in databases:  # production may have revoked CONNECT from PUBLIC
                conn.execute(sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(
                    sql.Identifier(db), sql.Identifier(name)))
        if not predefined:
            for db in databases:
                self._grant_in(db, name, read_grants)
        return name

    def grant_writes(self, dbname: str) -> None:
        """Write rights for the drill role in one database (a writable clone): every table and
        sequence, CREATE in every schema.  Grants live in the database they are made in: the
        drilled database itself stays read-only to the role.  Nothing to do when drills connect as
        ``--restore-user``."""
        role = self.drill_user
        if role == self.user:
            return
        from psycopg import sql

        with self.admin_connect("template1", autocommit=True) as conn:
            conn.execute(sql.SQL("GRANT CONNECT, TEMPORARY, CREATE ON DATABASE {} TO {}").format(
                sql.Identifier(dbname), sql.Identifier(role)))
        self._grant_in(dbname, role, write_grants)

    def _grant_in(self, dbname: str, role: str, grants: Callable[[str, str], list]) -> None:
        with self.admin_connect(dbname, autocommit=True) as conn, conn.transaction():
            for (schema,) in conn.execute(_SCHEMAS).fetchall():
                for stmt in grants(schema, role):
                    conn.execute(stmt)

    def is_superuser(self, role: str) -> bool:
        with self.admin_connect("template1", autocommit=True) as conn:
            row = conn.execute("select rolsuper from pg_roles where rolname = %s", (role,)).fetchone()
        return bool(row and row[0])

    def _password_for(self, role: str) -> str:
        """A random per-run password, set on first use: TCP logins need it (scram-sha-256)."""
        if role not in self._passwords:
            from psycopg import sql

            password = _derived(self.password_seed, role) if self.password_seed else secrets.token_urlsafe(18)
            # Under xdist every worker sets the same derived password on first use: two concurrent
            # ALTER ROLEs of one role fail ("tuple concurrently updated"), so they take turns.
            with self.admin_connect("template1") as c, c.transaction():
                c.execute("SELECT pg_advisory_xact_lock(%s)", (_PASSWORD_LOCK,))
                c.execute(sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD {}").format(
                    sql.Identifier(role), sql.Literal(password)))
            self._passwords[role] = password
        return self._passwords[role]


def uses_pg_read_all_data(server_version_num: int, *, forced: bool | None = None) -> bool:
    """Whether the drill role reads through ``pg_read_all_data`` (PostgreSQL 14 and later) or
    through per-schema grants (13 and older, where that role does not exist)."""
    return server_version_num >= PREDEFINED_READ_ALL_FROM if forced is None else forced


def drill_role_sql(name: str, *, predefined: bool, server_version_num: int = PREDEFINED_READ_ALL_FROM) -> list:
    """CREATE ROLE for the drill role; ``pg_read_all_settings`` and ``pg_read_all_stats``
    (PostgreSQL 10 and later: read-only, a drill may ``SHOW shared_preload_libraries`` or read
    ``pg_stat_*``), and ``pg_read_all_data`` when ``predefined`` (PostgreSQL 14 and later).  Never
    pg_execute_server_program, pg_read_server_files nor pg_write_server_files."""
    from psycopg import sql

    role = sql.Identifier(name)
    out = [sql.SQL("CREATE ROLE {} LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOREPLICATION BYPASSRLS INHERIT")
           .format(role)]
    if server_version_num >= 100000:
        out.append(sql.SQL("GRANT pg_read_all_settings, pg_read_all_stats TO {}").format(role))
    if predefined:
        out.append(sql.SQL("GRANT pg_read_all_data TO {}").format(role))
    return out


def read_grants(schema: str, role: str) -> list:
    """What ``pg_read_all_data`` gives, for one schema of one database (PostgreSQL 13 and older)."""
    from psycopg import sql

    s, r = sql.Identifier(schema), sql.Identifier(role)
    return [sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(s, r),
            sql.SQL("GRANT SELECT ON ALL TABLES IN SCHEMA {} TO {}").format(s, r),  # views, matviews too
            sql.SQL("GRANT SELECT ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r)]


def write_grants(schema: str, role: str) -> list:
    """Write rights in one schema of a writable clone."""
    from psycopg import sql

    s, r = sql.Identifier(schema), sql.Identifier(role)
    return [sql.SQL("GRANT USAGE, CREATE ON SCHEMA {} TO {}").format(s, r),
            sql.SQL("GRANT ALL ON ALL TABLES IN SCHEMA {} TO {}").format(s, r),
            sql.SQL("GRANT ALL ON ALL SEQUENCES IN SCHEMA {} TO {}").format(s, r)]


def _derived(seed: str, role: str) -> str:
    import base64
    import hashlib
    import hmac

    digest = hmac.new(seed.encode(), role.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()
