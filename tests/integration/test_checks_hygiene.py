"""Backup-store hygiene checks against SeaweedFS, a real S3 server with bucket encryption and policies.

SeaweedFS lets only an Admin identity read a bucket's encryption configuration, and does not
implement GetPublicAccessBlock at all: with the read-only key those checks are skipped naming the
permission, and the public access block is skipped as unsupported, whatever the key.
"""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET

import pytest

from pytest_pgrestore.checks import _hygiene as hygiene
from pytest_pgrestore.errors import CheckSkipped
from pytest_pgrestore.restore._restorer import Restorer

pytestmark = pytest.mark.integration

HYGIENE = """
[tool.pgrestore.hygiene]
encryption = "sse-s3"
min_backups = 2
max_age = "1h"
"""
PUBLIC_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Principal": "*", "Action": "s3:GetObject", "Resource": "arn:aws:s3:::sse-off/*"}]}


@pytest.fixture(scope="module")
def buckets(seaweed, pg15):
    """``sse-on``: default encryption AES256 before the upload; ``sse-off``: none, and a public policy."""
    admin = seaweed.admin_client()
    for bucket in ("sse-on", "sse-off", "sse-kms"):
        seaweed.create_bucket(bucket)
    admin.put_bucket_encryption(Bucket="sse-on", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    admin.put_bucket_encryption(Bucket="sse-kms", ServerSideEncryptionConfiguration={
        "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "backups"}}]})
    for bucket in ("sse-on", "sse-off"):
        seaweed.upload_dir(pg15.repo, bucket, "pg15")
    admin.put_bucket_policy(Bucket="sse-off", Policy=json.dumps(PUBLIC_POLICY))
    admin.close()
    return seaweed


@pytest.fixture
def run_hygiene(pytester, buckets, monkeypatch, workroot):
    pytester.makefile(".toml", pyproject=HYGIENE)  # no Python: the block alone

    def run(bucket: str, *, readonly: bool) -> dict[str, tuple[str, str]]:
        for name, value in buckets.env(readonly=readonly).items():
            monkeypatch.setenv(name, value)
        junit = pytester.path / f"{bucket}-{readonly}.xml"
        result = pytester.runpytest_subprocess(
            "-p", "no:cacheprovider", f"--restore-source=s3://{bucket}/pg15", "--restore-checks=hygiene",
            f"--restore-workdir={workroot / 'runs'}", f"--junitxml={junit}", timeout=120)
        run.output = "\n".join(result.outlines + result.errlines)
        out = {}
        for case in ET.parse(junit).getroot().iter("testcase"):
            outcome, message = "passed", ""
            for tag in ("failure", "error", "skipped"):
                if (node := case.find(tag)) is not None:
                    outcome, message = tag, node.get("message") or ""
            out[case.get("name")] = (outcome, message)
        return out

    return run


def test_bucket_with_default_encryption_passes_the_sse_checks(run_hygiene, seaweed):
    got = run_hygiene("sse-on", readonly=False)  # SeaweedFS: only an Admin key may read the setting
    assert got["bucket_encryption"] == ("passed", ""), run_hygiene.output
    assert got["object_encryption"] == ("passed", "")  # uploaded after the setting: AES256 on every HEAD
    assert got["bucket_policy[not public]"] == ("passed", "")
    assert got["backups[>=2]"] == got["backup_age[<=1h]"] == got["wal_continuity"] == ("passed", "")
    outcome, message = got["public_access_block"]
    assert outcome == "skipped"
    assert message == f"S3 endpoint {seaweed.endpoint} does not implement GetPublicAccessBlock (NotImplemented): " \
                      "this store cannot tell"


def test_twin_bucket_without_default_encryption_fails_naming_the_bucket(run_hygiene):
    got = run_hygiene("sse-off", readonly=False)
    outcome, message = got["bucket_encryption"]
    assert outcome == "failure", run_hygiene.output
    assert message == ("bucket sse-off: expected default encryption sse-s3 or stronger, found none "
                       "(no ServerSideEncryptionConfiguration)")
    outcome, message = got["object_encryption"]
    assert outcome == "failure"
    assert "bucket sse-off: expected objects encrypted at rest with sse-s3 or stronger, found 2 of 2 sampled" in message
    assert "/base.tar (no server-side encryption), wal/000000010000000000000005 (no server-side encryption)" in message
    outcome, message = got["bucket_policy[not public]"]
    assert outcome == "failure" and "bucket sse-off: expected a policy that grants nobody public access" in message


def test_read_only_key_skips_what_it_may_not_read_naming_the_permission(run_hygiene):
    got = run_hygiene("sse-on", readonly=True)
    outcome, message = got["bucket_encryption"]
    assert outcome == "skipped", run_hygiene.output
    assert message == ("the key may not perform GetBucketEncryption on bucket sse-on: the check needs "
                       "s3:GetEncryptionConfiguration on arn:aws:s3:::sse-on (docs/checks.md: the hygiene IAM policy)")
    # a HEAD is s3:GetObject, which the read-only key has: the objects' encryption is still proven
    assert got["object_encryption"] == ("passed", "")
    assert got["public_access_block"][0] == "skipped"
    assert got["wal_continuity"] == ("passed", "")


def test_required_level_kms_and_the_client_stays_read_only(buckets):
    env = buckets.env(readonly=False)
    on = Restorer(_settings("s3://sse-on/pg15", env)).store()
    kms = Restorer(_settings("s3://sse-kms/none", env)).store()
    try:
        weak = hygiene.bucket_encryption(on, "sse-kms")
        assert not weak.ok
        assert weak.detail == "bucket sse-on: expected default encryption sse-kms or stronger, found AES256 (sse-s3)"
        assert hygiene.bucket_encryption(kms, "sse-kms").detail == \
            "bucket sse-kms: default encryption aws:kms (key backups) (sse-kms)"
        with pytest.raises(PermissionError, match="never writes to a backup store: S3 DeleteBucketEncryption"):
            on._client.delete_bucket_encryption(Bucket="sse-on")
        with pytest.raises(CheckSkipped, match="not in S3"):
            hygiene.public_access_block(Restorer(_settings("/tmp", {})).store())
    finally:
        on.close()
        kms.close()


def _settings(source: str, env: dict):
    from pytest_pgrestore.settings._options import resolve_settings

    return resolve_settings(cli={"source": source}, env=env, ini={})
