"""Which callback hosts are private, read the way a client would read them.

With `[webhooks] deny_private_networks` the router must not call back into
its own network (CONTRACT §11 "Callback addresses"), and an address has
many spellings besides the dotted quad: glibc's inet_aton, which
getaddrinfo and so every client falls back to, reads `127.1`, `0x7f.1`,
`0177.0.0.1` and `2130706433` as 127.0.0.1 (POSIX inet_addr), a trailing
dot makes a name absolute (`localhost.`), and IPv6 can carry an IPv4
address inside it (`::ffff:127.0.0.1`, RFC 4291 §2.5.5). Each is refused
here, in one pure function that the API, check-config and the webhook
client share; names are judged again by their DNS answers when a callback
is sent (connectors/http_client.py).
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import unquote

from yarl import URL

__all__ = ["is_private_address", "url_refusal"]

# Names that mean this host: RFC 6761 §6.3 reserves `localhost` and every
# name under it; the others are the loopback names of Debian's and Red
# Hat's /etc/hosts, refused before any lookup.
_LOOPBACK_NAMES = frozenset(
    {
        "localhost",
        "localhost.localdomain",
        "localhost4",
        "localhost4.localdomain4",
        "localhost6",
        "localhost6.localdomain6",
        "ip6-localhost",
        "ip6-loopback",
    }
)

# The special-purpose ranges (RFC 6890 and the IANA registries it set up)
# written out, so that the answer does not depend on the Python version's
# idea of is_global, which has changed between releases; multicast is
# "global" to Python but never a webhook receiver.
_REFUSED_V4 = tuple(
    ipaddress.IPv4Network(net)
    for net in (
        "0.0.0.0/8",  # "this network", 0.0.0.0 included
        "10.0.0.0/8",
        "100.64.0.0/10",  # shared address space (carrier-grade NAT)
        "127.0.0.0/8",
        "169.254.0.0/16",  # link-local, cloud metadata services
        "172.16.0.0/12",
        "192.0.0.0/24",  # IETF protocol assignments
        "192.0.2.0/24",  # documentation
        "192.88.99.0/24",  # 6to4 relay anycast (deprecated)
        "192.168.0.0/16",
        "198.18.0.0/15",  # benchmarking
        "198.51.100.0/24",  # documentation
        "203.0.113.0/24",  # documentation
        "224.0.0.0/4",  # multicast
        "240.0.0.0/4",  # reserved, and the broadcast address
    )
)
_REFUSED_V6 = tuple(
    ipaddress.IPv6Network(net)
    for net in (
        "::/96",  # IPv4-compatible (deprecated, RFC 4291 §2.5.5.1), :: and ::1
        "64:ff9b:1::/48",  # NAT64 local use (RFC 8215)
        "100::/64",  # discard-only
        "2001::/23",  # IETF protocol assignments
        "2001:db8::/32",  # documentation
        "fc00::/7",  # unique local
        "fe80::/10",  # link-local
        "fec0::/10",  # site-local (deprecated, RFC 3879)
        "ff00::/8",  # multicast
    )
)
# NAT64's well-known prefix (RFC 6052 §2.1) holds an IPv4 address in its
# last 32 bits: that address decides.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def _private_v4(addr: ipaddress.IPv4Address) -> bool:
    return any(addr in net for net in _REFUSED_V4) or not addr.is_global


def _private_v6(addr: ipaddress.IPv6Address) -> bool:
    mapped = addr.ipv4_mapped  # ::ffff:a.b.c.d, RFC 4291 §2.5.5.2
    if mapped is not None:
        return _private_v4(mapped)
    if addr in _NAT64:
        return _private_v4(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    sixtofour = addr.sixtofour  # 2002:a.b.c.d::/48, RFC 3056
    if sixtofour is not None and _private_v4(sixtofour):
        return True
    return any(addr in net for net in _REFUSED_V6) or not addr.is_global


def _inet_aton(host: str) -> ipaddress.IPv4Address | None:
    """The IPv4 address glibc's inet_aton reads in `host` (one to four
    parts, each decimal, 0-prefixed octal or 0x-prefixed hex), or None."""
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except (OSError, ValueError):
        return None


def is_private_address(host: str) -> bool:
    """True unless `host` (a URL's host: a name, an IPv4 address in any
    inet_aton spelling, or an IPv6 address, bracketed or not) may be a
    public address: loopback, private, link-local, unspecified, shared,
    reserved and multicast addresses and the loopback names are private.
    An empty host, or one no resolver would take (spaces, control
    characters), counts as private too: it is never a callback target."""
    # A browser-like client percent-decodes a host (WHATWG URL, "host
    # parsing"), so `%31%32%37.0.0.1` is judged as 127.0.0.1.
    host = unquote(host).strip("[]").lower()
    # One or more trailing dots make a name absolute; `127.0.0.1.` is still
    # 127.0.0.1 to a resolver that reads numbers first.
    host = host.rstrip(".")
    if not host or any(c.isspace() or not c.isprintable() for c in host):
        # glibc's inet_aton stops at the first space ("127.0.0.1 x" is
        # 127.0.0.1): such a host is refused rather than guessed at.
        return True
    if ":" in host:
        try:
            return _private_v6(ipaddress.IPv6Address(host))
        except ValueError:
            return True  # not an IPv6 address, and a colon is in no name
    v4 = _inet_aton(host)
    if v4 is not None:
        return _private_v4(v4)
    return host in _LOOPBACK_NAMES or host.endswith(".localhost")


def url_refusal(url: str, *, deny_private: bool = True) -> str | None:
    """Why `url` cannot be a callback target, or None if it can: not an
    http(s) URL that yarl parses with a host, or (with `deny_private`) one
    whose host is private."""
    try:
        parsed = URL(url)
        host = parsed.host
    except (ValueError, TypeError):
        return "not a valid URL"
    if parsed.scheme not in ("http", "https") or not host:
        return "must be an http:// or https:// URL with a host"
    if deny_private and is_private_address(host):
        return f"{host} is a private network address"
    return None
