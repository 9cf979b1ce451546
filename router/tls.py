"""TLS contexts from the config's PEM values (CONTRACT §4 "TLS").

One place for `check-config` and the daemon: the config check builds the
same context the listener and the carrier binds use, so a config that
passes the check loads. Sockets stay in `connectors/`; this only reads
files into `ssl.SSLContext` objects.

A value is a file's path, or the PEM text itself: the secrets convention
(`SMSROUTER_SMPP_TLS_KEY_FILE=/run/secrets/smpp.key`, CONTRACT §1) puts the
file's contents in the key. OpenSSL reads a key only from a file, so PEM
text is handed to it through an anonymous memory file (memfd, Linux): a
private key never touches a disk. Errors name the key's field and, for a
path, the path; never the text.
"""

from __future__ import annotations

import os
import ssl

# SMPP carries passwords in bind PDUs: nothing older than TLS 1.2
# (RFC 8996 deprecates 1.0 and 1.1).
MINIMUM_VERSION = ssl.TLSVersion.TLSv1_2

_PEM = "-----BEGIN"


class TlsConfigError(Exception):
    """A certificate, key or CA bundle that cannot be used; `field` is the
    config key it came from (``tls_cert``, ``tls_key``, ``tls_ca``)."""

    def __init__(self, field: str, detail: str) -> None:
        super().__init__(f"{field}: {detail}")
        self.field = field
        self.detail = detail


def is_pem_text(value: str) -> bool:
    """Is this config value the PEM text itself rather than a path?"""
    return value.lstrip().startswith(_PEM)


def _where(value: str) -> str:
    return "the PEM text given" if is_pem_text(value) else value


def _read(field: str, value: str) -> str:
    """The PEM text a value names (or is); TlsConfigError if unreadable."""
    if is_pem_text(value):
        return value
    try:
        with open(value, encoding="ascii") as f:
            return f.read()
    except OSError as exc:
        raise TlsConfigError(field, f"cannot read {value}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise TlsConfigError(field, f"{value} is not PEM text") from None


def _no_password() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for the
    # passphrase of an encrypted key, and a daemon would hang there.
    raise ValueError("encrypted")


def _memory_file(field: str, text: str) -> int:
    """An anonymous in-memory file holding `text`, its descriptor."""
    if not hasattr(os, "memfd_create"):
        raise TlsConfigError(field, "PEM text needs Linux (memfd); give a file's path instead")
    fd = os.memfd_create("smsrouter-tls", os.MFD_CLOEXEC)
    data = memoryview(text.encode("ascii", "replace"))
    while data:
        data = data[os.write(fd, data) :]
    return fd


def _load_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    fds: list[int] = []
    try:
        paths: list[str] = []
        for field, value in (("tls_cert", cert), ("tls_key", key)):
            if is_pem_text(value):
                fd = _memory_file(field, value)
                fds.append(fd)
                paths.append(f"/proc/self/fd/{fd}")
            else:
                paths.append(value)
        context.load_cert_chain(paths[0], paths[1], password=_no_password)
    finally:
        for fd in fds:
            os.close(fd)


def server_context(cert: str, key: str) -> ssl.SSLContext:
    """The server side of the partner TLS listener: `cert` (a chain, leaf
    first) and its private `key`. TlsConfigError names the bad one."""
    cert_text = _read("tls_cert", cert)
    key_text = _read("tls_key", key)
    if "-----BEGIN CERTIFICATE-----" not in cert_text:
        raise TlsConfigError("tls_cert", f"no PEM certificate in {_where(cert)}")
    if "PRIVATE KEY-----" not in key_text:
        raise TlsConfigError("tls_key", f"no PEM private key in {_where(key)}")
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = MINIMUM_VERSION
    try:
        _load_pair(context, cert, key)
    except ValueError:
        raise TlsConfigError(
            "tls_key", f"{_where(key)} is encrypted; give the key without a passphrase"
        ) from None
    except ssl.SSLError as exc:
        if exc.reason == "KEY_VALUES_MISMATCH":
            raise TlsConfigError("tls_key", "does not match the certificate of tls_cert") from None
        # Which of the two OpenSSL could not parse, it does not say: try
        # the certificate alone.
        raise TlsConfigError(_unparsable(cert_text), f"not usable: {exc.reason or exc}") from None
    return context


def _unparsable(cert_text: str) -> str:
    """The field to blame when a certificate and key do not load."""
    probe = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    try:
        probe.load_verify_locations(cadata=cert_text)
    except ssl.SSLError:
        return "tls_cert"
    return "tls_key"


def client_context(ca: str = "") -> ssl.SSLContext:
    """The client side towards a carrier: its certificate is verified
    against `ca` (a PEM bundle), or the system's trust store when empty,
    and must name the host the bind connects to."""
    if not ca:
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    else:
        text = _read("tls_ca", ca)
        try:
            context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cadata=text)
        except ssl.SSLError as exc:
            raise TlsConfigError("tls_ca", f"not usable: {exc.reason or exc}") from None
        if not context.cert_store_stats()["x509"]:
            raise TlsConfigError("tls_ca", f"no PEM certificate in {_where(ca)}")
    context.minimum_version = MINIMUM_VERSION
    return context
