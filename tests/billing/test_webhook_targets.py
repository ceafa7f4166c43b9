"""A user's webhook cannot reach inside the operator's network (SSRF): refused when saved
and again when sent, on every address the name resolves to, connected to the address that
was checked, with no redirect followed.

Local test servers listen on 127.0.0.1, which the guard refuses. So tests of the refusals
run with ``ROUTER_WEBHOOKS_ALLOW_PRIVATE`` off (the default) and need no server (or check
that a running one received nothing), while tests of what happens on the wire (pinning,
redirects, TLS names) switch the opt-in on to reach a local server: the opt-in only skips
the address check, so pinning and the redirect rule are the same code either way.
"""

from __future__ import annotations

import datetime
import ipaddress
import socket
import ssl
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from aiohttp import web
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from billing.errors import InvalidAlert, WebhookDeliveryFailed, WebhookTargetRefused
from billing.models import BalanceAlert, OutboxMessage
from billing.selectors import balance_alert_of
from billing.services import wallet_credit
from billing.services.alerts import balance_alert_set
from billing.services.outbox import outbox_drain
from billing.services.webhook_targets import address_is_public, webhook_post
from tests.threaded_server import ThreadedServer

USD = 1_000_000
PUBLIC = "93.184.215.14"  # example.com's; never connected to by these tests

NOT_PUBLIC = [
    # IPv4
    "127.0.0.1", "127.255.255.254",  # loopback
    "10.0.0.1", "172.16.0.1", "172.31.255.255", "192.168.1.1",  # private
    "169.254.169.254",  # link-local: cloud metadata
    "100.64.0.1", "100.127.255.254",  # shared address space (CGNAT)
    "0.0.0.0", "0.1.2.3",  # unspecified, "this network"
    "224.0.0.1", "239.255.255.250",  # multicast
    "240.0.0.1", "255.255.255.255",  # reserved, broadcast
    "192.0.0.8", "192.0.2.1", "198.18.0.1", "198.51.100.1", "203.0.113.1",  # special use
    # IPv6
    "::1", "::",  # loopback, unspecified
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "::ffff:169.254.169.254",  # IPv4-mapped
    "::127.0.0.1",  # IPv4-compatible (deprecated)
    "fc00::1", "fd12:3456:789a::1",  # unique local (fc00::/7)
    "fe80::1", "febf::1",  # link-local (fe80::/10)
    "fec0::1",  # site-local (deprecated)
    "ff02::1", "ff05::1:3", "ff0e::1",  # multicast
    "2001:db8::1",  # documentation
    "2001::1", "2001:0:4136:e378:8000:63bf:3fff:fdd2",  # Teredo
    "2002:7f00:1::1", "2002:a9fe:a9fe::1",  # 6to4 around 127.0.0.1 and 169.254.169.254
    "64:ff9b::7f00:1", "64:ff9b::a00:1",  # NAT64 around 127.0.0.1 and 10.0.0.1
    "100::1",  # discard-only
]
PUBLIC_ADDRESSES = [
    "8.8.8.8", "1.1.1.1", PUBLIC, "2606:4700:4700::1111", "2a00:1450:4001:80b::200e",
    "::ffff:8.8.8.8", "64:ff9b::808:808", "2002:808:808::1",  # around a public IPv4
]


def _host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _alert(user, url: str) -> None:
    """An alert whose webhook goes to ``url`` as staff could set it in the admin (no check
    on save), then a balance that crosses it: one message in the outbox."""
    wallet_credit(user=user, amount_micros=2 * USD, idempotency_key="start", memo="test")
    BalanceAlert.objects.create(user=user, threshold_micros=USD, email=False, webhook_url=url,
                                webhook_secret="whsec")
    wallet_credit(user=user, amount_micros=-USD - 1, idempotency_key="down", memo="test")


