"""speech dialog: callback / handed_over results, callback time, task due time, utterances (issue 5)

Revision ID: 0007
Revises: 0006
"""
from alembic import op
import sqlalchemy as sa

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None

_JOB_STATES = ("pending", "scheduled", "dialing", "sent", "confirmed", "not_received", "delivered", "callback",
               "handed_over", "no_action", "exhausted", "expired", "cancelled", "failed")
_RESULTS = ("confirmed", "not_received", "delivered", "callback", "handed_over", "no_action", "exhausted", "expired",
            "cancelled", "failed")
_OLD_JOB_STATES = ("pending", "scheduled", "dialing", "sent", "confirmed", "not_received", "delivered",
                   "no_action", "exhausted", "expired", "cancelled", "failed")
_OLD_RESULTS = ("confirmed", "not_received", "delivered", "no_action", "exhausted", "expired", "cancelled", "failed")


def _in(column, values):
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


def _checks(job_states, results):
    op.drop_constraint(op.f('ck_notification_jobs_status_known'), 'notification_jobs', type_='check')
    op.drop_constraint(op.f('ck_notification_jobs_result_known'), 'notification_jobs', type_='check')
    op.create_check_constraint(op.f('ck_notification_jobs_status_known'), 'notification_jobs',
                               _in('status', job_states))
    op.create_check_constraint(op.f('ck_notification_jobs_result_known'), 'notification_jobs',
                               'result IS NULL OR ' + _in('result', results))


def upgrade() -> None:
    _checks(_JOB_STATES, _RESULTS)
    op.add_column('notification_jobs', sa.Column('callback_at', sa.DateTime(timezone=True), nullable=True))
    op.add_column('manager_tasks', sa.Column('due_at', sa.DateTime(timezone=True), nullable=True))
    op.create_table('utterances',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('attempt_id', sa.BigInteger(), nullable=False),
    sa.Column('seq', sa.Integer(), nullable=False),
    sa.Column('step', sa.String(length=20), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('duration_s', sa.Float(), nullable=False),
    sa.Column('audio_path', sa.String(length=300), nullable=True),
    sa.Column('transcript', sa.Text(), nullable=True),
    sa.Column('intent', sa.String(length=20), nullable=True),
    sa.Column('resolved_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('asr_ms', sa.Integer(), nullable=True),
    sa.Column('engine', sa.String(length=40), nullable=True),
    sa.ForeignKeyConstraint(['attempt_id'], ['notification_attempts.id'], name=op.f('fk_utterances_attempt_id_notification_attempts'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_utterances')),
    sa.UniqueConstraint('attempt_id', 'seq', name='uq_utterances_attempt_seq')
    )
    op.create_index(op.f('ix_utterances_attempt_id'), 'utterances', ['attempt_id'], unique=False)


def downgrade() -> None:
    op.drop_index(op.f('ix_utterances_attempt_id'), table_name='utterances')
    op.drop_table('utterances')
    op.drop_column('manager_tasks', 'due_at')
    op.drop_column('notification_jobs', 'callback_at')
    _checks(_OLD_JOB_STATES, _OLD_RESULTS)
