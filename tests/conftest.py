"""Keep the developer's own environment out of every test run.

AWS, WAL-G, PostgreSQL and pgrestore variables from the shell would change what the plugin
resolves; botocore would probe the EC2 metadata address.  Scrub them once, before anything runs.
"""

from __future__ import annotations

import os
import tempfile

import pytest

pytest_plugins = ["pytester"]

_SCRUB_PREFIXES = ("PGRESTORE_", "AWS_", "WALG_", "WALE_", "PGHOST", "PGPORT", "PGUSER", "PGPASSWORD",
                   "PGDATABASE", "PGSERVICE", "PGSSL", "PYTEST_ADDOPTS", "GITHUB_STEP_SUMMARY")


def _scrub(environ: dict) -> None:
    for name in list(environ):
        if name.startswith(_SCRUB_PREFIXES):
            del environ[name]
    empty = os.path.join(tempfile.gettempdir(), "pgrestore-empty-aws-config")
    open(empty, "a").close()
    environ.update(AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=empty, AWS_SHARED_CREDENTIALS_FILE=empty)


_scrub(os.environ)


@pytest.fixture
def pytester(pytester: pytest.Pytester, monkeypatch: pytest.MonkeyPatch) -> pytest.Pytester:
    """An inner pytest that sees none of the outer run's pgrestore/AWS settings."""
    for name in list(os.environ):
        if name.startswith(_SCRUB_PREFIXES):
            monkeypatch.delenv(name)
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    # On CI (CI / BUILD_NUMBER set) pytest prints whole failure messages in the short summary;
    # inner runs must read the same whether the outer run is on CI or not.
    for name in ("CI", "BUILD_NUMBER"):
        monkeypatch.delenv(name, raising=False)
    return pytester
