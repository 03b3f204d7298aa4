"""robot outcomes: SMS states, CRM webhook outbox, manager tasks (issue 4)

Revision ID: 0004
Revises: 0003
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None

_JOB_STATES = ("pending", "scheduled", "dialing", "sent", "confirmed", "not_received", "delivered",
               "no_action", "exhausted", "expired", "cancelled", "failed")
_RESULTS = ("confirmed", "not_received", "delivered", "no_action", "exhausted", "expired", "cancelled", "failed")
_ATTEMPT_STATES = ("dialing", "ringing", "answered", "sent", "done", "failed")
_OLD_JOB_STATES = ("pending", "scheduled", "dialing", "confirmed", "not_received", "no_action",
                   "exhausted", "expired", "cancelled", "failed")
_OLD_RESULTS = ("confirmed", "not_received", "no_action", "exhausted", "expired", "cancelled", "failed")
_OLD_ATTEMPT_STATES = ("dialing", "ringing", "answered", "done", "failed")


def _in(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _checks(job_states, results, attempt_states):
    # op.f: the names are final (the metadata's naming convention must not prefix them again).
    op.drop_constraint(op.f('ck_notification_jobs_status_known'), 'notification_jobs', type_='check')
    op.drop_constraint(op.f('ck_notification_jobs_result_known'), 'notification_jobs', type_='check')
    op.drop_constraint(op.f('ck_notification_attempts_state_known'), 'notification_attempts', type_='check')
    op.create_check_constraint(op.f('ck_notification_jobs_status_known'), 'notification_jobs',
                               _in('status', job_states))
    op.create_check_constraint(op.f('ck_notification_jobs_result_known'), 'notification_jobs',
                               'result IS NULL OR ' + _in('result', results))
    op.create_check_constraint(op.f('ck_notification_attempts_state_known'), 'notification_attempts',
                               _in('state', attempt_states))


def upgrade() -> None:
    _checks(_JOB_STATES, _RESULTS, _ATTEMPT_STATES)
    op.create_table('webhook_deliveries',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('job_id', sa.BigInteger(), nullable=False),
    sa.Column('event', sa.String(length=40), nullable=False),
    sa.Column('payload', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('next_try_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('tries', sa.Integer(), server_default='0', nullable=False),
    sa.Column('delivered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_error', sa.String(length=300), nullable=True),
    sa.ForeignKeyConstraint(['job_id'], ['notification_jobs.id'], name=op.f('fk_webhook_deliveries_job_id_notification_jobs'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_webhook_deliveries')),
    sa.UniqueConstraint('job_id', 'event', name='uq_webhook_deliveries_job_event')
    )
    op.create_index('ix_webhook_deliveries_due', 'webhook_deliveries', ['next_try_at'], unique=False,
                    postgresql_where=sa.text('delivered_at IS NULL'))
    op.create_table('manager_tasks',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=True),
    sa.Column('job_id', sa.BigInteger(), nullable=True),
    sa.Column('kind', sa.String(length=40), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('done_at', sa.DateTime(timezone=True), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_manager_tasks_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['job_id'], ['notification_jobs.id'], name=op.f('fk_manager_tasks_job_id_notification_jobs'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], name=op.f('fk_manager_tasks_operator_id_operators'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_manager_tasks')),
    sa.UniqueConstraint('job_id', 'kind', name='uq_manager_tasks_job_kind')
    )
    op.create_index(op.f('ix_manager_tasks_client_id'), 'manager_tasks', ['client_id'], unique=False)
    op.create_index('ix_manager_tasks_open', 'manager_tasks', ['operator_id'], unique=False,
                    postgresql_where=sa.text('done_at IS NULL'))


def downgrade() -> None:
    op.drop_table('manager_tasks')
    op.drop_table('webhook_deliveries')
    _checks(_OLD_JOB_STATES, _OLD_RESULTS, _OLD_ATTEMPT_STATES)
