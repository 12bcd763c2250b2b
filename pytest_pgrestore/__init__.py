"""pytest-pgrestore: restore drills for PostgreSQL backups as pytest tests.

The public API — what a drill or a script may import — is the names below (docs/api.md).  They
load on first use, so installing the plugin costs ``pytest --help`` nothing.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

#: public name -> the module that defines it
_PUBLIC = {
    "Restorer": "restore._restorer",
    "RestoredInstance": "restore._instance",
    "RestoreResult": "restore._result",
    "Outcome": "restore._result",
    "RestoreTarget": "settings._target",
    "TargetError": "settings._target",
    "Settings": "settings._options",
    "resolve_settings": "settings._options",
    **{name: "errors" for name in (
        "PgRestoreError", "UsageError", "SourceError", "AccessDenied", "SourceNotFound", "SourceUnreachable",
        "FormatError", "CorruptBackup", "PreflightError", "BinariesNotFound", "RestoreFailed",
        "NoSourceConfigured", "CheckSkipped")},
    **{name: "checks.assertions" for name in (
        "ExpectationFailed", "Relation", "relation", "missing_tables", "row_count", "row_exists",
        "assert_tables_exist", "assert_row_count", "assert_row_exists", "assert_query_returns_rows",
        "assert_extensions_installed", "assert_databases_exist", "assert_schemas_exist", "assert_fresh")},
}

__all__ = [
    "__version__",
    "Restorer", "RestoredInstance", "RestoreResult", "Outcome", "RestoreTarget", "TargetError",
    "Settings", "resolve_settings", "PgRestoreError", "UsageError", "SourceError", "AccessDenied",
    "SourceNotFound", "SourceUnreachable", "FormatError", "CorruptBackup", "PreflightError",
    "BinariesNotFound", "RestoreFailed", "NoSourceConfigured", "CheckSkipped", "ExpectationFailed",
    "Relation", "relation", "missing_tables", "row_count", "row_exists", "assert_tables_exist",
    "assert_row_count", "assert_row_exists", "assert_query_returns_rows", "assert_extensions_installed",
    "assert_databases_exist", "assert_schemas_exist", "assert_fresh",
]
assert set(__all__) == {"__version__", *_PUBLIC}


def __getattr__(name: str) -> Any:
    module = _PUBLIC.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)


if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from .checks.assertions import (
        ExpectationFailed,
        Relation,
        assert_databases_exist,
        assert_extensions_installed,
        assert_fresh,
        assert_query_returns_rows,
        assert_row_count,
        assert_row_exists,
        assert_schemas_exist,
        assert_tables_exist,
        missing_tables,
        relation,
        row_count,
        row_exists,
    )
    from .errors import (
        AccessDenied,
        BinariesNotFound,
        CheckSkipped,
        CorruptBackup,
        FormatError,
        NoSourceConfigured,
        PgRestoreError,
        PreflightError,
        RestoreFailed,
        SourceError,
        SourceNotFound,
        SourceUnreachable,
        UsageError,
    )
    from .restore._instance import RestoredInstance
    from .restore._restorer import Restorer
    from .restore._result import Outcome, RestoreResult
    from .settings._options import Settings, resolve_settings
    from .settings._target import RestoreTarget, TargetError
