from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ("accounts", "0004_wallet_for_every_user"),
    ]

    operations = [
        migrations.AddField(
            model_name="apikey",
            name="playground",
            field=models.BooleanField(default=False, editable=False),
        ),
    ]
