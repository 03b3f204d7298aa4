"""wallboard live push: statement triggers NOTIFY 'ivr_floor' with the table name (issue 7)

Every change of a row that moves the wallboard (an operator's status, a call's row written by
the call journal, a ring attempt started or finished, a violation, an operator event) sends
``pg_notify('ivr_floor', <table>)``. Statement-level triggers: one notification per statement
(a journal batch of 200 calls is one), and Postgres folds identical notifications of one
transaction into one. Listeners (ivr/web/floor_events.py) recompute the snapshot on them.

Two indexes keep the wallboard's snapshot independent of the call history: open calls (a
partial index; a handful of rows) and calls per department by start (today's counts).

Revision ID: 0009
Revises: 0008
"""
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

FLOOR_TABLES = ("operators", "calls", "call_attempts", "violations", "operator_events", "departments")


def upgrade() -> None:
    op.execute("""
CREATE OR REPLACE FUNCTION ivr_floor_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify('ivr_floor', TG_TABLE_NAME);
    RETURN NULL;
END
$$""")
    for table in FLOOR_TABLES:
        op.execute(f"CREATE TRIGGER ivr_floor_notify AFTER INSERT OR UPDATE OR DELETE ON {table} "
                   f"FOR EACH STATEMENT EXECUTE FUNCTION ivr_floor_notify()")
    op.create_index('ix_calls_open_started', 'calls', ['started_at'], unique=False,
                    postgresql_where='ended_at IS NULL')
    op.create_index('ix_calls_department_started', 'calls', ['department_code', 'started_at'], unique=False)


def downgrade() -> None:
    op.drop_index('ix_calls_department_started', table_name='calls')
    op.drop_index('ix_calls_open_started', table_name='calls')
    for table in FLOOR_TABLES:
        op.execute(f"DROP TRIGGER IF EXISTS ivr_floor_notify ON {table}")
    op.execute("DROP FUNCTION IF EXISTS ivr_floor_notify()")
