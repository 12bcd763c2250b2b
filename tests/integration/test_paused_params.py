"""A primary that raised a hot-standby parameter after the backup: replay pauses, named."""

from __future__ import annotations

import pytest
from it_support import our_postgres_processes, run_dirs

from pytest_pgrestore.demo._source import SourceCluster
from pytest_pgrestore.errors import RestoreFailed
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def raised_after_backup(workroot):
    root = workroot / "params"
    root.mkdir()
    with SourceCluster(root / "src", repo=root / "repo", major=15) as src:
        src.commit_rows(1)
        src.backup()
        src.commit_rows(1)
        src.switch_wal()
        with src.connect() as conn:
            conn.execute("ALTER SYSTEM SET max_connections = 250")
        src.stop()
        src.start()  # the new value is WAL-logged (XLOG_PARAMETER_CHANGE) at start-up
        src.commit_rows(1)
        src.switch_wal()
    return root / "repo"


def test_immediate_before_the_change_is_reached(raised_after_backup, settings_factory):
    with Restorer(settings_factory(f"file://{raised_after_backup}", "immediate")).restore() as inst:
        assert inst.result.outcome == "REACHED"


def test_twin_latest_across_the_change_pauses_and_names_the_parameter(raised_after_backup, settings_factory,
                                                                        workroot):
    with pytest.raises(RestoreFailed) as err:
        with Restorer(settings_factory(f"file://{raised_after_backup}")).restore():
            pass
    assert err.value.result.outcome == "PAUSED_PARAMS"
    assert "max_connections = 100 (primary: 250)" in str(err.value)
    assert run_dirs(workroot) == [] and our_postgres_processes(workroot) == []
