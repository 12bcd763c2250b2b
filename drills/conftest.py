"""What this team expects of a restored copy of its database (edit for your schema).

The drills in this folder are the runbook's restore verification checklist, written as
ordinary pytest tests against the fixtures of pytest-pgrestore.  The expected tables, row counts
and key rows are declared in pyproject.toml next to this file: ``--restore-checks`` runs them.
"""

import pytest

APP_ROLE = "app"


@pytest.fixture
def app_dsn(restored_postgres):
    """How the application itself would connect: its own role, over TCP."""
    return restored_postgres.dsn_for(user=APP_ROLE)
