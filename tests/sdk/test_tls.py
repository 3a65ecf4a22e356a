"""https:// and wss:// with a locally minted certificate."""

from __future__ import annotations

import datetime
import ipaddress
import ssl
from collections.abc import Iterator
from pathlib import Path

import pytest

from sequence_markets import Response, RetryPolicy, Sequence, SequenceConnectionError

from ._fakes import API_KEY, FakeClock
from ._httpserver import LocalHTTPServer
from ._wsserver import ServerConn, WSServer

x509 = pytest.importorskip("cryptography.x509")
from cryptography.hazmat.primitives import hashes, serialization  # noqa: E402
from cryptography.hazmat.primitives.asymmetric import ec  # noqa: E402
from cryptography.x509.oid import NameOID  # noqa: E402


@pytest.fixture(scope="module")
def tls(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server context, client context trusting the server's certificate)."""
    directory: Path = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sequence-test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                key_cert_sign=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / "cert.pem", directory / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(cert_path, key_path)
    client = ssl.create_default_context(cafile=str(cert_path))
    yield server, client


def test_https_keep_alive(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls

    def handler(request: object) -> Response:
        return Response.from_json(200, {"symbol": "X", "tick_size": 0.01})

    with LocalHTTPServer(handler, ssl_context=server_ctx) as server:
        with Sequence(API_KEY, server.base_url, ssl_context=client_ctx) as seq:
            for _ in range(5):
                assert seq.tick_size("X") == 0.01
        assert server.connections == 1


def test_https_rejects_an_untrusted_certificate(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, _ = tls
    no_retry = RetryPolicy(max_retries=0)
    with (
        LocalHTTPServer(lambda r: Response(200), ssl_context=server_ctx) as server,
        Sequence(API_KEY, server.base_url, clock=FakeClock(), retry=no_retry) as seq,
        pytest.raises(SequenceConnectionError) as info,
    ):
        seq.quote("X")
    assert isinstance(info.value.__cause__, ssl.SSLCertVerificationError)


def test_wss_stream(tls: tuple[ssl.SSLContext, ssl.SSLContext]) -> None:
    server_ctx, client_ctx = tls

    def script(conn: ServerConn) -> None:
        conn.handshake()
        channels = conn.expect_subscribe()
        conn.ack(channels)
        conn.send_json({"channel": channels[0], "data": {"bid": 0.5, "blob": "q" * 70_000}})
        conn.expect_close()
        conn.send_close(1000)

    with WSServer(script, ssl_context=server_ctx) as server:
        assert server.url.startswith("wss://")
        with Sequence(API_KEY, server.base_url, ssl_context=client_ctx) as seq:
            (message,) = list(seq.stream(["prices:X"], max_msgs=1, duration_s=10))
    assert message["data"]["bid"] == 0.5
    assert server.conns[0].headers["authorization"] == f"Bearer {API_KEY}"
