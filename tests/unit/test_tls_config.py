"""`[smpp] tls_listen/tls_cert/tls_key` and a carrier's `tls`/`tls_ca`
(CONTRACT §4 "TLS"): what check-config refuses, with the key it names."""

from __future__ import annotations

import os
import ssl
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from smsrouter.router.config import ConfigError, parse_config
from smsrouter.router.tls import TlsConfigError, client_context, server_context
from tests.tls_certs import ServerCert, TestCa

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> TestCa:
    return TestCa(tmp_path_factory.mktemp("pki"))


@pytest.fixture(scope="module")
def server(ca: TestCa) -> ServerCert:
    return ca.issue("smsc")


def errors_of(raw: dict[str, Any], environ: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(ConfigError) as info:
        parse_config(raw, environ=environ or {})
    return dict(info.value.errors)


def carrier(**keys: Any) -> dict[str, Any]:
    return {"carriers": [{"name": "c", "host": "smsc.example", **keys}]}


def test_a_certificate_and_its_key_make_a_tls_listener(server: ServerCert) -> None:
    config = parse_config(
        {"smpp": {"tls_cert": str(server.cert), "tls_key": str(server.key)}}, environ={}
    )
    assert config.smpp.tls_listen == "127.0.0.1:3550"  # IANA's ssmpp port
    context = server_context(config.smpp.tls_cert, config.smpp.tls_key)
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_no_tls_by_default() -> None:
    config = parse_config({}, environ={})
    assert (config.smpp.tls_cert, config.smpp.tls_key) == ("", "")
    assert config.carriers == []


@pytest.mark.parametrize(("given", "missing"), [("tls_cert", "tls_key"), ("tls_key", "tls_cert")])
def test_one_without_the_other_names_the_missing_key(
    server: ServerCert, given: str, missing: str
) -> None:
    path = server.cert if given == "tls_cert" else server.key
    errors = errors_of({"smpp": {given: str(path)}})
    assert errors == {f"smpp.{missing}": f"required with smpp.{given}"}


def test_unreadable_files_name_their_key(tmp_path: Path, server: ServerCert) -> None:
    gone = tmp_path / "gone.pem"
    errors = errors_of({"smpp": {"tls_cert": str(gone), "tls_key": str(server.key)}})
    assert set(errors) == {"smpp.tls_cert"}
    assert str(gone) in errors["smpp.tls_cert"] and "No such file" in errors["smpp.tls_cert"]
    errors = errors_of({"smpp": {"tls_cert": str(server.cert), "tls_key": str(gone)}})
    assert set(errors) == {"smpp.tls_key"}


def test_files_that_are_not_what_they_should_be(tmp_path: Path, server: ServerCert) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate\n")
    errors = errors_of({"smpp": {"tls_cert": str(junk), "tls_key": str(server.key)}})
    assert errors == {"smpp.tls_cert": f"no PEM certificate in {junk}"}
    # The certificate given as the key.
    errors = errors_of({"smpp": {"tls_cert": str(server.cert), "tls_key": str(server.cert)}})
    assert errors == {"smpp.tls_key": f"no PEM private key in {server.cert}"}


def test_a_key_of_another_certificate(ca: TestCa, server: ServerCert) -> None:
    other = ca.issue("other")
    errors = errors_of({"smpp": {"tls_cert": str(server.cert), "tls_key": str(other.key)}})
    assert errors == {"smpp.tls_key": "does not match the certificate of tls_cert"}


def test_an_encrypted_key_is_refused_without_prompting(ca: TestCa) -> None:
    locked = ca.issue_encrypted_key("locked", b"passphrase")
    # stdin closed: OpenSSL's own prompt would fail or hang, the check does neither.
    errors = errors_of({"smpp": {"tls_cert": str(locked.cert), "tls_key": str(locked.key)}})
    assert set(errors) == {"smpp.tls_key"}
    assert "encrypted" in errors["smpp.tls_key"]


@pytest.mark.parametrize("listen", ["3550", "localhost", "[::1]3550", "127.0.0.1:99999"])
def test_a_malformed_tls_listen(listen: str) -> None:
    errors = errors_of({"smpp": {"tls_listen": listen}})
    assert set(errors) == {"smpp.tls_listen"}


def test_tls_listen_must_not_be_the_plain_listener(server: ServerCert) -> None:
    errors = errors_of(
        {
            "smpp": {
                "listen": "127.0.0.1:2775",
                "tls_listen": "127.0.0.1:2775",
                "tls_cert": str(server.cert),
                "tls_key": str(server.key),
            }
        }
    )
    assert errors == {"smpp.tls_listen": "is the address of smpp.listen"}


def test_the_key_from_a_secret_file(tmp_path: Path, ca: TestCa, server: ServerCert) -> None:
    """SMSROUTER_SMPP_TLS_KEY_FILE (the Docker secrets convention, CONTRACT
    §1) gives the key's text: it loads, and stays out of reprs and errors."""
    environ = {
        "SMSROUTER_SMPP_TLS_CERT": str(server.cert),
        "SMSROUTER_SMPP_TLS_KEY_FILE": str(server.key),
    }
    config = parse_config({}, environ=environ)
    pem = server.key.read_text()
    assert config.smpp.tls_key == pem.removesuffix("\n")
    server_context(config.smpp.tls_cert, config.smpp.tls_key)
    assert "PRIVATE KEY" not in repr(config.smpp) and "<pem>" in repr(config.smpp)

    other = ca.issue("wrong-secret")
    environ["SMSROUTER_SMPP_TLS_KEY_FILE"] = str(other.key)
    errors = errors_of({}, environ)
    assert errors == {"smpp.tls_key": "does not match the certificate of tls_cert"}
    assert all("PRIVATE" not in message for message in errors.values())


def test_a_tls_carrier_with_its_ca(ca: TestCa) -> None:
    config = parse_config(carrier(tls=True, tls_ca=str(ca.ca)), environ={})
    assert config.carriers[0].tls
    context = client_context(config.carriers[0].tls_ca)
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname
    assert context.minimum_version == ssl.TLSVersion.TLSv1_2


def test_a_tls_carrier_on_the_system_trust_store() -> None:
    config = parse_config(carrier(tls=True), environ={})
    assert config.carriers[0].tls_ca == ""
    assert client_context("").verify_mode == ssl.CERT_REQUIRED


def test_carrier_ca_errors_name_the_entry(tmp_path: Path, server: ServerCert) -> None:
    junk = tmp_path / "junk-ca.pem"
    junk.write_text("no certificates here\n")
    raw = {
        "carriers": [
            {"name": "a", "tls": True, "tls_ca": str(tmp_path / "missing.pem")},
            {"name": "b", "tls": True, "tls_ca": str(junk)},
            {"name": "c", "tls_ca": str(server.cert)},
            {"name": "d", "tls": True, "tls_ca": str(server.cert)},  # a leaf as anchor: usable
        ]
    }
    errors = errors_of(raw)
    assert set(errors) == {"carriers[0].tls_ca", "carriers[1].tls_ca", "carriers[2].tls_ca"}
    assert "missing.pem" in errors["carriers[0].tls_ca"]
    assert "without tls = true" in errors["carriers[2].tls_ca"]


def test_tls_config_error_names_its_field(tmp_path: Path) -> None:
    with pytest.raises(TlsConfigError) as info:
        client_context(str(tmp_path / "nowhere.pem"))
    assert info.value.field == "tls_ca"


def test_check_config_prints_the_keys(tmp_path: Path, server: ServerCert) -> None:
    config = tmp_path / "router.toml"
    config.write_text(
        f'[smpp]\ntls_listen = "nowhere"\ntls_cert = "{server.cert}"\n'
        f'[[carriers]]\nname = "c"\ntls = true\ntls_ca = "{tmp_path / "none.pem"}"\n'
    )
    result = subprocess.run(
        [sys.executable, "-m", "smsrouter", "check-config", str(config)],
        capture_output=True, text=True, cwd=ROOT, check=False, stdin=subprocess.DEVNULL,
        env={
            **{k: v for k, v in os.environ.items() if not k.startswith("SMSROUTER_")},
            "PYTHONPATH": str(ROOT),
        },
    )  # fmt: skip
    assert result.returncode != 0
    out = result.stdout + result.stderr
    for key in ("smpp.tls_listen", "smpp.tls_key", "carriers[0].tls_ca"):
        assert key in out, out
