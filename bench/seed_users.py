"""Create benchmark users, each with a balance and one API key; print the keys, one a line.

    DATABASE_URL=... python bench/seed_users.py --count 500 --credit-micros 1000000 [--rpm N]
        [--tpm N] [--max-concurrency N]

Through the same services as the ops CLI (user_create, wallet_credit, api_key_create), in
one process: ``manage.py router user create`` would start Django once per user.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "router_admin.settings")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--credit-micros", type=int, required=True)
    parser.add_argument("--prefix", default="bench")
    parser.add_argument("--rpm", type=int, default=None, help="requests per minute per key")
    parser.add_argument("--tpm", type=int, default=None, help="tokens per minute per key")
    parser.add_argument("--max-concurrency", type=int, default=None,
                        help="requests in flight per key")
    args = parser.parse_args()

    import django

    django.setup()
    from accounts.services import api_key_create, user_create
    from billing.services import wallet_credit

    for i in range(args.count):
        user = user_create(email=f"{args.prefix}{i}@example.com")
        if args.credit_micros:
            wallet_credit(user=user, amount_micros=args.credit_micros,
                          idempotency_key=f"bench-seed-{user.pk}", memo="benchmark",
                          kind="topup")
        print(api_key_create(user=user, rpm=args.rpm, tpm=args.tpm,
                             max_concurrency=args.max_concurrency).secret)


if __name__ == "__main__":
    main()