class Receiver(ThreadedServer):
    """``/hook`` answers ``status`` (with ``Location: /inside`` on a redirect); ``/inside``
    stands for an internal service that must never be reached."""

    name = "webhook receiver"

    def __init__(self, status: int = 204) -> None:
        super().__init__()
        self.status = status
        self.received: list[tuple[str, dict[str, str]]] = []

    def _app(self) -> web.Application:
        async def handle(request: web.Request) -> web.Response:
            self.received.append((request.path, dict(request.headers)))
            headers = {"Location": f"{self.url}/inside"} if 300 <= self.status < 400 else {}
            return web.Response(status=self.status if request.path == "/hook" else 200,
                                headers=headers)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server


@pytest.fixture
def connects(monkeypatch: pytest.MonkeyPatch) -> list[tuple]:
    """Every address a socket of this process connects to; the connections go ahead."""
    seen: list[tuple] = []
    real = socket.socket.connect

    def connect(self: socket.socket, address: tuple) -> None:
        seen.append(address[:2])
        return real(self, address)

    monkeypatch.setattr(socket.socket, "connect", connect)
    return seen


@pytest.mark.parametrize("address", NOT_PUBLIC)
def test_an_address_outside_the_public_internet_is_refused(address, user):
    assert not address_is_public(ipaddress.ip_address(address))
    with pytest.raises(InvalidAlert):
        balance_alert_set(user=user, threshold_micros=USD, webhook_url=f"http://{_host(address)}/")
    with pytest.raises(WebhookTargetRefused):
        webhook_post(url=f"http://{_host(address)}:9/hook", body=b"{}", headers={},
                     timeout_seconds=1)
    assert balance_alert_of(user=user) is None


@pytest.mark.parametrize("address", PUBLIC_ADDRESSES)
def test_a_public_address_is_allowed(address):
    assert address_is_public(ipaddress.ip_address(address))


@pytest.mark.parametrize("url", ["http://localhost/hook", "http://LocalHost:6379/",
                                 "https://hooks.example.com/hook"])
def test_a_name_that_resolves_to_an_inside_address_is_refused_when_saved(url, user, fake_dns):
    fake_dns.add("hooks.example.com", "10.0.0.5")
    with pytest.raises(WebhookTargetRefused, match="public internet addresses"):
        balance_alert_set(user=user, threshold_micros=USD, webhook_url=url)
    assert balance_alert_of(user=user) is None


def test_a_name_with_one_public_and_one_private_address_is_refused(user, fake_dns):
    fake_dns.add("hooks.example.com", (PUBLIC, "2606:4700:4700::1111", "169.254.169.254"))
    with pytest.raises(WebhookTargetRefused):
        balance_alert_set(user=user, threshold_micros=USD,
                          webhook_url="https://hooks.example.com/hook")


def test_a_name_that_does_not_resolve_is_refused_with_the_same_message(user, fake_dns):
    # The same words as for an inside address: the form tells nobody which names the
    # operator's internal DNS knows.
    with pytest.raises(WebhookTargetRefused) as refused:
        balance_alert_set(user=user, threshold_micros=USD,
                          webhook_url="https://no-such-host.invalid/hook")
    assert "does not resolve, or resolves to a private" in str(refused.value)


def test_a_name_that_resolves_to_public_addresses_is_saved(user, fake_dns):
    fake_dns.add("hooks.example.com", (PUBLIC, "2606:4700:4700::1111"))
    alert = balance_alert_set(user=user, threshold_micros=USD,
                              webhook_url="https://hooks.example.com/hook")
    assert alert.webhook_url == "https://hooks.example.com/hook"


@pytest.mark.parametrize("url", ["file:///etc/passwd", "ftp://hooks.example.com/hook",
                                 "gopher://127.0.0.1:6379/_FLUSHALL", "dict://127.0.0.1:6379/",
                                 "http:///hook", "http://hooks.example.com:99999/hook"])
