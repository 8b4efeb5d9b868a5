"""TLS to a real PostgreSQL server that accepts only TLS (`hostssl` in pg_hba.conf), with a
certificate from a CA made here: what each sslmode connects to and what it refuses."""

from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from ipaddress import IPv4Address
from pathlib import Path

import boto3
import pg8000.native
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ops.pg import LocalPostgres, PostgresUnavailableError, create_schema
from services.ingest.source import (
    PostgresSource,
    SecretsManagerCredentials,
    SourceCredentials,
    SourceOverrides,
    SourceUnavailableError,
    connect,
)
from shared.tables import TABLES

pytestmark = pytest.mark.xdist_group("postgres")

SERVER_IP = "127.0.0.1"  # the only name in the server's certificate
HBA_TLS_ONLY = "local all all trust\nhostssl all all 127.0.0.1/32 scram-sha-256\n"


# -- a CA of our own ------------------------------------------------------------------------
def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def make_ca(common_name: str) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(common_name))
        .issuer_name(_name(common_name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                crl_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    return cert, key


def make_server_cert(
    ca: x509.Certificate, ca_key: ec.EllipticCurvePrivateKey
) -> tuple[bytes, bytes]:
    """A server certificate for 127.0.0.1 only (not `localhost`), and its key, as PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name("ingest test source"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(IPv4Address(SERVER_IP))]), critical=False
        )
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.TraditionalOpenSSL,
        serialization.NoEncryption(),
    )
    return _pem(cert), key_pem


@dataclass(frozen=True)
class TlsServer:
    """A server that accepts only TLS over TCP; `ca_file` is the CA that signed its
    certificate, `wrong_ca_file` a CA that did not."""

    server: LocalPostgres
    ca_file: Path
    wrong_ca_file: Path

    def credentials(self, **changes: object) -> SourceCredentials:
        base = self.server.credentials().model_dump()
        return SourceCredentials.model_validate({**base, **changes})


def _serve_tls_only(server: LocalPostgres, cert_pem: bytes, key_pem: bytes) -> None:
    """Turn TLS on and plain TCP off in a running server (both reload without a restart)."""
    tls = server.folder / "tls"
    tls.mkdir()
    (tls / "server.crt").write_bytes(cert_pem)
    (tls / "server.key").write_bytes(key_pem)
    (tls / "server.key").chmod(0o600)  # PostgreSQL refuses a key others can read
    if os.geteuid() == 0:  # the server runs as `postgres` then (ops/pg.py)
        for path in (tls, tls / "server.crt", tls / "server.key"):
            shutil.chown(path, "postgres")
    admin = connect(server.credentials())
    try:
        admin.run(
            "ALTER SYSTEM SET ssl_cert_file = " + pg8000.native.literal(str(tls / "server.crt"))
        )
        admin.run(
            "ALTER SYSTEM SET ssl_key_file = " + pg8000.native.literal(str(tls / "server.key"))
        )
        admin.run("ALTER SYSTEM SET ssl = on")
        (server.data_dir / "pg_hba.conf").write_text(HBA_TLS_ONLY)
        admin.run("SELECT pg_reload_conf()")
    finally:
        admin.close()


def _wait_for_tls(server: LocalPostgres) -> None:
    """The postmaster reloads on a signal: wait until a new connection gets TLS."""
    require = server.credentials().model_copy(update={"sslmode": "require"})
    deadline = datetime.now(UTC) + timedelta(seconds=20)
    while True:
        try:
            conn = connect(require)
            conn.close()
            return
        except (OSError, pg8000.native.InterfaceError, pg8000.native.DatabaseError):
            if datetime.now(UTC) > deadline:
                raise


@pytest.fixture(scope="module")
def tls_server() -> Iterator[TlsServer]:
    try:
        server = LocalPostgres(Path(tempfile.mkdtemp(prefix="ingest-pg-tls-")))
        server.start()
    except PostgresUnavailableError as exc:
        pytest.skip(str(exc))
    try:
        ca, ca_key = make_ca("ingest test CA")
        wrong_ca, _ = make_ca("some other CA")
        client = Path(tempfile.mkdtemp(prefix="ingest-pg-tls-client-"))
        (client / "ca.pem").write_bytes(_pem(ca))
        (client / "wrong-ca.pem").write_bytes(_pem(wrong_ca))
        _serve_tls_only(server, *make_server_cert(ca, ca_key))
        _wait_for_tls(server)
        schema = connect(server.credentials().model_copy(update={"sslmode": "require"}))
        try:
            create_schema(schema, [TABLES["staff"]])
        finally:
            schema.close()
        yield TlsServer(server, client / "ca.pem", client / "wrong-ca.pem")
    finally:
        server.stop()
        shutil.rmtree(server.folder, ignore_errors=True)


def encrypted(credentials: SourceCredentials) -> bool:
    conn = connect(credentials)
    try:
        ((on,),) = conn.run("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        return bool(on)
    finally:
        conn.close()


def refusal(credentials: SourceCredentials) -> str:
    """What the ingest's source says when it cannot connect."""
    with pytest.raises(SourceUnavailableError) as caught, PostgresSource(lambda: credentials) as s:
        s.read(TABLES["staff"], None)
    message = str(caught.value)
    assert credentials.password not in message
    return message


# -- what connects --------------------------------------------------------------------------
def test_verify_full_with_the_right_ca_connects_encrypted(tls_server):
    creds = tls_server.credentials(sslmode="verify-full", sslrootcert=str(tls_server.ca_file))
    assert encrypted(creds)
    with PostgresSource(lambda: creds) as source:
        assert source.read(TABLES["staff"], None).rows == []


def test_verify_full_trusts_a_ca_given_as_pem_text(tls_server):
    pem = tls_server.ca_file.read_text()
    assert encrypted(tls_server.credentials(sslmode="verify-full", ca_bundle=pem))


def test_require_encrypts_without_a_ca(tls_server):
    assert encrypted(tls_server.credentials(sslmode="require"))
    # not even a wrong CA stops it: require does not verify (libpq's meaning)
    assert encrypted(
        tls_server.credentials(sslmode="require", sslrootcert=str(tls_server.wrong_ca_file))
    )


def test_verify_ca_checks_the_chain_but_not_the_host_name(tls_server):
    if not _is_loopback("localhost"):
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    creds = tls_server.credentials(
        host="localhost", sslmode="verify-ca", sslrootcert=str(tls_server.ca_file)
    )
    assert encrypted(creds)


def test_url_sslmodes_mean_what_libpq_means(tls_server):
    plain = tls_server.server.credentials().url()
    assert encrypted(SourceCredentials.from_url(f"{plain}?sslmode=require"))
    verified = f"{plain}?sslmode=verify-full&sslrootcert={tls_server.ca_file}"
    assert encrypted(SourceCredentials.from_url(verified))
    wrong = f"{plain}?sslmode=verify-full&sslrootcert={tls_server.wrong_ca_file}"
    assert "certificate verify failed" in refusal(SourceCredentials.from_url(wrong))


def test_an_rds_managed_secret_with_the_stack_parameters_connects(tls_server, aws):
    """The secret holds only username and password; host, port, database, sslmode and the CA
    bundle come from the stack (SOURCE_* env vars)."""
    server = tls_server.server
    arn = boto3.client("secretsmanager").create_secret(
        Name="rds!db-0123",
        SecretString=json.dumps({"username": server.user, "password": server.password}),
    )["ARN"]
    overrides = SourceOverrides(
        host=SERVER_IP,
        port=server.port,
        database="postgres",
        sslmode="verify-full",
        sslrootcert=str(tls_server.ca_file),
    )
    with PostgresSource(SecretsManagerCredentials(arn, overrides=overrides)) as source:
        assert source.read(TABLES["staff"], None).rows == []


# -- what is refused ------------------------------------------------------------------------
def test_verify_full_with_a_wrong_ca_is_refused_clearly(tls_server):
    message = refusal(
        tls_server.credentials(sslmode="verify-full", sslrootcert=str(tls_server.wrong_ca_file))
    )
    assert "certificate verify failed" in message
    assert str(tls_server.wrong_ca_file) in message  # which CAs were trusted
    assert f"{SERVER_IP}:{tls_server.server.port}/postgres" in message


def test_verify_full_without_a_ca_uses_the_system_store_and_says_so(tls_server):
    message = refusal(tls_server.credentials(sslmode="verify-full"))
    assert "certificate verify failed" in message
    assert "system trust store" in message


def test_verify_full_to_a_host_name_not_in_the_certificate_is_refused(tls_server):
    if not _is_loopback("localhost"):
        pytest.skip("localhost does not resolve to 127.0.0.1 here")
    message = refusal(
        tls_server.credentials(
            host="localhost", sslmode="verify-full", sslrootcert=str(tls_server.ca_file)
        )
    )
    assert "localhost" in message
    assert "the certificate does not name localhost" in message


def test_disable_is_refused_by_a_tls_only_server(tls_server):
    message = refusal(tls_server.credentials(sslmode="disable"))
    assert "no encryption" in message
    assert "set sslmode" in message


def test_a_missing_ca_bundle_file_fails_every_table_at_once(tls_server, tmp_path):
    missing = tmp_path / "global-bundle.pem"
    message = refusal(tls_server.credentials(sslmode="verify-full", sslrootcert=str(missing)))
    assert str(missing) in message
    assert "No such file" in message


def _is_loopback(name: str) -> bool:
    try:
        infos = socket.getaddrinfo(name, None, socket.AF_INET)
    except socket.gaierror:
        return False
    return any(info[4][0] == SERVER_IP for info in infos)
