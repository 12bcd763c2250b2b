"""The error tree of pytest-pgrestore.

Every error carries three parts so that a failing drill reads like a runbook entry:
what failed, what was checked, and how to fix it.  ``str(err)`` renders all three.
User errors (a bad option, target or URL) derive from :class:`UsageError`; the plugin turns
them into ``pytest.UsageError`` and the CLI into exit code 4.
"""

from __future__ import annotations

__all__ = [
    "PgRestoreError",
    "UsageError",
    "SourceError",
    "AccessDenied",
    "SourceNotFound",
    "SourceUnreachable",
    "FormatError",
    "CorruptBackup",
    "PreflightError",
    "BinariesNotFound",
    "RestoreFailed",
    "NoSourceConfigured",
    "CheckSkipped",
]


class PgRestoreError(Exception):
    """Base class: ``what`` failed, what was ``checked``, how to ``fix`` it."""

    def __init__(self, what: str, *, checked: str | None = None, fix: str | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.checked = checked
        self.fix = fix

    def __str__(self) -> str:
        parts = [self.what]
        if self.checked:
            parts.append(f"checked: {self.checked}")
        if self.fix:
            parts.append(f"fix: {self.fix}")
        return "\n  ".join(parts)

    def __reduce__(self):  # keyword-only arguments must survive pickling (xdist, multiprocessing)
        return (_rebuild, (type(self), self.what, self.checked, self.fix, self.__dict__))


def _rebuild(cls, what, checked, fix, state):
    err = cls.__new__(cls)
    PgRestoreError.__init__(err, what, checked=checked, fix=fix)
    err.__dict__.update(state)
    return err


class UsageError(PgRestoreError):
    """A value the user controls (option, target, URL) is malformed."""


class NoSourceConfigured(UsageError):
    """No backup source anywhere: there is deliberately no default."""


class SourceError(PgRestoreError):
    """The backup store could not be read."""


class AccessDenied(SourceError):
    pass


class SourceNotFound(SourceError):
    pass


class SourceUnreachable(SourceError):
    pass


class FormatError(PgRestoreError):
    """The layout under the source is not a backup we can read."""


class CorruptBackup(FormatError):
    """The backup's bytes fail a check the format carries (checksum, codec, manifest)."""


class PreflightError(PgRestoreError):
    """The plan shows, before any download, that the target cannot be reached."""


class BinariesNotFound(PgRestoreError):
    """No PostgreSQL binaries of the backup's major version are usable."""


class RestoreFailed(PgRestoreError):
    """Recovery ran and the verdict is not REACHED; ``result`` holds the evidence."""

    def __init__(self, what: str, *, checked: str | None = None, fix: str | None = None, result=None):
        super().__init__(what, checked=checked, fix=fix)
        self.result = result


class CheckSkipped(PgRestoreError):
    """A built-in check cannot run here (amcheck missing, checksums off, a permission the key lacks):
    reported as skipped with this reason, never as passed."""
