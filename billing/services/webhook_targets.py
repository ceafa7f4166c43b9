"""Where a user's webhook may go: public internet addresses only.

Any user can name a webhook URL and the Celery worker POSTs to it from inside the operator's
network, so an unchecked URL reaches Redis on 127.0.0.1, the cloud metadata service on
169.254.169.254 or any private host (SSRF). The URL is checked when it is saved (a clear
error) and again when a message is sent, because what a name resolves to can change in
between. At send time every address the name resolves to is checked, and the socket is
connected to one of those very addresses: a second lookup, which a hostile DNS server could
answer with 127.0.0.1 (DNS rebinding), never happens. The request still carries the
original ``Host`` header and, for https, the original name as SNI and for the certificate
check. Redirects are not followed: a 3xx is a failed delivery.

``ROUTER_WEBHOOKS_ALLOW_PRIVATE`` (off by default) lets an operator whose receivers live on
their own network opt out of the address check; everything else still applies.
"""

from __future__ import annotations

import http.client
import ipaddress
import socket
import ssl
import time
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from billing.errors import WebhookDeliveryFailed, WebhookTargetRefused

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

SCHEMES = {"http": 80, "https": 443}

# IANA's special-purpose registries, less the few entries that are globally reachable.
_NOT_PUBLIC_V4 = tuple(ipaddress.IPv4Network(net) for net in (
    "0.0.0.0/8",  # "this network"; 0.0.0.0 reaches the local host
    "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",  # private
    "100.64.0.0/10",  # shared address space (carrier-grade NAT)
    "127.0.0.0/8",  # loopback
    "169.254.0.0/16",  # link-local, home of cloud metadata services
    "192.0.0.0/24",  # IETF protocol assignments
    "192.0.2.0/24", "198.51.100.0/24", "203.0.113.0/24",  # documentation
    "192.88.99.0/24",  # the retired 6to4 relay anycast
    "198.18.0.0/15",  # benchmarking
    "224.0.0.0/4",  # multicast
    "240.0.0.0/4",  # reserved, and the broadcast address 255.255.255.255
))
# Only 2000::/3 is global unicast; inside it, these are not public either.
_GLOBAL_UNICAST_V6 = ipaddress.IPv6Network("2000::/3")
_NOT_PUBLIC_V6 = tuple(ipaddress.IPv6Network(net) for net in (
    "2001::/23",  # IETF protocol assignments, Teredo (2001::/32) among them
    "2001:db8::/32", "3fff::/20",  # documentation
    "5f00::/16",  # segment routing SIDs
))
# Well-known NAT64 prefix: an IPv6-only host reaches IPv4 through it, so the IPv4 address
# in its last 32 bits is what is really reached.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")


def address_is_public(address: IPAddress) -> bool:
    """Whether a webhook may be sent to this address when private targets are not allowed.
    An IPv6 address that carries an IPv4 one (IPv4-mapped, NAT64, 6to4) is judged by the
    IPv4 address, which is where the packets end up."""
    if isinstance(address, ipaddress.IPv6Address):
        address = ipaddress.IPv6Address(address.compressed.split("%", 1)[0])  # drop a scope
        if address.ipv4_mapped is not None:
            return address_is_public(address.ipv4_mapped)
        if address in _NAT64:
            return address_is_public(ipaddress.IPv4Address(int(address) & 0xFFFF_FFFF))
        if address.sixtofour is not None:
            return address_is_public(address.sixtofour)
        if address not in _GLOBAL_UNICAST_V6:
            return False  # loopback, unspecified, ULA fc00::/7, link-local, multicast...
        return not any(address in net for net in _NOT_PUBLIC_V6) and address.is_global
    return (not any(address in net for net in _NOT_PUBLIC_V4) and address.is_global
            and not address.is_multicast)


@dataclass(frozen=True)
class WebhookTarget:
    """A URL taken apart, with the addresses its host resolved to, each of them checked."""

    scheme: str
    host: str  # as it goes in the Host header and SNI (IDNA, no brackets)
    port: int
    target: str  # path and query
    addresses: tuple[tuple[socket.AddressFamily, tuple], ...]  # (family, sockaddr)


