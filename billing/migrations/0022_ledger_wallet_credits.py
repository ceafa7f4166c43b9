"""A partial index of each wallet's credits (top-ups, vouchers, refunds, adjustments) by
id, newest first: the portal's credits list reads a wallet's latest 50 credits in one short
index scan, however many charges the wallet has. Charges (one per request) do not match its
condition, so the request path never writes to it; credits are few, so it is small and
builds in moments (plain CREATE INDEX: a short lock on the ledger while it builds)."""

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0021_partition_usage_and_holds"),
    ]

    operations = [
        migrations.AddIndex(
            model_name="ledgerentry",
            index=models.Index(
                condition=models.Q(("kind__in", ["topup", "voucher", "refund", "adjustment"])),
                fields=["wallet", "-id"], name="billing_ledger_wallet_credits"),
        ),
    ]
