"""How the ingest is told to reach the source: sslmode meanings, the secret with the stack's
parameters over it, and errors that name what is wrong without echoing the password."""

from __future__ import annotations

import json
import ssl

import boto3
import pytest

from services.ingest.app import credentials_from
from services.ingest.settings import IngestSettings, SettingsError
from services.ingest.source import (
    PostgresSource,
    SecretsManagerCredentials,
    SourceConfigError,
    SourceCredentials,
    SourceOverrides,
    SourceUnavailableError,
    ssl_context,
)
from shared.tables import TABLES

PASSWORD = "s3cr3t-Pa55"
URL = f"postgresql://tote:{PASSWORD}@db.example:5432/totesys"
PEM = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"


def secret(fields: dict[str, object]) -> str:
    client = boto3.client("secretsmanager")
    return client.create_secret(Name="source", SecretString=json.dumps(fields))["ARN"]


# -- sslmode: libpq's meanings --------------------------------------------------------------
def test_no_sslmode_is_libpqs_prefer_and_disable_never_asks_for_tls():
    assert SourceCredentials.from_url(URL).sslmode == "prefer"
    assert ssl_context(SourceCredentials.from_url(URL)) is None  # pg8000: try TLS, else plain
    assert ssl_context(SourceCredentials.from_url(f"{URL}?sslmode=disable")) is False


def test_require_encrypts_without_verifying():
    context = ssl_context(SourceCredentials.from_url(f"{URL}?sslmode=require"))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_NONE
    assert context.check_hostname is False


@pytest.mark.parametrize(("mode", "host_checked"), [("verify-ca", False), ("verify-full", True)])
def test_verify_modes_verify_the_chain_and_verify_full_the_host(mode, host_checked):
    context = ssl_context(SourceCredentials.from_url(f"{URL}?sslmode={mode}"))
    assert isinstance(context, ssl.SSLContext)
    assert context.verify_mode == ssl.CERT_REQUIRED
    assert context.check_hostname is host_checked
    assert context.minimum_version >= ssl.TLSVersion.TLSv1_2


def test_the_url_names_a_ca_file_and_round_trips():
    url = f"{URL}?sslmode=verify-full&sslrootcert=/var/task/certs/global-bundle.pem"
    creds = SourceCredentials.from_url(url)
    assert (creds.sslmode, creds.sslrootcert) == (
        "verify-full",
        "/var/task/certs/global-bundle.pem",
    )
    assert SourceCredentials.from_url(creds.url()) == creds


@pytest.mark.parametrize(
    ("query", "named"),
    [
        ("sslmode=verify", "sslmode"),
        ("sslmode=allow", "sslmode"),
        ("sslmod=require", "sslmod"),
        ("connect_timeout=5", "connect_timeout"),
    ],
)
def test_a_bad_url_parameter_is_named_without_the_password(query, named):
    with pytest.raises(SourceConfigError, match=named) as caught:
        SourceCredentials.from_url(f"{URL}?{query}")
    assert PASSWORD not in str(caught.value)


def test_a_bad_port_is_refused():
    with pytest.raises(SourceConfigError, match="port"):
        SourceCredentials.from_url(f"postgresql://u:{PASSWORD}@h:99999/d")


def test_a_missing_ca_file_is_a_config_error_naming_the_file(tmp_path):
    missing = tmp_path / "global-bundle.pem"
    creds = SourceCredentials.from_url(f"{URL}?sslmode=verify-full&sslrootcert={missing}")
    with pytest.raises(SourceConfigError, match=r"global-bundle\.pem"):
        ssl_context(creds)


def test_a_ca_file_without_certificates_is_refused(tmp_path):
    junk = tmp_path / "ca.pem"
    junk.write_text("not a certificate\n")
    creds = SourceCredentials.from_url(f"{URL}?sslmode=verify-ca&sslrootcert={junk}")
    with pytest.raises(SourceConfigError, match=r"ca\.pem \(sslrootcert\) cannot be used"):
        ssl_context(creds)


# -- the secret, with the stack's parameters over it ----------------------------------------
def test_an_rds_managed_secret_takes_host_and_database_from_the_parameters(aws):
    arn = secret({"username": "ingest", "password": PASSWORD})
    overrides = SourceOverrides(host="db.rds", database="totesys", sslmode="verify-full")
    creds = SecretsManagerCredentials(arn, overrides=overrides)()
    assert (creds.host, creds.port, creds.database, creds.user) == (
        "db.rds",
        5432,
        "totesys",
        "ingest",
    )
    assert creds.sslmode == "verify-full"


