"""Real components for integration tests: SeaweedFS, source clusters, real backups.

Scenario layout (PostgreSQL 15 unless said otherwise): commits ``c0`` → backup ``b1`` →
commits ``c1`` → restore point ``rp_between`` → backup ``b2`` → commits ``c2`` → WAL switch.
Each commit inserts one row into table ``t``, so a row count tells where recovery stopped.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
from it_support import Scenario, build_scenario

from pytest_pgrestore.demo._seaweed import SeaweedS3
from pytest_pgrestore.settings._options import resolve_settings

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
def workroot():
    """A root every server user can traverse (pytest's basetemp is 0700 root)."""
    root = Path(tempfile.mkdtemp(prefix="pgr-it-", dir="/tmp"))
    root.chmod(0o755)
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def seaweed(workroot):
    with SeaweedS3(workroot / "s3") as s3:
        yield s3


@pytest.fixture(scope="session")
def pg15(workroot, seaweed) -> Scenario:
    sc = build_scenario(workroot / "pg15")
    seaweed.create_bucket("drills")
    seaweed.upload_dir(sc.repo, "drills", "pg15")
    sc.s3_url, sc.s3_env = "s3://drills/pg15", seaweed.env(readonly=True)
    return sc


@pytest.fixture
def settings_factory(workroot):
    """``settings_factory(source, target="latest", env=None, **cli)`` → Settings."""

    def make(source: str, target: str = "latest", *, env: dict | None = None, **cli):
        values = {"source": source, "target": target, "workdir": str(workroot / "runs"), **cli}
        return resolve_settings(cli=values, env=env or {}, ini={})

    return make
