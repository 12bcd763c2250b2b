"""S3 settings resolved from AWS-style variables: pure, no client, no network."""

from __future__ import annotations

import pickle

import pytest

from pytest_pgrestore.errors import UsageError
from pytest_pgrestore.store._s3 import Sourced, s3_settings_from_env


def test_nothing_set_leaves_everything_to_aws_defaults():
    s = s3_settings_from_env({})
    assert s.endpoint_url.value is None
    assert s.region == Sourced(None, "AWS profile, else us-east-1")
    assert s.path_style.value is False
    assert s.ca_bundle.value is None
    assert s.profile.value is None
    assert s.access_key_id is None and s.secret_access_key is None
    assert s.credentials_source == "AWS default chain"


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AWS_ENDPOINT": "http://walg:9000"}, Sourced("http://walg:9000", "env AWS_ENDPOINT")),
        (
            {"AWS_ENDPOINT": "http://walg:9000", "AWS_ENDPOINT_URL": "http://generic:1"},
            Sourced("http://generic:1", "env AWS_ENDPOINT_URL"),
        ),
        (
            {
                "AWS_ENDPOINT": "http://a",
                "AWS_ENDPOINT_URL": "http://b",
                "AWS_ENDPOINT_URL_S3": "https://s3only/",
            },
            Sourced("https://s3only", "env AWS_ENDPOINT_URL_S3"),
        ),
        (
            {"AWS_ENDPOINT_URL_S3": "", "AWS_ENDPOINT_URL": "http://b"},
            Sourced("http://b", "env AWS_ENDPOINT_URL"),
        ),
    ],
)
def test_endpoint_precedence(env, expected):
    assert s3_settings_from_env(env).endpoint_url == expected


def test_endpoint_without_scheme_names_the_variable():
    with pytest.raises(UsageError, match="AWS_ENDPOINT_URL") as info:
        s3_settings_from_env({"AWS_ENDPOINT_URL": "minio:9000"})
    assert "http://" in info.value.fix


@pytest.mark.parametrize(
    ("env", "value", "source"),
    [
        ({}, False, "default (virtual-hosted when the bucket name allows)"),
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:9000"}, True, "custom endpoint (env AWS_ENDPOINT_URL)"),
        ({"AWS_S3_FORCE_PATH_STYLE": "true"}, True, "env AWS_S3_FORCE_PATH_STYLE"),
        ({"AWS_S3_FORCE_PATH_STYLE": "TRUE"}, True, "env AWS_S3_FORCE_PATH_STYLE"),
        # an explicit "false" wins over the custom endpoint (a MinIO behind virtual-host DNS)
        (
            {"AWS_S3_FORCE_PATH_STYLE": "false", "AWS_ENDPOINT": "http://m"},
            False,
            "env AWS_S3_FORCE_PATH_STYLE",
        ),
    ],
)
def test_path_style(env, value, source):
    assert s3_settings_from_env(env).path_style == Sourced(value, source)


def test_bad_boolean_names_variable_and_accepted_values():
    with pytest.raises(UsageError, match="AWS_S3_FORCE_PATH_STYLE='maybe'") as info:
        s3_settings_from_env({"AWS_S3_FORCE_PATH_STYLE": "maybe"})
    assert "true or false" in info.value.fix


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({"AWS_REGION": "eu-west-1"}, Sourced("eu-west-1", "env AWS_REGION")),  # WAL-G's name, mapped
        ({"AWS_DEFAULT_REGION": "eu-central-1"}, Sourced("eu-central-1", "env AWS_DEFAULT_REGION")),
        (
            {"AWS_REGION": "eu-west-1", "AWS_DEFAULT_REGION": "eu-central-1"},
            Sourced("eu-central-1", "env AWS_DEFAULT_REGION"),
        ),
        ({"AWS_DEFAULT_REGION": "  ", "AWS_REGION": "ap-south-1\n"}, Sourced("ap-south-1", "env AWS_REGION")),
    ],
)
def test_region_mapping(env, expected):
    assert s3_settings_from_env(env).region == expected


def test_ca_bundle_and_profile_carry_their_source():
    s = s3_settings_from_env({"AWS_CA_BUNDLE": "/etc/ca.pem", "AWS_PROFILE": "backup"})
    assert s.ca_bundle == Sourced("/etc/ca.pem", "env AWS_CA_BUNDLE")
    assert s.profile == Sourced("backup", "env AWS_PROFILE")


def test_credentials_from_env_are_kept_but_never_shown():
    env = {
        "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
        "AWS_SECRET_ACCESS_KEY": "s3cr3t/value",
        "AWS_SESSION_TOKEN": "tok",
    }
    s = s3_settings_from_env(env)
    assert (s.access_key_id, s.secret_access_key, s.session_token) == ("AKIDEXAMPLE", "s3cr3t/value", "tok")
    assert s.credentials_source == "env AWS_ACCESS_KEY_ID"
    for text in (repr(s), str(s)):
        assert "s3cr3t" not in text and "tok" not in text and "AKIDEXAMPLE" not in text


def test_session_token_alone_is_not_a_credential():
    assert s3_settings_from_env({"AWS_SESSION_TOKEN": "tok"}).session_token is None


@pytest.mark.parametrize(
    ("env", "missing"),
    [
        ({"AWS_ACCESS_KEY_ID": "AKIDEXAMPLE"}, "AWS_SECRET_ACCESS_KEY"),
        ({"AWS_SECRET_ACCESS_KEY": "sekrit-value"}, "AWS_ACCESS_KEY_ID"),
    ],
)
def test_half_a_key_pair_is_a_usage_error(env, missing):
    with pytest.raises(UsageError, match=f"{missing} is not") as info:
        s3_settings_from_env(env)
    assert "sekrit" not in str(info.value) and "AKIDEXAMPLE" not in str(info.value)


def test_defaults_to_os_environ(monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:1")
    assert s3_settings_from_env().endpoint_url.source == "env AWS_ENDPOINT_URL"


def test_usage_errors_pickle():
    with pytest.raises(UsageError) as info:
        s3_settings_from_env({"AWS_S3_FORCE_PATH_STYLE": "maybe"})
    clone = pickle.loads(pickle.dumps(info.value))
    assert str(clone) == str(info.value)


@pytest.mark.parametrize("url", [
    "http://drill:s3cr3t-pw@127.0.0.1:8333",
    "https://AKIAEXAMPLE:s3cr3t-pw@minio.internal/",
    "drill:s3cr3t-pw@127.0.0.1:8333",  # no scheme: still never echoed
    "http://s3cr3t-pw@127.0.0.1:8333/",
])
@pytest.mark.parametrize("var", ["AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT"])
def test_an_endpoint_with_credentials_is_refused_without_showing_them(url, var):
    with pytest.raises(UsageError) as err:
        s3_settings_from_env({var: url})
    text = str(err.value)
    assert "s3cr3t-pw" not in text and "drill" not in text and "AKIAEXAMPLE" not in text
    assert f"the S3 endpoint in env {var} carries credentials" in text


def test_twin_the_same_endpoint_without_credentials_is_taken():
    settings = s3_settings_from_env({"AWS_ENDPOINT_URL": "http://127.0.0.1:8333"})
    assert settings.endpoint_url.value == "http://127.0.0.1:8333"