def test_a_given_parameter_wins_over_the_secret_and_an_absent_one_does_not(aws):
    arn = secret(
        {
            "host": "old.example",
            "port": 5433,
            "dbname": "from_secret",
            "username": "u",
            "password": PASSWORD,
            "sslmode": "require",
            "ca_bundle": PEM,
        }
    )
    creds = SecretsManagerCredentials(
        arn, overrides=SourceOverrides(host="proxy.example", database="given")
    )()
    assert (creds.host, creds.port, creds.database) == ("proxy.example", 5433, "given")
    assert (creds.sslmode, creds.ca_bundle) == ("require", PEM)


def test_an_rds_managed_secret_without_a_host_says_which_parameter_is_missing(aws):
    arn = secret({"username": "ingest", "password": PASSWORD})
    with pytest.raises(SourceConfigError) as caught:
        SecretsManagerCredentials(arn)()
    message = str(caught.value)
    assert "host: Field required (or set SOURCE_HOST)" in message
    assert "database: Field required (or set SOURCE_DATABASE)" in message
    assert PASSWORD not in message


def test_a_ca_bundle_that_is_not_pem_is_refused_without_echoing_it(aws):
    arn = secret(
        {"host": "h", "dbname": "d", "username": "u", "password": PASSWORD, "ca_bundle": "/x.pem"}
    )
    with pytest.raises(SourceConfigError, match=r"ca_bundle: .*use sslrootcert") as caught:
        SecretsManagerCredentials(arn)()
    assert PASSWORD not in str(caught.value)


def test_a_bad_secret_fails_every_table_at_once_not_one_by_one(aws):
    arn = secret({"username": "ingest", "password": PASSWORD})
    with (
        pytest.raises(SourceUnavailableError, match="SOURCE_HOST"),
        PostgresSource(SecretsManagerCredentials(arn)) as source,
    ):
        source.read(TABLES["staff"], None)


# -- settings: the SOURCE_* variables the stack sets ----------------------------------------
ARN = "arn:aws:secretsmanager:eu-west-2:123456789012:secret:rds!db-1-AbCdEf"


def test_the_stacks_source_variables_become_overrides_and_empty_means_not_given():
    settings = IngestSettings.from_env(
        {
            "BUCKET_NAME": "b-1",
            "SOURCE_SECRET_ARN": ARN,
            "SOURCE_HOST": "db.rds",
            "SOURCE_PORT": "",
            "SOURCE_DATABASE": "totesys",
            "SOURCE_SSLMODE": "verify-full",
            "SOURCE_CA_BUNDLE": "services/ingest/certs/global-bundle.pem",
        }
    )
    assert settings.source_overrides() == SourceOverrides(
        host="db.rds",
        database="totesys",
        sslmode="verify-full",
        sslrootcert="services/ingest/certs/global-bundle.pem",
    )
    reader = credentials_from(settings)
    assert isinstance(reader, SecretsManagerCredentials)
    assert reader.overrides == settings.source_overrides()


@pytest.mark.parametrize(
    ("name", "value"), [("SOURCE_SSLMODE", "verify"), ("SOURCE_PORT", "0"), ("SOURCE_PORT", "x")]
)
def test_a_bad_source_variable_is_named(name, value):
    with pytest.raises(SettingsError, match=name):
        IngestSettings.from_env({"BUCKET_NAME": "b-1", "SOURCE_SECRET_ARN": ARN, name: value})


def test_the_source_variables_apply_over_a_local_url_too():
    settings = IngestSettings.from_env(
        {"BUCKET_NAME": "b-1", "SOURCE_URL": URL, "SOURCE_SSLMODE": "require"}
    )
    creds = credentials_from(settings)()
    assert (creds.host, creds.sslmode) == ("db.example", "require")


def test_a_bad_url_with_its_overrides_fails_the_settings_without_the_password():
    with pytest.raises(SettingsError, match="sslrootcert") as caught:
        IngestSettings.from_env(
            {"BUCKET_NAME": "b-1", "SOURCE_URL": f"{URL}?sslrootcert=a.pem&x=1"}
        )
    assert PASSWORD not in str(caught.value)


def test_a_relative_ca_bundle_path_is_in_the_lambda_bundle():
    env = {"BUCKET_NAME": "b-1", "SOURCE_SECRET_ARN": ARN, "LAMBDA_TASK_ROOT": "/var/task"}
    relative = IngestSettings.from_env({**env, "SOURCE_CA_BUNDLE": "certs/global-bundle.pem"})
    assert relative.source_overrides().sslrootcert == "/var/task/certs/global-bundle.pem"
    absolute = IngestSettings.from_env({**env, "SOURCE_CA_BUNDLE": "/opt/ca.pem"})
    assert absolute.source_overrides().sslrootcert == "/opt/ca.pem"
