"""Fixtures for end-to-end runs of the plugin: one real backup shared by the session, a private
workdir per test, and helpers that look for anything a run left behind.

The backup builders live in ``tests/integration/it_support.py``; ``plugin_support`` puts that
folder on ``sys.path`` so that ``tests/plugin`` also runs on its own.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from plugin_support import Scenario, build_scenario, kill_our_postgres


@pytest.fixture(scope="session")
def plugin_root():
    """A root the postgres user can traverse (pytest's basetemp is 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="pgr-plugin-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def scenario(plugin_root) -> Scenario:
    """A real PostgreSQL 15 backup with archived WAL: backups b1 and b2, 7 rows in table ``t``."""
    return build_scenario(plugin_root / "pg15")


@pytest.fixture
def workroot(plugin_root, request):
    """A private root per test; the inner run's ``--restore-workdir`` is ``workroot / "runs"``.

    Whatever a test leaves (on purpose or by a bug) is stopped and removed afterwards, so one
    failure cannot leak servers into the next test.
    """
    root = Path(tempfile.mkdtemp(prefix="w-", dir=plugin_root))  # short: a unix socket path is short
    root.chmod(0o755)
    yield root
    kill_our_postgres(root)
    shutil.rmtree(root, ignore_errors=True)
