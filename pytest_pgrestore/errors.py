"""The error tree of pytest-pgrestore.

Every error carries three parts so that a failing drill reads like a runbook entry:
what failed, what was checked, and how to fix it.  ``str(err)`` renders all three.
User errors (a bad option, target or URL) derive from :class:`UsageError`; the plugin turns
them into ``pytest.UsageError`` and the CLI into exit code 4.

Every error a user sees or a caller catches is defined here; the modules that raise them import
them from here (and keep exporting them under their old names).  Outside this file remain: the
runtimes' own errors (``DockerUnavailable``, ``ImageUnavailable``, both in the tree), the demo's
(``SeaweedStartError``, ``DemoSourceError``: the demo harness, not the product) and private
control-flow signals that never leave their module (``TruncatedTar``, ``Withheld``, ``NotTaken``,
``_Unrecognized``).  :class:`ExpectationFailed` is the one error outside the tree: a drill's failed
assertion, an ``AssertionError`` so that pytest reports it as a failed test.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .restore._result import RestoreResult

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
    "TargetError",
    "ObjectChanged",
    "NotSupported",
    "StanzaError",
    "ServerError",
    "UnsupportedRepository",
    "UnsupportedBarmanBackup",
    "EncryptedWithoutKey",
    "UnsupportedEncryption",
    "DiskSpaceError",
    "NegativeControlFailed",
    "ExpectationFailed",
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


class TargetError(UsageError):
    """The restore target text does not follow the grammar."""


class SourceError(PgRestoreError):
    """The backup store could not be read."""


class AccessDenied(SourceError):
    # set by the S3 store: the action refused (s3:GetObject, …) and its ARN, which a refused check names
    permission: str
    resource: str


class SourceNotFound(SourceError):
    pass


class SourceUnreachable(SourceError):
    pass


class ObjectChanged(SourceError):
    """An object no longer has the ETag it had when the read began (``open_range(etag=...)``)."""


class NotSupported(SourceError):
    """The S3 endpoint does not implement an operation (NotImplemented, 501)."""


class FormatError(PgRestoreError):
    """The layout under the source is not a backup we can read."""


class CorruptBackup(FormatError):
    """The backup's bytes fail a check the format carries (checksum, codec, manifest)."""


class StanzaError(FormatError):
    """The repository holds several stanzas (or not the one asked for)."""


class ServerError(FormatError):
    """The destination holds several barman servers (or not the one asked for)."""


class UnsupportedRepository(FormatError):
    """The repository uses a pgBackRest feature the native reader does not implement."""

    @classmethod
    def encrypted(cls, key: str) -> UnsupportedRepository:
        return cls(f"pgBackRest repository encryption is not supported: {key} is encrypted (aes-256-cbc)",
                   checked=f"the first bytes of {key} (OpenSSL 'Salted__' header)",
                   fix="restore this stanza with `pgbackrest restore` and its repo1-cipher-pass, or drill an "
                       "unencrypted copy of the repository (repo1-cipher-type=none)")

    @classmethod
    def block_incremental(cls, labels: list[str]) -> UnsupportedRepository:
        return cls(f"pgBackRest block incremental backups are not supported: {', '.join(labels)}",
                   checked="backup-info-repo-size-map in backup.info (written only for repo-block=y backups)",
                   fix="restore these backups with `pgbackrest restore`, or take the drill's backups with "
                       "repo1-block=n")


class UnsupportedBarmanBackup(FormatError):
    """A barman-cloud backup kind the native reader does not restore."""


class PreflightError(PgRestoreError):
    """The plan shows, before any download, that the target cannot be reached."""

    result: RestoreResult  # the refusal's evidence, once Restorer.restore has it


class DiskSpaceError(PreflightError):
    """Too little free space for the restore: refused before the download."""


class EncryptedWithoutKey(FormatError, PreflightError):
    """An object is encrypted and no libsodium key is configured."""


class UnsupportedEncryption(FormatError, PreflightError):
    """PGP or KMS client-side encryption: refused rather than restored wrongly."""


class BinariesNotFound(PgRestoreError):
    """No PostgreSQL binaries of the backup's major version are usable."""

    result: RestoreResult  # the refusal's evidence, once Restorer.restore has it


class NegativeControlFailed(PgRestoreError):
    """The restore with a withheld segment was not caught by the verdict."""


class RestoreFailed(PgRestoreError):
    """Recovery ran and the verdict is not REACHED; ``result`` holds the evidence."""

    def __init__(self, what: str, *, checked: str | None = None, fix: str | None = None, result=None):
        super().__init__(what, checked=checked, fix=fix)
        self.result = result


class CheckSkipped(PgRestoreError):
    """A built-in check cannot run here (amcheck missing, checksums off, a permission the key lacks):
    reported as skipped with this reason, never as passed."""


class ExpectationFailed(AssertionError):
    """A restored database differs from what was expected; the message shows both."""

    def __init__(self, what: str, *, expected: str, found: str) -> None:
        super().__init__(f"{what}: expected {expected}, found {found}")
        self.what, self.expected, self.found = what, expected, found