def test_only_http_and_https_urls_with_a_host_are_sent_to(url, fake_dns):
    fake_dns.add("hooks.example.com", PUBLIC)
    with pytest.raises(WebhookTargetRefused):
        webhook_post(url=url, body=b"{}", headers={}, timeout_seconds=1)


@pytest.mark.parametrize("url", ["http://2130706433:{port}/hook", "http://0x7f.1:{port}/hook",
                                 "http://127.1:{port}/hook", "http://[::ffff:7f00:1]:{port}/hook",
                                 "http://rebound.example.com:{port}/hook"])
def test_a_webhook_to_an_inside_address_is_not_sent_and_the_failure_says_why(
    url, user, receiver, fake_dns
):
    # Saved before the check existed, set by staff, or a name that resolved publicly when
    # saved and now answers 127.0.0.1 (DNS rebinding): the check at send time still holds.
    fake_dns.add("rebound.example.com", "127.0.0.1")
    _alert(user, url.format(port=receiver.port))

    assert len(outbox_drain().failed) == 1
    assert OutboxMessage.objects.get().last_error.startswith("WebhookTargetRefused:")
    assert receiver.received == []


def test_a_name_that_was_public_when_saved_and_is_inside_when_sent_is_not_sent_to(
    user, receiver, fake_dns
):
    fake_dns.add("hooks.example.com", PUBLIC, "127.0.0.1")
    balance_alert_set(user=user, threshold_micros=USD, email=False,
                      webhook_url=f"http://hooks.example.com:{receiver.port}/hook")
    wallet_credit(user=user, amount_micros=2 * USD, idempotency_key="start", memo="test")
    wallet_credit(user=user, amount_micros=-USD - 1, idempotency_key="down", memo="test")

    assert len(outbox_drain().failed) == 1
    assert OutboxMessage.objects.get().last_error.startswith("WebhookTargetRefused:")
    assert receiver.received == []


def test_the_socket_connects_to_the_checked_address_not_to_a_second_answer(
    monkeypatch, fake_dns
):
    # The first answer is public and passes; a second lookup would answer 127.0.0.1. The
    # connection is stopped before it leaves the machine: what matters is where it went.
    fake_dns.add("hooks.example.com", PUBLIC, "127.0.0.1")
    targets: list[tuple] = []

    def connect(self: socket.socket, address: tuple) -> None:
        targets.append(address[:2])
        raise ConnectionRefusedError("not in tests")

    monkeypatch.setattr(socket.socket, "connect", connect)
    with pytest.raises(ConnectionRefusedError):
        webhook_post(url="https://hooks.example.com/hook", body=b"{}", headers={},
                     timeout_seconds=1)
    assert targets == [(PUBLIC, 443)]
    assert fake_dns.lookups.count("hooks.example.com") == 1


def test_with_the_opt_in_a_delivery_reaches_the_checked_address_under_its_own_name(
    settings, receiver, fake_dns, connects
):
    settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE = True
    # 127.0.0.2 is loopback too, but nothing listens there: a second lookup would fail.
    fake_dns.add("hooks.test", "127.0.0.1", "127.0.0.2")

    status = webhook_post(url=f"http://hooks.test:{receiver.port}/hook?tag=1", body=b"{}",
                          headers={"X-Router-Event-Id": "7"}, timeout_seconds=5)

    assert status == 204
    assert connects == [("127.0.0.1", receiver.port)]
    assert fake_dns.lookups.count("hooks.test") == 1
    path, headers = receiver.received[0]
    assert (path, headers["Host"], headers["X-Router-Event-Id"]) == (
        "/hook", f"hooks.test:{receiver.port}", "7")


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
def test_a_redirect_is_a_failed_delivery_and_is_not_followed(status, settings, user, fake_dns):
    # The opt-in lets the first hop reach the local server; the redirect points at another
    # local path, standing for an inside service, which must never be asked for.
    settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE = True
    with Receiver(status=status) as redirecting:
        with pytest.raises(WebhookDeliveryFailed, match="not followed"):
            webhook_post(url=f"{redirecting.url}/hook", body=b"{}", headers={},
                         timeout_seconds=5)
        _alert(user, f"{redirecting.url}/hook")
        assert len(outbox_drain().failed) == 1
        assert [path for path, _ in redirecting.received] == ["/hook", "/hook"]
    assert "redirect" in OutboxMessage.objects.get().last_error


