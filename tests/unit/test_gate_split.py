"""The gate and the evidence schema know SPLIT_TIMELINE (issue 19): a split history is a failed
drill and blocks promotion; its twin, a REACHED drill after a clean failover, passes."""

from __future__ import annotations

import json
from pathlib import Path

from test_gate import gate, record, run

from pytest_pgrestore.restore._result import Outcome

SCHEMA = Path(__file__).parents[2] / "docs" / "evidence.schema.json"


def test_a_split_history_fails_the_gate_naming_it():
    rec = record(outcome="SPLIT_TIMELINE", passed=False)
    rec["detail"] = "the archive holds a split history: timeline 2 ends at 0/6000000; timeline 1 ends at 0/8000000"
    result = gate(run(rec, exit_status=1))
    assert not result.ok
    assert "SPLIT_TIMELINE: the archive holds a split history" in result.reasons[0]


def test_twin_a_clean_failover_passes():
    assert gate(run(record(outcome="REACHED"))).ok


def test_every_outcome_is_in_the_evidence_schema():
    text = SCHEMA.read_text()
    enum = next(v for k, v in _walk(json.loads(text)) if k == "outcome" and isinstance(v, dict) and "enum" in v)
    assert {o.value for o in Outcome} <= set(enum["enum"]) and "SPLIT_TIMELINE" in enum["enum"]


def _walk(node):
    if isinstance(node, dict):
        for k, v in node.items():
            yield k, v
            yield from _walk(v)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v)
