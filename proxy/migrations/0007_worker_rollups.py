from django.db import migrations, models

# The dashboard's "money in" reads the ledger's credits (top-ups, vouchers, staff
# adjustments) by time; the ledger also holds one charge per request, so without this
# partial index that read would scan every charge. It belongs in billing.LedgerEntry.Meta
# (named so it can move there unchanged); it is made here because billing is not this
# change's to edit. PostgreSQL only: the embedded SQLite mode has small ledgers.
LEDGER_CREDITS_INDEX = (
    "CREATE INDEX IF NOT EXISTS billing_ledger_credits_by_time ON billing_ledgerentry "
    "(created_at) WHERE kind IN ('topup', 'voucher', 'adjustment')")


def ledger_index_create(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute(LEDGER_CREDITS_INDEX)


def ledger_index_drop(apps, schema_editor):
    if schema_editor.connection.vendor == "postgresql":
        schema_editor.execute("DROP INDEX IF EXISTS billing_ledger_credits_by_time")


class Migration(migrations.Migration):

    dependencies = [
        ('proxy', '0006_upstream_costs'),
        ('billing', '0010_dialects_cache_writes_and_endpoint'),
    ]

    operations = [
        migrations.CreateModel(
            name='WorkerRollup',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('period', models.CharField(choices=[('hour', 'Hour'), ('day', 'Day')], max_length=4)),
                ('bucket_start', models.DateTimeField()),
                ('worker', models.CharField(blank=True, max_length=200)),
                ('model', models.CharField(max_length=200)),
                ('requests', models.PositiveIntegerField(default=0)),
                ('failed_requests', models.PositiveIntegerField(default=0)),
                ('prompt_tokens', models.BigIntegerField(default=0)),
                ('completion_tokens', models.BigIntegerField(default=0)),
                ('cost_micros', models.BigIntegerField(default=0)),
                ('known_cost_micros', models.BigIntegerField(default=0)),
                ('upstream_cost_micros', models.BigIntegerField(default=0)),
                ('unknown_cost_requests', models.PositiveIntegerField(default=0)),
                ('latency_hist', models.JSONField(default=dict)),
                ('ttft_hist', models.JSONField(default=dict)),
            ],
            options={
                'indexes': [models.Index(fields=['period', 'bucket_start'], name='proxy_workerrollup_bucket')],
                'constraints': [models.UniqueConstraint(fields=('period', 'bucket_start', 'worker', 'model'), name='proxy_workerrollup_one_row_per_bucket')],
            },
        ),
        migrations.RunPython(ledger_index_create, ledger_index_drop),
    ]
