"""Private callback addresses in every spelling (CONTRACT §11 "Callback
addresses"): router.netaddr, and check-config refusing them by key."""

from __future__ import annotations

import pytest

from smsrouter.connectors.webhooks import is_private_address as reexported
from smsrouter.router.config import ConfigError, parse_config
from smsrouter.router.netaddr import is_private_address, url_refusal

# How a client reads each: glibc's inet_aton takes one to four parts, each
# decimal, 0-prefixed octal or 0x-prefixed hex; the last part fills the
# remaining bytes.
LOOPBACK_SPELLINGS = [
    "127.0.0.1",
    "2130706433",  # one 32-bit decimal
    "127.1",  # a.b: b fills 24 bits
    "127.0.1",  # a.b.c: c fills 16 bits
    "0x7f.1",
    "0x7F.0.0.1",
    "0177.0.0.1",  # octal
    "0177.1",
    "0x7f000001",
    "017700000001",  # one octal number
    "127.0.0.1.",  # absolute form
    "127.255.255.254",
    "%31%32%37.0.0.1",  # percent-encoded, as a browser-like client decodes it
    "localhost",
    "localhost.",
    "LOCALHOST",
    "LocalHost.",
    "foo.localhost",
    "a.b.localhost.",
    "localhost.localdomain",
    "ip6-localhost",
    "[::1]",
    "::1",
    "[0:0:0:0:0:0:0:1]",
    "[0000:0000:0000:0000:0000:0000:0000:0001]",
    "[::ffff:127.0.0.1]",  # IPv4-mapped
    "[::ffff:7f00:1]",
    "[::127.0.0.1]",  # IPv4-compatible (deprecated)
    "[::7f00:1]",
    "[64:ff9b::127.0.0.1]",  # NAT64 to loopback
    "[2002:7f00:1::1]",  # 6to4 of 127.0.0.1
]

OTHER_PRIVATE = [
    "0.0.0.0",
    "0",
    "0x0",
    "[::]",
    "10.0.0.1",
    "10.255.255.255",
    "012.1",  # 10.0.0.1
    "167772161",  # 10.0.0.1
    "172.16.0.1",
    "172.31.255.255",
    "192.168.1.1",
    "0xc0a80101",  # 192.168.1.1
    "169.254.169.254",  # link-local: cloud metadata
    "0xa9fea9fe",
    "100.64.0.1",  # shared address space, RFC 6598
    "100.127.255.254",
    "192.0.0.8",
    "198.18.0.1",  # benchmarking
    "240.0.0.1",  # reserved
    "255.255.255.255",
    "224.0.0.1",  # multicast
    "[fc00::1]",
    "[fd12:3456::1]",
    "[fe80::1]",
    "[fe80::1%25eth0]",
    "[febf::1]",
    "[fec0::1]",  # site-local (deprecated)
    "[ff02::1]",
    "[::ffff:10.0.0.1]",
    "[::ffff:192.168.0.1]",
    "[64:ff9b:1::1]",  # NAT64 local use
    "",  # no host at all
    "127.0.0.1 x",  # inet_aton stops at a space: refused, not guessed at
    "a\tb",
    "[not-v6:]",
]

PUBLIC = [
    "8.8.8.8",
    "8.8.8.8.",
    "134744072",  # 8.8.8.8
    "0x8.0x8.0x8.0x8",
    "1.1.1.1",
    "172.32.0.1",  # just past 172.16/12
    "100.128.0.1",  # just past 100.64/10
    "192.169.0.1",
    "example.com",
    "EXAMPLE.com.",
    "api.example.com",
    "localhost.example.com",  # a name under example.com, not under localhost
    "notlocalhost",
    "xn--e1afmkfd.xn--p1ai",
    "пример.рф",
    "[2001:4860:4860::8888]",
    "2001:4860:4860::8888",
    "[::ffff:8.8.8.8]",
    "[64:ff9b::8.8.8.8]",
    "[2002:808:808::1]",
]


