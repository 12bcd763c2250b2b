"""What this team expects of a restored copy of its database (edit for your schema).

The drills in this folder are the runbook's restore verification checklist, written as
ordinary pytest tests against the fixtures of pytest-pgrestore.
"""

import pytest

EXPECTED_TABLES = {"users", "models", "jobs"}
# Rows that never change once written: exact counts hold at any point in time after seeding.
EXACT_COUNTS = {"users": 50, "models": 20}
MIN_COUNTS = {"jobs": 80}
KEY_ROWS = [
    ("users", "email = 'alice@example.com'"),
    ("models", "name = 'model-01' AND owner_id = 1"),
    ("jobs", "id = 7 AND status = 'failed'"),
]
APP_ROLE = "app"


@pytest.fixture
def app_dsn(restored_postgres):
    """How the application itself would connect: its own role, over TCP."""
    return restored_postgres.dsn_for(user=APP_ROLE)
