"""The CI templates users copy: valid against GitHub's and GitLab's schemas (offline, with
check-jsonschema's built-in copies), and wired the way a gate can trust."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from ruamel.yaml import YAML  # check-jsonschema's own YAML reader (YAML 1.2)

ROOT = Path(__file__).parents[2]
GITHUB = sorted((ROOT / ".github" / "workflows").glob("*.yml"))
GITLAB = [ROOT / ".gitlab-ci.yml", ROOT / "ci" / "restore-drill-fanout.gitlab-ci.yml"]
load = YAML(typ="safe").load
CHECK = shutil.which("check-jsonschema") or str(Path(sys.executable).with_name("check-jsonschema"))
DRILLS = {p.name: p for p in [*GITHUB, *GITLAB] if "drill" in p.name or p.name == ".gitlab-ci.yml"}


def check(schema: str, path: Path) -> subprocess.CompletedProcess:
    return subprocess.run([CHECK, "--builtin-schema", schema, str(path)], capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("path", GITHUB, ids=lambda p: p.name)
def test_github_workflow_validates(path):
    result = check("vendor.github-workflows", path)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("path", GITLAB, ids=lambda p: p.name)
def test_gitlab_ci_validates(path):
    result = check("vendor.gitlab-ci", path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_validator_rejects_a_broken_template(tmp_path):
    broken = tmp_path / "broken.yml"
    broken.write_text((ROOT / ".github/workflows/restore-drill.yml").read_text().replace("runs-on:", "runs_on:"))
    assert check("vendor.github-workflows", broken).returncode == 1
    broken.write_text((ROOT / ".gitlab-ci.yml").read_text().replace("resource_group: production", "resource_group: [production]"))
    assert check("vendor.gitlab-ci", broken).returncode == 1


@pytest.mark.parametrize("name", sorted(DRILLS))
def test_every_drill_keeps_evidence_and_fails_on_no_tests_collected(name):
    text = DRILLS[name].read_text()
    assert "--restore-report=" in text and "evidence/" in text
    assert 'if [ "$status" -eq 5 ]; then' in text and 'exit "$status"' in text
    assert "pgrestore gate --evidence" in text
    assert "SECRET_ACCESS_KEY" not in text or "secrets.DRILL_AWS_SECRET_ACCESS_KEY" in text or "masked" in text


def test_github_drill_schedule_matrix_artifacts_gate_and_protected_deploy():
    wf = load((ROOT / ".github/workflows/restore-drill.yml").read_text())
    on = wf["on"]
    assert on["schedule"][0]["cron"].split()[4] == "1"  # weekly
    targets = [m["target"] for m in wf["jobs"]["drill"]["strategy"]["matrix"]["include"]]
    assert targets == ["latest", "26 hours ago"]
    upload = next(s for s in wf["jobs"]["drill"]["steps"] if s.get("uses", "").startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and "evidence/" in upload["with"]["path"]
    assert wf["jobs"]["gate"]["needs"] == ["drill"] and wf["jobs"]["deploy"]["needs"] == ["gate"]
    assert wf["jobs"]["deploy"]["environment"] == "production"


def test_github_deploy_fetches_the_newest_successful_drills_evidence():
    wf = load((ROOT / ".github/workflows/deploy.yml").read_text())
    steps = wf["jobs"]["restore-gate"]["steps"]
    download = next(s for s in steps if s.get("uses", "").startswith("actions/download-artifact"))
    assert set(download["with"]) >= {"run-id", "github-token"}
    assert "--status success" in next(s["run"] for s in steps if s.get("id") == "drill")
    assert wf["jobs"]["deploy"] == {**wf["jobs"]["deploy"], "needs": ["restore-gate"], "environment": "production"}


def test_fanout_variants_need_every_drill():
    gh = load((ROOT / ".github/workflows/restore-drill-fanout.yml").read_text())
    assert gh["jobs"]["drill"]["strategy"]["matrix"]["include"] == "${{ fromJSON(vars.DRILL_MATRIX) }}"
    assert gh["jobs"]["gate"]["needs"] == ["drill"]
    gl = load((ROOT / "ci/restore-drill-fanout.gitlab-ci.yml").read_text())
    assert gl["restore-drill"]["parallel"]["matrix"][0]["DRILL_DB"] == ["orders", "billing", "users"]
    assert gl["restore-gate"]["needs"] == ["restore-drill"]


def test_gitlab_gates_on_the_latest_successful_drill_job_artifacts():
    gl = load((ROOT / ".gitlab-ci.yml").read_text())
    script = "\n".join(gl["drill-evidence-gate"]["script"])
    assert "/jobs/artifacts/$CI_DEFAULT_BRANCH/download?job=$job" in script and "JOB-TOKEN: $CI_JOB_TOKEN" in script
    assert gl["restore-gate"]["needs"] == ["restore-drill-latest", "restore-drill-pitr"]
    assert gl["deploy-production"]["environment"]["name"] == "production"
    assert gl[".drill"]["artifacts"]["when"] == "always"


def test_the_projects_own_ci_runs_ci_run_in_debian_12():
    wf = load((ROOT / ".github/workflows/tests.yml").read_text())
    job = wf["jobs"]["test"]
    assert job["container"] == "debian:12"
    assert job["steps"][-1]["run"] == "sh .ci/run"
