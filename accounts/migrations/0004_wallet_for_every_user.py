"""Every user has a wallet: create the ones that users made before this rule never got.

Wallets used to be created on a user's first credit, so a user never credited had none and
staff could not find or credit them. From now on ``accounts.services.user_create`` and the
admin create the wallet with the user; this fills in the past.
"""

from __future__ import annotations

from django.db import migrations


def wallets_create_missing(apps, schema_editor) -> int:
    """Insert an empty wallet for every user without one, in one INSERT ... SELECT.

    Set-based, so tens of thousands of users take one statement rather than a round trip
    each. ``ON CONFLICT DO NOTHING`` (PostgreSQL, and SQLite since 3.24) keeps it safe when
    a wallet appears meanwhile (a credit while the migration runs): the unique index on
    ``user_id`` decides, and the existing wallet, whatever it holds, is left alone.
    Returns the number of wallets created.
    """
    user_model = apps.get_model("accounts", "User")
    wallet_model = apps.get_model("billing", "Wallet")
    quote = schema_editor.connection.ops.quote_name
    users, wallets = quote(user_model._meta.db_table), quote(wallet_model._meta.db_table)
    sql = (
        f"INSERT INTO {wallets} (user_id, posted_micros, pending_micros, created_at, updated_at) "
        f"SELECT u.id, 0, 0, CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM {users} u "
        f"WHERE NOT EXISTS (SELECT 1 FROM {wallets} w WHERE w.user_id = u.id) "
        "ON CONFLICT (user_id) DO NOTHING"
    )
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(sql)
        return cursor.rowcount


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0003_management_token"),
        ("billing", "0011_upstream_cost"),
    ]

    operations = [
        # Going back leaves the wallets: an empty one is harmless to the older code (it made
        # them lazily), and one that has since been credited must not lose its ledger.
        migrations.RunPython(wallets_create_missing, migrations.RunPython.noop),
    ]
