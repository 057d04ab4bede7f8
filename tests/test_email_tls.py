"""SMTP the way production runs it: STARTTLS or implicit TLS, with AUTH, against aiosmtpd."""

from __future__ import annotations

import ipaddress
import ssl
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from backend.config import Secret

from .email_helpers import Inbox, logs, register, sessionmaker_of, start_server, worker_of
from .servers import free_port

USER, PASSWORD = "mailer", "s3cret-password"


def self_signed(directory: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that the test trusts through SSL_CERT_FILE."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
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
    return cert_path, key_path


def authenticator(
    _server: Any, _session: Any, _envelope: Any, _mechanism: str, data: Any
) -> AuthResult:
    ok = isinstance(data, LoginPassword) and (data.login, data.password) == (
        USER.encode(), PASSWORD.encode(),
    )  # fmt: skip
    return AuthResult(success=ok, handled=False)


@pytest.fixture(params=["starttls", "tls"])
def tls_inbox(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Inbox]]:
    cert, key = self_signed(tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(cert))
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    inbox = Inbox(port=free_port())
    options: dict[str, Any] = {"authenticator": authenticator, "auth_required": True}
    if request.param == "starttls":
        options.update(tls_context=context, require_starttls=True)
    else:
        # aiosmtpd does not see implicit TLS as TLS, and would hide AUTH without this
        options.update(ssl_context=context, auth_require_tls=False)
    controller = Controller(inbox, hostname="127.0.0.1", port=inbox.port, **options)
    controller.start()
    try:
        yield request.param, inbox
    finally:
        controller.stop()


# implicit TLS is TLS, whatever aiosmtpd's check says
@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS:UserWarning")
@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_starttls_or_tls_with_auth_delivers_and_a_wrong_password_fails_for_good(
    database_url: str, tmp_path: Path, tls_inbox: tuple[str, Inbox]
) -> None:
    mode, inbox = tls_inbox
    smtp = {
        "smtp_host": "127.0.0.1", "smtp_port": inbox.port, "smtp_username": USER,
        "smtp_starttls": mode == "starttls", "smtp_tls": mode == "tls",
    }  # fmt: skip
    for password, expected in ((PASSWORD, "sent"), ("wrong", "failed")):
        server = await start_server(database_url, tmp_path, smtp_password=Secret(password), **smtp)
        try:
            await register(server, "alice", "alice@example.com")
            await server.publish(["alice"], title=f"over {mode}")
            await worker_of(server).drain()
            row = (await logs(sessionmaker_of(server)))[-1]
            assert row.status == expected, row.failed_reason
        finally:
            await server.close()
    assert row.failed_reason is not None and row.failed_reason.startswith("535")
    assert [m["Subject"] for _, m in inbox.messages] == [f"over {mode}"]
