"""A running restored server, as the fixtures and the CLI hand it out."""

from __future__ import annotations

import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from ._result import RestoreResult

__all__ = ["RestoredInstance", "Hooks"]

#: the advisory lock that serializes per-run password changes (any constant: the cluster is ours)
_PASSWORD_LOCK = 0x7067_7265_7374_6F72  # "pgrestor"


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
    #: the runtime's server (LocalServer, DockerServer): stop/restart for checks that need it offline
    server: object | None = field(default=None, repr=False, compare=False)
    #: set when several processes share this server (xdist): each role's password derives from it,
    #: so every process sets and uses the same one
    password_seed: str | None = field(default=None, repr=False, compare=False)

    @property
    def password(self) -> str:
        return self._password_for(self.user)

    @property
    def dsn(self) -> str:
        """TCP connect string for ``--restore-user`` / ``--restore-dbname`` (per-run password)."""
        return self.dsn_for()

    def dsn_for(self, *, user: str | None = None, dbname: str | None = None) -> str:
        """A TCP connect string; names are quoted by libpq's rules (a space, ``=`` or quote in a
        role or database name is a name, not another keyword)."""
        from psycopg.conninfo import make_conninfo

        user = user or self.user
        return make_conninfo(host=self.host, port=self.port, user=user, password=self._password_for(user),
                             dbname=dbname or self.dbname)

    def admin_connect(self, dbname: str | None = None, **kwargs):
        """A superuser connection over the run dir's private socket."""
        import psycopg

        return psycopg.connect(host=self.socket_dir, port=self.port, user=self.user,
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


def _derived(seed: str, role: str) -> str:
    import base64
    import hashlib
    import hmac

    digest = hmac.new(seed.encode(), role.encode(), hashlib.sha256).digest()
    return base64.urlsafe_b64encode(digest[:18]).decode()