def test_without_the_opt_in_a_local_receiver_gets_nothing_and_with_it_the_webhook(
    settings, user, receiver
):
    assert settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE is False  # the default
    with pytest.raises(WebhookTargetRefused):
        balance_alert_set(user=user, threshold_micros=USD, webhook_url=f"{receiver.url}/hook")

    settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE = True
    balance_alert_set(user=user, threshold_micros=USD, email=False,
                      webhook_url=f"{receiver.url}/hook")
    wallet_credit(user=user, amount_micros=2 * USD, idempotency_key="start", memo="test")
    wallet_credit(user=user, amount_micros=-USD - 1, idempotency_key="down", memo="test")
    assert len(outbox_drain().delivered) == 1
    assert [path for path, _ in receiver.received] == ["/hook"]


# --- https: the pinned socket still speaks TLS to the name in the URL -----------------


class TlsReceiver:
    """An https server on 127.0.0.1 whose certificate names ``cert_name``; it records the
    SNI name each client sent and the requests."""

    def __init__(self, cert_name: str, folder: Path) -> None:
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cert_name)])
        now = datetime.datetime.now(datetime.UTC)
        cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
                .public_key(key.public_key()).serial_number(x509.random_serial_number())
                .not_valid_before(now - datetime.timedelta(minutes=5))
                .not_valid_after(now + datetime.timedelta(hours=1))
                .add_extension(x509.SubjectAlternativeName([x509.DNSName(cert_name)]),
                               critical=False)
                .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
                .sign(key, hashes.SHA256()))
        self.cert_file = folder / f"{cert_name}.pem"
        self.cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file = folder / f"{cert_name}.key"
        key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                               serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
        self.server_names: list[str | None] = []
        self.received: list[dict[str, str]] = []
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(self.cert_file, key_file)
        context.sni_callback = lambda _sock, name, _ctx: self.server_names.append(name)
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                self.rfile.read(int(self.headers["Content-Length"]))
                receiver.received.append(dict(self.headers))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]

    def __enter__(self) -> TlsReceiver:
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_over_https_the_pinned_connection_sends_the_name_as_sni_and_checks_the_certificate(
    settings, monkeypatch, tmp_path, fake_dns, connects
):
    settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE = True  # the test server is on 127.0.0.1
    fake_dns.add("hooks.test", "127.0.0.1", "127.0.0.2")
    with TlsReceiver("hooks.test", tmp_path) as tls:
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.cert_file))  # trust the test's certificate
        assert webhook_post(url=f"https://hooks.test:{tls.port}/hook", body=b"{}", headers={},
                            timeout_seconds=5) == 204
    assert connects == [("127.0.0.1", tls.port)]
    assert tls.server_names == ["hooks.test"]
    assert tls.received[0]["Host"] == f"hooks.test:{tls.port}"


def test_over_https_a_certificate_for_another_name_is_refused(
    settings, monkeypatch, tmp_path, fake_dns
):
    settings.ROUTER_WEBHOOKS_ALLOW_PRIVATE = True
    fake_dns.add("hooks.test", "127.0.0.1")
    with TlsReceiver("other.test", tmp_path) as tls:
        monkeypatch.setenv("SSL_CERT_FILE", str(tls.cert_file))
        with pytest.raises(ssl.SSLCertVerificationError):
            webhook_post(url=f"https://hooks.test:{tls.port}/hook", body=b"{}", headers={},
                         timeout_seconds=5)
        assert tls.received == []
