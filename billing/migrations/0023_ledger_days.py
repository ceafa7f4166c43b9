"""Ledger days: each wallet's entries summed per day, kind and model, for monthly statements
(``billing.models.ledger_days``), filled by the ledger-days job, not here: until its first
run, statements read the ledger as before.

On PostgreSQL, a BRIN index on the ledger's ``created_at``: the job reads a day of the
ledger at a time, and the ledger is append-only, written in time order, so a block range's
smallest and largest times are close together and a day's entries are a few ranges. It is
a few pages for millions of rows and costs the request path's insert next to nothing (a
b-tree would be one more tree to descend per charge). Built with a plain CREATE INDEX: a
short lock on the ledger while it reads it (seconds for tens of millions of entries).
"""

import django.db.models.deletion
from django.db import migrations, models
from django.db.backends.base.schema import BaseDatabaseSchemaEditor
from django.db.migrations.state import StateApps

BRIN_INDEX = "billing_ledger_created_brin"


def brin_create(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        # autosummarize: ranges filled since the last vacuum are summarised as they close,
        # so the index stays precise on a table that autovacuum seldom visits.
        schema_editor.execute(
            f"CREATE INDEX IF NOT EXISTS {BRIN_INDEX} ON billing_ledgerentry "
            "USING brin (created_at) WITH (autosummarize = on)"
        )


def brin_drop(apps: StateApps, schema_editor: BaseDatabaseSchemaEditor) -> None:
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(f"DROP INDEX IF EXISTS {BRIN_INDEX}")


class Migration(migrations.Migration):
    dependencies = [
        ("billing", "0022_ledger_wallet_credits"),
    ]

    operations = [
        migrations.CreateModel(
            name="LedgerDayMark",
            fields=[
                (
                    "id",
                    models.PositiveSmallIntegerField(default=1, primary_key=True, serialize=False),
                ),
                ("complete_before", models.DateTimeField()),
                ("tail_after_id", models.BigIntegerField()),
                ("updated_at", models.DateTimeField(auto_now=True)),
            ],
            options={
                "constraints": [
                    models.CheckConstraint(
                        condition=models.Q(("id", 1)), name="billing_ledgerdaymark_one_row"
                    )
                ],
            },
        ),
        migrations.CreateModel(
            name="LedgerDay",
            fields=[
                (
                    "id",
                    models.BigAutoField(
                        auto_created=True, primary_key=True, serialize=False, verbose_name="ID"
                    ),
                ),
                ("day", models.DateField()),
                ("kind", models.CharField(max_length=16)),
                ("model", models.CharField(blank=True, max_length=200)),
                ("entries", models.PositiveIntegerField()),
                ("amount_micros", models.BigIntegerField()),
                ("last_entry_id", models.BigIntegerField()),
                (
                    "wallet",
                    models.ForeignKey(
                        db_index=False,
                        on_delete=django.db.models.deletion.PROTECT,
                        related_name="+",
                        to="billing.wallet",
                    ),
                ),
            ],
            options={
                "constraints": [
                    models.UniqueConstraint(
                        fields=("wallet", "day", "kind", "model"),
                        name="billing_ledgerday_one_row_per_key",
                    ),
                    models.CheckConstraint(
                        condition=models.Q(("entries__gt", 0)),
                        name="billing_ledgerday_entries_positive",
                    ),
                ],
            },
        ),
        migrations.AddIndex(
            model_name="ledgerday",
            index=models.Index(fields=["day"], name="billing_ledgerday_day"),
        ),
        migrations.RunPython(brin_create, brin_drop),
    ]
