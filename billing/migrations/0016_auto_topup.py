"""Auto top-up: a wallet's settings for charging its saved card when the balance runs low,
and each charge, claimed before Stripe is called (see billing/services/auto_topup)."""

import django.db.models.deletion
from django.db import migrations, models


class Migration(migrations.Migration):

    dependencies = [
        ('billing', '0015_wallet_billing_profile'),
    ]

    operations = [
        migrations.CreateModel(
            name='AutoTopUpCharge',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('amount_micros', models.BigIntegerField()),
                ('month', models.DateField()),
                ('status', models.CharField(choices=[('claimed', 'Claimed'), ('processing', 'Processing'), ('succeeded', 'Succeeded and credited'), ('failed', 'Failed')], default='claimed', max_length=16)),
                ('stripe_customer_id', models.CharField(max_length=255)),
                ('payment_method_id', models.CharField(max_length=255)),
                ('payment_intent_id', models.CharField(blank=True, max_length=255)),
                ('failure_reason', models.CharField(blank=True, max_length=500)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('credited_entry', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='billing.ledgerentry')),
                ('wallet', models.ForeignKey(db_index=False, on_delete=django.db.models.deletion.PROTECT, related_name='auto_topup_charges', to='billing.wallet')),
            ],
            options={
                'ordering': ['-id'],
            },
        ),
        migrations.CreateModel(
            name='AutoTopUp',
            fields=[
                ('id', models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name='ID')),
                ('enabled', models.BooleanField(default=False)),
                ('threshold_micros', models.BigIntegerField()),
                ('amount_micros', models.BigIntegerField()),
                ('monthly_ceiling_micros', models.BigIntegerField()),
                ('month', models.DateField()),
                ('month_total_micros', models.BigIntegerField(default=0)),
                ('stripe_customer_id', models.CharField(blank=True, max_length=255)),
                ('payment_method_id', models.CharField(blank=True, max_length=255)),
                ('card_brand', models.CharField(blank=True, max_length=32)),
                ('card_last4', models.CharField(blank=True, max_length=4)),
                ('disabled_reason', models.CharField(blank=True, max_length=500)),
                ('disabled_at', models.DateTimeField(blank=True, null=True)),
                ('created_at', models.DateTimeField(auto_now_add=True)),
                ('updated_at', models.DateTimeField(auto_now=True)),
                ('wallet', models.OneToOneField(on_delete=django.db.models.deletion.PROTECT, related_name='auto_topup', to='billing.wallet')),
                ('in_flight_charge', models.OneToOneField(blank=True, null=True, on_delete=django.db.models.deletion.PROTECT, related_name='+', to='billing.autotopupcharge')),
            ],
        ),
        migrations.AddIndex(
            model_name='autotopupcharge',
            index=models.Index(fields=['wallet', '-id'], name='billing_autotopupcharge_wallet'),
        ),
        migrations.AddIndex(
            model_name='autotopupcharge',
            index=models.Index(condition=models.Q(('status__in', ['claimed', 'processing'])), fields=['created_at'], name='billing_autotopupcharge_open'),
        ),
        migrations.AddConstraint(
            model_name='autotopupcharge',
            constraint=models.CheckConstraint(condition=models.Q(('amount_micros__gt', 0)), name='billing_autotopupcharge_amount_positive'),
        ),
        migrations.AddConstraint(
            model_name='autotopupcharge',
            constraint=models.CheckConstraint(condition=models.Q(models.Q(('status', 'succeeded'), _negated=True), ('credited_entry__isnull', False), _connector='OR'), name='billing_autotopupcharge_succeeded_is_credited'),
        ),
        migrations.AddConstraint(
            model_name='autotopupcharge',
            constraint=models.UniqueConstraint(condition=models.Q(('payment_intent_id', ''), _negated=True), fields=('payment_intent_id',), name='billing_autotopupcharge_intent_unique'),
        ),
        migrations.AddConstraint(
            model_name='autotopupcharge',
            constraint=models.UniqueConstraint(condition=models.Q(('status__in', ['claimed', 'processing'])), fields=('wallet',), name='billing_autotopupcharge_one_in_flight'),
        ),
        migrations.AddConstraint(
            model_name='autotopup',
            constraint=models.CheckConstraint(condition=models.Q(('amount_micros__gt', 0)), name='billing_autotopup_amount_positive'),
        ),
        migrations.AddConstraint(
            model_name='autotopup',
            constraint=models.CheckConstraint(condition=models.Q(('threshold_micros__gte', 0)), name='billing_autotopup_threshold_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='autotopup',
            constraint=models.CheckConstraint(condition=models.Q(('monthly_ceiling_micros__gte', models.F('amount_micros'))), name='billing_autotopup_ceiling_covers_amount'),
        ),
        migrations.AddConstraint(
            model_name='autotopup',
            constraint=models.CheckConstraint(condition=models.Q(('month_total_micros__gte', 0)), name='billing_autotopup_month_total_not_negative'),
        ),
        migrations.AddConstraint(
            model_name='autotopup',
            constraint=models.CheckConstraint(condition=models.Q(('enabled', False), models.Q(('payment_method_id', ''), _negated=True), _connector='OR'), name='billing_autotopup_enabled_has_card'),
        ),
        migrations.AddConstraint(
            model_name='autotopup',
            constraint=models.UniqueConstraint(condition=models.Q(('stripe_customer_id', ''), _negated=True), fields=('stripe_customer_id',), name='billing_autotopup_customer_unique'),
        ),
    ]
