"""Card top-ups name the wallet they credit: the payer's own, or an organization's.

The rows before this one were all personal: each is given its payer's own wallet, in one
UPDATE, so that from here on every row says which wallet it credits."""

import django.db.models.deletion
from django.db import migrations, models
from django.db.models import OuterRef, Subquery


def backfill(apps, schema_editor):
    CheckoutTopUp = apps.get_model("billing", "CheckoutTopUp")
    Wallet = apps.get_model("billing", "Wallet")
    own_wallet = Wallet.objects.filter(user_id=OuterRef("user_id")).values("pk")[:1]
    CheckoutTopUp.objects.filter(wallet__isnull=True).update(wallet_id=Subquery(own_wallet))


class Migration(migrations.Migration):

    dependencies = [
        ("billing", "0018_rollup_organization"),
    ]

    operations = [
        migrations.AddField(
            model_name="checkouttopup",
            name="wallet",
            field=models.ForeignKey(blank=True, db_index=False, null=True,
                                    on_delete=django.db.models.deletion.PROTECT,
                                    related_name="checkout_topups", to="billing.wallet"),
        ),
        migrations.RunPython(backfill, migrations.RunPython.noop),
        migrations.AddIndex(
            model_name="checkouttopup",
            index=models.Index(fields=["wallet", "-id"], name="billing_topup_wallet_recent"),
        ),
    ]
