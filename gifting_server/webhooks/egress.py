"""Where a webhook may be sent: the one rule for endpoint URLs and the addresses they
resolve to. Checked when an endpoint is registered and again before every attempt
(a name may resolve elsewhere later: DNS rebinding); the attempt connects to the
address checked, never resolves the name a second time."""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from dataclasses import dataclass
from urllib.parse import urlsplit

from gifting_server.errors import ErrorCode, GiftingError

MAX_URL_LENGTH = 2048
SCHEMES = {"http": 80, "https": 443}

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True)
class Target:
    """An endpoint URL taken apart: what an attempt needs to connect and to ask."""

    url: str
    scheme: str
    host: str  # as written, for the Host header and TLS (SNI, certificate)
    port: int
    path: str  # with the query string


class Refused(Exception):
    """The URL or its address may not be sent to; the message says why."""


def parse_target(url: object) -> Target:
    """An http(s) URL with a host, no user or password, no fragment; else `invalid_request`."""
    if not isinstance(url, str) or not url or len(url) > MAX_URL_LENGTH:
        raise _invalid(f"url must be an http or https URL of at most {MAX_URL_LENGTH} characters")
    if not url.isascii() or any(c.isspace() or not c.isprintable() for c in url):
        # (DEL too: the HTTP client refuses a URL with any control character.)
        raise _invalid(
            "url must be printable ASCII without spaces (encode a name with IDNA, "
            "anything else with %-escapes)"
        )
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as e:
        raise _invalid(f"url is not a valid URL: {e}") from None
    if parts.scheme not in SCHEMES:
        raise _invalid("url must start with http:// or https://")
    if not parts.hostname:
        raise _invalid("url must name a host")
    if parts.username is not None or parts.password is not None:
        raise _invalid("url must not carry a user name or password")
    if parts.fragment:
        raise _invalid("url must not have a #fragment")
    if port == 0:  # no port to send to (taken for the scheme's own, it would send elsewhere)
        raise _invalid("url's port must be between 1 and 65535")
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return Target(url, parts.scheme, parts.hostname, port or SCHEMES[parts.scheme], path)


# IPv6 ranges whose last 32 bits are an IPv4 address that a gateway (NAT64, 6to4) or
# the host itself (IPv4-compatible, IPv4-translated) may reach: such an address is as
# public as the IPv4 address it carries. `ipaddress` calls most of them global.
CARRYING_IPV4 = tuple(
    ipaddress.IPv6Network(n) for n in ("64:ff9b::/96", "::/96", "::ffff:0:0:0/96")
)
# Never public, whatever they carry: local-use NAT64 (RFC 8215) and site-local (RFC 3879).
NOT_PUBLIC_IPV6 = tuple(ipaddress.IPv6Network(n) for n in ("64:ff9b:1::/48", "fec0::/10"))


def carried_ipv4(address: ipaddress.IPv6Address) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address stands for, if it stands for one."""
    if address.ipv4_mapped:
        return address.ipv4_mapped
    if address.sixtofour:
        return address.sixtofour
    if int(address) > 1 and any(address in network for network in CARRYING_IPV4):
        return ipaddress.IPv4Address(int(address) & 0xFFFFFFFF)  # not :: nor ::1
    return None


def refusal(address: IPAddress) -> str | None:
    """Why this address is no place to send to, or None for a public one."""
    if isinstance(address, ipaddress.IPv6Address):
        if any(address in network for network in NOT_PUBLIC_IPV6):
            return "not a public unicast address"
        carried = carried_ipv4(address)
        if carried is not None:
            address = carried
    if address.is_loopback:
        return "a loopback address"
    if address.is_link_local:
        return "a link-local address"
    if address.is_private:
        return "a private address"
    if not address.is_global or address.is_multicast:
        return "not a public unicast address"
    return None


async def resolve(target: Target, allow_private: bool) -> str:
    """The address to connect to: the first the host resolves to. Every address it
    resolves to must be public unless `allow_private` (one bad answer among good ones
    is refused too: the connection could land on either)."""
    try:
        literal: IPAddress | None = ipaddress.ip_address(target.host)
    except ValueError:
        literal = None
    if literal is not None:
        addresses = [literal]
    else:
        try:
            infos = await asyncio.get_running_loop().getaddrinfo(
                target.host, target.port, type=socket.SOCK_STREAM
            )
        except (OSError, UnicodeError) as e:
            raise Refused(f"{target.host} does not resolve: {e}") from None
        addresses = [ipaddress.ip_address(str(info[4][0]).split("%")[0]) for info in infos]
        if not addresses:
            raise Refused(f"{target.host} does not resolve")
    if not allow_private:
        for address in addresses:
            why = refusal(address)
            if why:
                raise Refused(f"{target.host} resolves to {address}, {why}")
    return str(addresses[0])


async def checked_target(target: Target, allow_private: bool, timeout_s: float) -> Target:
    """A target an endpoint may be registered with: `invalid_request` otherwise (also
    when its name does not resolve within `timeout_s`)."""
    try:
        async with asyncio.timeout(timeout_s):
            await resolve(target, allow_private)
    except Refused as e:
        raise _invalid(f"url refused: {e}") from None
    except TimeoutError:
        raise _invalid(
            f"url refused: {target.host} does not resolve within {timeout_s:g}s"
        ) from None
    return target


def _invalid(message: str) -> GiftingError:
    return GiftingError(ErrorCode.INVALID_REQUEST, message)
