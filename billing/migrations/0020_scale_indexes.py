from django.db import migrations, models


class Migration(migrations.Migration):
    """The indexes the big lists' keyset pages read (billing.keyset): each ends in
    ``(-created_at, -id)`` (``(-minute, -id)`` for refusals), the order every list is read
    in, so a page is one range of one index at any depth.

    Index writes per insert, before -> after (primary key, unique columns and their
    ``_like`` twins included): a usage record 6 -> 7 (``created_at``, ``(user, -created_at)``,
    ``(api_key, -created_at)`` and the organization's are replaced one for one; ``(user,
    model, ...)`` is new; the organization and flagged partial indexes are written only for
    their rows, as before); a hold 4 -> 5 on insert and 3 -> 4 on the settling UPDATE (never
    a HOT update: it changes ``status``, in the pending index's predicate); a ledger entry
    unchanged (its admin list reads the primary key); a refused-requests group 3 -> 4 (one
    upsert per key and minute, in batches, not per request).

    Plain AddIndex, not CREATE INDEX CONCURRENTLY: the concurrent form needs a non-atomic
    migration and does not exist on SQLite, and 0021 rebuilds the usage and hold tables as
    partitioned ones anyway (recreating these indexes from their definitions). Building
    them blocks writes to these tables while it runs: on a large live database, migrate in
    a quiet window."""

    dependencies = [("billing", "0019_checkout_topup_wallet")]

    operations = [
        migrations.RemoveIndex(model_name="usagerecord", name="billing_usa_user_id_48463c_idx"),
        migrations.RemoveIndex(model_name="usagerecord", name="billing_usa_api_key_dd8446_idx"),
        migrations.RemoveIndex(model_name="usagerecord", name="billing_usage_org"),
        # created_at's own index gives way to (-created_at, -id) below.
        migrations.AlterField(model_name="usagerecord", name="created_at",
                              field=models.DateTimeField(auto_now_add=True)),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["-created_at", "-id"], name="billing_usage_created")),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["user", "-created_at", "-id"], name="billing_usage_user")),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["user", "model", "-created_at", "-id"],
                               name="billing_usage_user_model")),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(fields=["api_key", "-created_at", "-id"], name="billing_usage_key")),
        migrations.AddIndex(
            model_name="usagerecord",
            index=models.Index(condition=models.Q(("organization__isnull", False)),
                               fields=["organization", "-created_at", "-id"],
                               name="billing_usage_org")),
        migrations.AddIndex(
            model_name="hold",
            index=models.Index(fields=["-created_at", "-id"], name="billing_hold_created")),
        migrations.AddIndex(
            model_name="refusedrequests",
            index=models.Index(fields=["-minute", "-id"], name="billing_refusal_minute")),
    ]