@pytest.mark.parametrize("host", LOOPBACK_SPELLINGS + OTHER_PRIVATE)
def test_private_in_every_spelling(host: str) -> None:
    assert is_private_address(host) is True


@pytest.mark.parametrize("host", PUBLIC)
def test_public_addresses_and_names_pass(host: str) -> None:
    assert is_private_address(host) is False


def test_the_webhook_channel_uses_the_same_function() -> None:
    assert reexported is is_private_address


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433/dlr",
        "http://127.1/x",
        "http://0x7f.1/",
        "http://0177.0.0.1/",
        "http://0x7f000001:8080/dlr",
        "http://localhost./",
        "https://LOCALHOST/",
        "http://foo.localhost/",
        "http://[::1]:9000/",
        "http://[0:0:0:0:0:0:0:1]/",
        "http://[::ffff:127.0.0.1]/",
        "http://[::ffff:7f00:1]/",
        "http://[::127.0.0.1]/",
        "http://0.0.0.0/",
        "http://[::]/",
        "http://user:pass@10.0.0.1/",
        "http://169.254.169.254/latest/meta-data",
        "http://%31%32%37.0.0.1/",
    ],
)
def test_a_url_to_a_private_host_is_refused(url: str) -> None:
    refusal = url_refusal(url)
    assert refusal is not None and refusal.endswith("is a private network address")
    # Without deny_private_networks only its form is judged.
    assert url_refusal(url, deny_private=False) is None


@pytest.mark.parametrize(
    "url",
    ["http://[::1/", "http:///x", "http://", "ftp://example.com/", "example.com/x", "", "http:x"],
)
def test_a_url_yarl_cannot_parse_or_without_a_host_is_refused(url: str) -> None:
    assert url_refusal(url) is not None
    assert url_refusal(url, deny_private=False) is not None


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/dlr",
        "http://8.8.8.8:8080/x",
        "http://[2001:4860:4860::8888]/",
        "http://127.0.0.1:80@example.com/",  # the host is example.com
    ],
)
def test_a_public_url_passes(url: str) -> None:
    assert url_refusal(url) is None


# ---------------------------------------------------------------- check-config


def _config(deny: bool, **account: str) -> dict[str, object]:
    return {
        "webhooks": {"deny_private_networks": deny},
        "accounts": [{"id": "a", **account}],
    }


@pytest.mark.parametrize("key", ["callback_url", "inbound_url"])
@pytest.mark.parametrize("url", ["http://127.1/x", "http://0x7f.1/", "http://[::ffff:7f00:1]/"])
def test_check_config_refuses_a_private_account_url_by_key(key: str, url: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config(True, **{key: url}), environ={})
    ((path, message),) = err.value.errors
    assert path == f"accounts[0].{key}"
    assert "private network address" in message and "deny_private_networks" in message


def test_check_config_names_the_entry_by_its_place_in_the_file() -> None:
    raw = _config(True, callback_url="https://example.com/dlr")
    raw["accounts"].append({"id": "b", "callback_url": "http://2130706433/"})  # type: ignore[attr-defined]
    with pytest.raises(ConfigError) as err:
        parse_config(raw, environ={})
    assert [path for path, _ in err.value.errors] == ["accounts[1].callback_url"]


def test_check_config_takes_private_urls_when_private_networks_are_allowed() -> None:
    config = parse_config(_config(False, callback_url="http://127.1/x"), environ={})
    assert config.accounts[0].callback_url == "http://127.1/x"


def test_check_config_takes_public_urls_with_deny_private_networks() -> None:
    config = parse_config(
        _config(True, callback_url="https://example.com/dlr", inbound_url="http://8.8.8.8/mo"),
        environ={},
    )
    assert config.webhooks.deny_private_networks is True


def test_check_config_refuses_a_url_yarl_cannot_parse_with_deny_private_networks() -> None:
    with pytest.raises(ConfigError) as err:
        parse_config(_config(True, callback_url="http://[::1/x"), environ={})
    assert [path for path, _ in err.value.errors] == ["accounts[0].callback_url"]