def webhook_target_resolve(*, url: str) -> WebhookTarget:
    """Take ``url`` apart and resolve its host, checking EVERY address it resolves to.

    Raises WebhookTargetRefused for a scheme other than http(s), a host that does not
    resolve, or (unless ``ROUTER_WEBHOOKS_ALLOW_PRIVATE``) any address that is not public.
    """
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    if scheme not in SCHEMES:
        raise WebhookTargetRefused(f"{url!r}: webhooks are sent over http or https only.")
    try:
        port = parts.port or SCHEMES[scheme]
        host = (parts.hostname or "").encode("idna").decode("ascii")
    except (ValueError, UnicodeError):
        host = ""
    if not host:
        raise WebhookTargetRefused(f"{url!r} is not a web address.")
    # One message whether the name does not resolve or resolves inside, so the form
    # cannot be used to map which names the operator's internal DNS knows.
    refused = WebhookTargetRefused(
        f"{host} does not resolve, or resolves to a private, loopback or reserved address: "
        "webhooks go only to public internet addresses.")
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                   proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError):
        raise refused from None
    addresses = tuple(dict.fromkeys((family, sockaddr) for family, _, _, _, sockaddr in infos
                                    if family in (socket.AF_INET, socket.AF_INET6)))
    if not addresses:
        raise refused
    if not settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE and not all(
            address_is_public(ipaddress.ip_address(sockaddr[0])) for _, sockaddr in addresses):
        raise refused
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return WebhookTarget(scheme=scheme, host=host, port=port, target=target,
                         addresses=addresses)


def webhook_post(*, url: str, body: bytes, headers: dict[str, str],
                 timeout_seconds: float) -> int:
    """POST ``body`` to ``url`` on an address checked by ``webhook_target_resolve`` and
    answer the 2xx status. Raises WebhookTargetRefused, WebhookDeliveryFailed for any
    other status (a redirect included: it is not followed), or OSError.

    Connecting (to every address in turn if need be) takes at most ``timeout_seconds`` in
    all, as does each send and each read; only the status line and headers are read.
    """
    target = webhook_target_resolve(url=url)
    connection_class = _PinnedHTTPSConnection if target.scheme == "https" else _PinnedHTTPConnection
    connection = connection_class(target, timeout_seconds)
    try:
        connection.request("POST", target.target, body=body, headers=headers)
        status = connection.getresponse().status
    finally:
        connection.close()
    if 300 <= status < 400:
        raise WebhookDeliveryFailed(f"the receiver answered {status}, a redirect, which is "
                                    "not followed")
    if not 200 <= status < 300:
        raise WebhookDeliveryFailed(f"the receiver answered {status}")
    return status


def _connect_pinned(target: WebhookTarget, timeout_seconds: float) -> socket.socket:
    """A socket connected to the first checked address that answers, never to anything a
    fresh lookup of the name would give."""
    deadline = time.monotonic() + timeout_seconds
    error: OSError = OSError(f"could not connect to {target.host}")
    for family, sockaddr in target.addresses:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            break
        sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        try:
            sock.settimeout(remaining)
            sock.connect(sockaddr)
        except OSError as exc:
            sock.close()
            error = exc
            continue
        sock.settimeout(timeout_seconds)
        return sock
    raise error


class _PinnedHTTPConnection(http.client.HTTPConnection):
    def __init__(self, target: WebhookTarget, timeout_seconds: float) -> None:
        super().__init__(target.host, target.port, timeout=timeout_seconds)
        self._target = target

    def connect(self) -> None:
        self.sock = _connect_pinned(self._target, self.timeout)


class _PinnedHTTPSConnection(http.client.HTTPSConnection):
    def __init__(self, target: WebhookTarget, timeout_seconds: float) -> None:
        self._tls = ssl.create_default_context()
        super().__init__(target.host, target.port, timeout=timeout_seconds, context=self._tls)
        self._target = target

    def connect(self) -> None:
        # The certificate is checked against the name in the URL, not the address.
        self.sock = self._tls.wrap_socket(_connect_pinned(self._target, self.timeout),
                                          server_hostname=self._target.host)
