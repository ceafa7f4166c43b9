"""The database, not the code, keeps the ledger append-only.

PostgreSQL and SQLite both get BEFORE UPDATE / BEFORE DELETE triggers that abort the
statement. PostgreSQL raises SQLSTATE 23001 (restrict_violation) so Django surfaces an
IntegrityError, as SQLite's RAISE(ABORT) does. TRUNCATE is left alone on purpose: it is
an operator's tool, and the test runner empties tables with it between tests.
"""

from django.db import migrations

PG_CREATE = """
CREATE FUNCTION billing_ledger_append_only() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'billing_ledgerentry is append-only: % refused', TG_OP
        USING ERRCODE = 'restrict_violation';
END;
$$;
CREATE TRIGGER billing_ledger_no_update BEFORE UPDATE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();
CREATE TRIGGER billing_ledger_no_delete BEFORE DELETE ON billing_ledgerentry
    FOR EACH ROW EXECUTE FUNCTION billing_ledger_append_only();
"""
PG_DROP = """
DROP TRIGGER IF EXISTS billing_ledger_no_update ON billing_ledgerentry;
DROP TRIGGER IF EXISTS billing_ledger_no_delete ON billing_ledgerentry;
DROP FUNCTION IF EXISTS billing_ledger_append_only();
"""
SQLITE_CREATE = [
    """CREATE TRIGGER billing_ledger_no_update BEFORE UPDATE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only: UPDATE refused'); END;""",
    """CREATE TRIGGER billing_ledger_no_delete BEFORE DELETE ON billing_ledgerentry
       BEGIN SELECT RAISE(ABORT, 'billing_ledgerentry is append-only: DELETE refused'); END;""",
]
SQLITE_DROP = [
    "DROP TRIGGER IF EXISTS billing_ledger_no_update;",
    "DROP TRIGGER IF EXISTS billing_ledger_no_delete;",
]


def _run(statements_by_vendor):
    def run(apps, schema_editor):
        statements = statements_by_vendor.get(schema_editor.connection.vendor)
        if statements is None:
            raise NotImplementedError(
                f"No append-only ledger trigger for {schema_editor.connection.vendor}."
            )
        for statement in [statements] if isinstance(statements, str) else statements:
            # params=None: the PL/pgSQL body has a literal % that is not a placeholder.
            schema_editor.execute(statement, params=None)

    return run


class Migration(migrations.Migration):
    dependencies = [("billing", "0001_initial")]

    operations = [
        migrations.RunPython(
            _run({"postgresql": PG_CREATE, "sqlite": SQLITE_CREATE}),
            _run({"postgresql": PG_DROP, "sqlite": SQLITE_DROP}),
        ),
    ]
