"""When base-backup GETs take the lean path (signed by botocore, sent by urllib3) and when the
full client does everything.  No request is sent here: the URL comes from botocore's own
presigning, which is local."""

from __future__ import annotations

import pytest

from pytest_pgrestore.store._s3 import S3Store

ENV = {"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE", "AWS_SECRET_ACCESS_KEY": "secret-example",
       "AWS_ENDPOINT_URL": "http://127.0.0.1:9", "AWS_DEFAULT_REGION": "us-east-1"}


@pytest.fixture(autouse=True)
def no_proxy(monkeypatch):
    for name in ("HTTPS_PROXY", "https_proxy", "HTTP_PROXY", "http_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)


def test_the_url_is_the_clients_own_for_the_bucket():
    with S3Store("backups", "pg/main", env=ENV) as store:
        lean = store._lean()
        assert lean.usable and lean.base == "http://127.0.0.1:9/backups"


def test_a_proxy_in_the_environment_leaves_every_get_to_the_client(monkeypatch):
    monkeypatch.setenv("HTTPS_PROXY", "http://127.0.0.1:3128")
    with S3Store("backups", "pg", env=ENV) as store:
        lean = store._lean()
        assert not lean.usable
        assert lean.get("pg/x", {"Range": "bytes=0-9"}) is None  # nothing sent: the client takes it


def test_without_credentials_the_client_explains(monkeypatch, tmp_path):
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    env = {k: v for k, v in ENV.items() if not k.startswith("AWS_ACCESS") and not k.startswith("AWS_SECRET")}
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    with S3Store("backups", "pg", env=env) as store:
        assert not store._lean().usable
