"""The low-balance alert is written by the database, in the transaction that moved money.

When a wallet's posted balance goes from at or above the user's threshold to below it, a
trigger inserts one outbox message. Staying below writes nothing more; a top-up above the
threshold and a new fall writes the next one. The posted balance is used, not the
available one, so that holds that come and go with every request cannot flap the alert.
"""

from django.db import migrations

PG_CREATE = """
CREATE FUNCTION billing_wallet_low_balance() RETURNS trigger
LANGUAGE plpgsql AS $$
DECLARE
    threshold bigint;
BEGIN
    SELECT threshold_micros INTO threshold FROM billing_balancealert
     WHERE user_id = NEW.user_id;
    IF threshold IS NOT NULL AND OLD.posted_micros >= threshold
       AND NEW.posted_micros < threshold THEN
        INSERT INTO billing_outboxmessage (kind, user_id, payload, created_at,
                                           next_attempt_at, attempts, last_error)
        VALUES ('low_balance', NEW.user_id,
                json_build_object('posted_micros', NEW.posted_micros,
                                  'threshold_micros', threshold),
                now(), now(), 0, '');
    END IF;
    RETURN NEW;
END;
$$;
CREATE TRIGGER billing_wallet_low_balance AFTER UPDATE OF posted_micros ON billing_wallet
    FOR EACH ROW EXECUTE FUNCTION billing_wallet_low_balance();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS billing_wallet_low_balance ON billing_wallet;
DROP FUNCTION IF EXISTS billing_wallet_low_balance();
"""
SQLITE_CREATE = """
CREATE TRIGGER billing_wallet_low_balance AFTER UPDATE OF posted_micros ON billing_wallet
WHEN EXISTS (SELECT 1 FROM billing_balancealert a WHERE a.user_id = NEW.user_id
             AND OLD.posted_micros >= a.threshold_micros
             AND NEW.posted_micros < a.threshold_micros)
BEGIN
    INSERT INTO billing_outboxmessage (kind, user_id, payload, created_at, next_attempt_at,
                                       attempts, last_error)
    SELECT 'low_balance', NEW.user_id,
           json_object('posted_micros', NEW.posted_micros,
                       'threshold_micros', a.threshold_micros),
           strftime('%Y-%m-%d %H:%M:%f', 'now'), strftime('%Y-%m-%d %H:%M:%f', 'now'), 0, ''
      FROM billing_balancealert a WHERE a.user_id = NEW.user_id;
END;
"""
SQLITE_DROP = "DROP TRIGGER IF EXISTS billing_wallet_low_balance;"


def _run(by_vendor):
    def run(apps, schema_editor):
        statement = by_vendor.get(schema_editor.connection.vendor)
        if statement is None:
            raise NotImplementedError(
                f"No low-balance trigger for {schema_editor.connection.vendor}.")
        # params=None: the bodies hold literal % signs that are not placeholders.
        schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0006_balance_alerts_and_outbox")]

    operations = [
        migrations.RunPython(_run({"postgresql": PG_CREATE, "sqlite": SQLITE_CREATE}),
                             _run({"postgresql": PG_DROP, "sqlite": SQLITE_DROP})),
    ]
