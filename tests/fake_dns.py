"""A resolver the tests control: names they register answer the addresses they choose (a
different answer per lookup if they like), anything else goes to the real resolver. Tests
have no internet, and a webhook's name must resolve before the URL can even be saved."""

from __future__ import annotations

import socket
from collections.abc import Callable
from typing import Any

import pytest


class FakeDns:
    def __init__(self, real: Callable[..., list[Any]]) -> None:
        self._real = real
        self._answers: dict[str, list[tuple[str, ...]]] = {}
        self.lookups: list[str] = []  # every name looked up, in order, registered or not

    def add(self, name: str, *answers: tuple[str, ...] | str) -> None:
        """``name`` resolves to the first answer, then the next on each later lookup; the last
        answer repeats. An answer is one address or a tuple of them."""
        self._answers[name.lower()] = [(a,) if isinstance(a, str) else a for a in answers]

    def getaddrinfo(self, host: Any, port: Any, family: int = 0, type: int = 0,
                    proto: int = 0, flags: int = 0) -> list[Any]:
        name = host.decode() if isinstance(host, bytes) else str(host)
        self.lookups.append(name)
        answers = self._answers.get(name.lower())
        if answers is None:
            return self._real(host, port, family, type, proto, flags)
        addresses = answers.pop(0) if len(answers) > 1 else answers[0]
        result = []
        for address in addresses:
            # Each address is numeric, so the real resolver only builds the sockaddr.
            result.extend(self._real(address, port, family, type, proto, flags))
        return result


@pytest.fixture
def fake_dns(monkeypatch: pytest.MonkeyPatch) -> FakeDns:
    dns = FakeDns(socket.getaddrinfo)
    monkeypatch.setattr(socket, "getaddrinfo", dns.getaddrinfo)
    return dns
