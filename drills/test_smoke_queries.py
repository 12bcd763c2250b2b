"""Checklist: smoke queries beyond what pyproject.toml declares.

Tables, row counts, key rows and freshness are declared in drills/pyproject.toml and run as
built-in checks (``pytest drills/ --restore-checks``).  What a declaration cannot say stays an
ordinary drill; pytest_pgrestore.checks.assertions has helpers whose failures show expected vs found.
"""


def test_referential_integrity_holds(restored_db):
    (orphans,) = restored_db.execute(
        "select count(*) from jobs j left join models m on m.id = j.model_id where m.id is null"
    ).fetchone()
    assert orphans == 0
