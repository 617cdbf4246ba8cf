"""What a connect()/sendto() of the confined command tried, as an audit record (pure).

The supervisor (:mod:`.supervisor`) hands over the raw ``sockaddr`` bytes it
read from the command's memory, the socket's type, and the kind of call;
:func:`classify` says whether that is an attempt to get around the proxy and
how it is recorded. Records are ``BoundaryLog``\\ s as the proxy's are (a
Coder agent accepts them): ``method`` is ``CONNECT`` (TCP or a Unix socket),
``UDP`` or ``DNS`` (port 53, either protocol), and ``url`` a URL-like target:
``tcp://HOST:PORT``, ``udp://HOST:PORT``, ``dns://HOST:53``,
``unix:///PATH`` or ``unix://@NAME`` (abstract). ``allowed`` is what the
kernel will do with it: TCP to any port but the proxy's, a hidden Unix
socket and an abstract one (Landlock ABI >= 6) are refused; UDP goes
through unless the network is isolated.

Not recorded: the command's connections to the proxy (the normal path),
Unix sockets it may use (not hidden), and other families (netlink...).
"""

from __future__ import annotations

import ipaddress
import struct
from collections.abc import Sequence
from dataclasses import dataclass

#: Address families and socket types (linux/socket.h, linux/net.h).
AF_UNSPEC = 0
AF_UNIX = 1
AF_INET = 2
AF_INET6 = 10
SOCK_STREAM = 1
SOCK_DGRAM = 2
#: DNS's port: a query by UDP or TCP is recorded as ``DNS``.
DNS_PORT = 53
#: Method names of the records (see the module docstring).
METHOD_CONNECT = "CONNECT"
METHOD_UDP = "UDP"
METHOD_DNS = "DNS"
METHOD_RAW = "RAW"
#: Families a raw socket can be asked for in (the observation filter
#: notifies only these), by name for the record.
AF_PACKET = 17
RAW_FAMILIES = {AF_INET: "inet", AF_INET6: "inet6", AF_PACKET: "packet"}
#: The socket type without SOCK_NONBLOCK/SOCK_CLOEXEC.
SOCK_TYPE_MASK = 0xF
#: Offsets in struct sockaddr_in / sockaddr_in6 / sockaddr_un.
_FAMILY = struct.Struct("=H")
_PORT = struct.Struct("!H")
_SUN_PATH = 2


@dataclass(frozen=True, slots=True)
class Attempt:
    """One recorded attempt to get around the proxy."""

    method: str
    url: str
    host: str
    allowed: bool


@dataclass(frozen=True, slots=True)
class Policy:
    """What the kernel allows, as far as classification needs it."""

    proxy_port: int
    isolated: bool
    hidden: Sequence[str] = ()
    abstract_scoped: bool = True
    #: The launcher's DNS stub answers (and records) loopback port 53.
    dns_stub: bool = False


def _inside(path: str, directory: str) -> bool:
    return path == directory or path.startswith(directory.rstrip("/") + "/")


def _inet(addr: bytes, family: int) -> tuple[str, int] | None:
    if family == AF_INET and len(addr) >= 8:
        return str(ipaddress.IPv4Address(addr[4:8])), _PORT.unpack_from(addr, 2)[0]
    if family == AF_INET6 and len(addr) >= 24:
        return str(ipaddress.IPv6Address(addr[8:24])), _PORT.unpack_from(addr, 2)[0]
    return None


def _unix(addr: bytes, policy: Policy) -> Attempt | None:
    raw = addr[_SUN_PATH:]
    if raw.startswith(b"\0"):
        name = raw[1:].rstrip(b"\0").decode("utf-8", "backslashreplace")
        if not policy.abstract_scoped:
            return None
        return Attempt(METHOD_CONNECT, f"unix://@{name}", "", allowed=False)
    path = raw.split(b"\0", 1)[0].decode("utf-8", "backslashreplace")
    if not any(_inside(path, h) for h in policy.hidden):
        return None
    return Attempt(METHOD_CONNECT, f"unix://{path}", "", allowed=False)


def raw_attempt(family: int, sock_type: int, protocol: int) -> Attempt:
    """The record of a raw IP or packet socket() (always refused)."""
    name = RAW_FAMILIES.get(family, str(family))
    url = f"raw://{name}?type={sock_type & SOCK_TYPE_MASK}&protocol={protocol}"
    return Attempt(METHOD_RAW, url, "", allowed=False)


def _loopback(host: str) -> bool:
    """Loopback, IPv4-mapped IPv6 included (``::ffff:127.0.0.1``: how a
    dual-stack socket, gRPC's for one, reaches the proxy); Python 3.11's
    ``is_loopback`` says no to the mapped form."""
    address = ipaddress.ip_address(host)
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped.is_loopback
    return address.is_loopback


def needs_socket_type(addr: bytes, policy: Policy) -> bool:
    """Whether :func:`classify` needs the socket's type for ``addr``: not for
    Unix sockets, nor for the proxy on loopback (the common case, kept cheap;
    a UDP datagram to the proxy's loopback port is then not recorded)."""
    if len(addr) < _FAMILY.size:
        return False
    family = _FAMILY.unpack_from(addr)[0]
    target = _inet(addr, family)
    if target is None:
        return False
    host, port = target
    return not (port == policy.proxy_port and _loopback(host))


def classify(addr: bytes, sock_type: int | None, policy: Policy) -> Attempt | None:
    """The record for a connect()/sendto() to ``addr`` on a socket of
    ``sock_type`` (``None``: unknown), or ``None`` when it is not recorded."""
    if len(addr) < _FAMILY.size:
        return None
    family = _FAMILY.unpack_from(addr)[0]
    if family == AF_UNIX:
        return _unix(addr, policy)
    target = _inet(addr, family)
    if target is None:
        return None
    return _inet_attempt(family, *target, sock_type, policy)


def _inet_attempt(
    family: int, host: str, port: int, sock_type: int | None, policy: Policy
) -> Attempt | None:
    shown = f"[{host}]" if family == AF_INET6 else host
    if sock_type == SOCK_DGRAM:
        if port == DNS_PORT and policy.dns_stub and _loopback(host):
            return None  # the stub records the query itself, with its name
        method = METHOD_DNS if port == DNS_PORT else METHOD_UDP
        scheme = "dns" if port == DNS_PORT else "udp"
        return Attempt(method, f"{scheme}://{shown}:{port}", host, allowed=not policy.isolated)
    if port == policy.proxy_port:
        if _loopback(host):
            return None  # the proxy: the normal path
        # Landlock's rules are port-only: this one goes through, unless the
        # network namespace has nowhere to route it.
        return Attempt(METHOD_CONNECT, f"tcp://{shown}:{port}", host, allowed=not policy.isolated)
    method = METHOD_DNS if port == DNS_PORT else METHOD_CONNECT
    scheme = "dns+tcp" if port == DNS_PORT else "tcp"
    return Attempt(method, f"{scheme}://{shown}:{port}", host, allowed=False)


__all__ = ["METHOD_DNS", "Attempt", "Policy", "classify", "needs_socket_type", "raw_attempt"]
