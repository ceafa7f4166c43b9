"""What a key's allow-lists may hold: normalised, or refused with a message that says why."""

from __future__ import annotations

from ipaddress import ip_network

from accounts.errors import AccountsError


def clean_allowed_models(models: object) -> list[str]:
    if models in (None, ""):
        return []
    if not isinstance(models, list) or not all(isinstance(m, str) for m in models):
        raise AccountsError("Allowed models must be a list of model names.")
    cleaned = sorted({m.strip() for m in models if m.strip()})
    if any(len(m) > 200 for m in cleaned):
        raise AccountsError("A model name is at most 200 characters.")
    return cleaned


def clean_allowed_ips(networks: object) -> list[str]:
    if networks in (None, ""):
        return []
    if not isinstance(networks, list) or not all(isinstance(n, str) for n in networks):
        raise AccountsError("Allowed IPs must be a list of networks in CIDR form.")
    cleaned = []
    for network in networks:
        try:
            # strict=False: 10.1.2.3/8 means the network 10.0.0.0/8, as people write it.
            cleaned.append(str(ip_network(network.strip(), strict=False)))
        except ValueError:
            raise AccountsError(f"{network!r} is not an IP network in CIDR form "
                                "(e.g. 203.0.113.0/24 or 2001:db8::/32).") from None
    return sorted(set(cleaned))
