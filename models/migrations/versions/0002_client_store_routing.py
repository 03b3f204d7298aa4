"""client store, routing, operators, violations

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 13:51:59.148382
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('ruleset_versions',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('sha256', sa.String(length=64), nullable=False),
    sa.Column('parsed', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('applied_by', sa.String(length=80), nullable=True),
    sa.Column('applied_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('active', sa.Boolean(), server_default='true', nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_ruleset_versions'))
    )
    op.create_table('call_attempts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('call_uid', sa.String(length=64), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=True),
    sa.Column('extension', sa.String(length=20), nullable=False),
    sa.Column('step', sa.String(length=20), nullable=False),
    sa.Column('department_code', sa.String(length=40), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=20), nullable=True),
    sa.Column('hangup_cause', sa.Integer(), nullable=True),
    sa.Column('talk_seconds', sa.Float(), nullable=True),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], name=op.f('fk_call_attempts_operator_id_operators'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_call_attempts'))
    )
    op.create_index(op.f('ix_call_attempts_call_uid'), 'call_attempts', ['call_uid'], unique=False)
    op.create_index('ix_call_attempts_operator_started', 'call_attempts', ['operator_id', 'started_at'], unique=False)
    op.create_table('operator_events',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('event', sa.String(length=30), nullable=False),
    sa.Column('status', sa.Enum('logged_out', 'available', 'paused', name='operator_status'), nullable=True),
    sa.Column('reason', sa.String(length=200), nullable=True),
    sa.Column('cause', sa.String(length=30), nullable=True),
    sa.Column('call_uid', sa.String(length=64), nullable=True),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], name=op.f('fk_operator_events_operator_id_operators'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_operator_events'))
    )
    op.create_index('ix_operator_events_operator_at', 'operator_events', ['operator_id', 'at'], unique=False)
    op.create_table('summons',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('call_uid', sa.String(length=64), nullable=False),
    sa.Column('consultant_id', sa.Integer(), nullable=True),
    sa.Column('manager_id', sa.Integer(), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('deadline_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('confirmed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', sa.String(length=20), server_default='pending', nullable=False),
    sa.ForeignKeyConstraint(['consultant_id'], ['operators.id'], name=op.f('fk_summons_consultant_id_operators'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['manager_id'], ['operators.id'], name=op.f('fk_summons_manager_id_operators'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_summons'))
    )
    op.create_table('violations',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=False),
    sa.Column('call_uid', sa.String(length=64), nullable=True),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('standard_seconds', sa.Float(), nullable=False),
    sa.Column('delay_seconds', sa.Float(), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], name=op.f('fk_violations_operator_id_operators'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_violations'))
    )
    op.create_index('ix_violations_at', 'violations', ['at'], unique=False)
    op.create_table('callback_requests',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('e164', sa.String(length=16), nullable=True),
    sa.Column('raw_number', sa.String(length=80), nullable=True),
    sa.Column('client_id', sa.Integer(), nullable=True),
    sa.Column('call_uid', sa.String(length=64), nullable=True),
    sa.Column('department_code', sa.String(length=40), nullable=True),
    sa.Column('reason', sa.String(length=30), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='open', nullable=False),
    sa.Column('requests', sa.Integer(), server_default='1', nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_callback_requests_client_id_clients'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_callback_requests'))
    )
    op.create_index('uq_callback_requests_open_e164', 'callback_requests', ['e164'], unique=True, postgresql_where=sa.text("status = 'open' AND e164 IS NOT NULL"))
    op.create_table('contacts',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('operator_id', sa.Integer(), nullable=True),
    sa.Column('direction', postgresql.ENUM('inbound', 'outbound', 'internal', name='call_direction', create_type=False), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('call_uid', sa.String(length=64), nullable=True),
    sa.Column('result', sa.String(length=40), nullable=True),
    sa.Column('note', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_contacts_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], name=op.f('fk_contacts_operator_id_operators'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_contacts'))
    )
    op.create_index('ix_contacts_client_at', 'contacts', ['client_id', 'at'], unique=False)
    op.create_table('deals',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('external_id', sa.String(length=64), nullable=True),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('amount', sa.Numeric(precision=14, scale=2), nullable=True),
    sa.Column('operator_id', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_deals_client_id_clients'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['operator_id'], ['operators.id'], name=op.f('fk_deals_operator_id_operators'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_deals')),
    sa.UniqueConstraint('external_id', name=op.f('uq_deals_external_id'))
    )
    op.create_index(op.f('ix_deals_client_id'), 'deals', ['client_id'], unique=False)
    op.add_column('calls', sa.Column('rule', sa.String(length=80), nullable=True))
    op.add_column('calls', sa.Column('department_code', sa.String(length=40), nullable=True))
    op.add_column('calls', sa.Column('topic', sa.String(length=40), nullable=True))
    op.add_column('calls', sa.Column('answered_by_operator_id', sa.Integer(), nullable=True))
    op.add_column('calls', sa.Column('wait_seconds', sa.Float(), nullable=True))
    op.add_column('calls', sa.Column('talk_seconds', sa.Float(), nullable=True))
    op.add_column('calls', sa.Column('degraded', sa.Boolean(), server_default='false', nullable=False))
    op.create_foreign_key(op.f('fk_calls_answered_by_operator_id_operators'), 'calls', 'operators', ['answered_by_operator_id'], ['id'], ondelete='SET NULL')
    op.add_column('clients', sa.Column('external_id', sa.String(length=64), nullable=True))
    op.add_column('clients', sa.Column('address_name', sa.String(length=200), nullable=True))
    op.add_column('clients', sa.Column('segment', sa.String(length=30), nullable=True))
    op.add_column('clients', sa.Column('stage', sa.String(length=30), server_default='potential', nullable=False))
    op.add_column('clients', sa.Column('deals_count', sa.Integer(), server_default='0', nullable=False))
    op.add_column('clients', sa.Column('assigned_operator_id', sa.Integer(), nullable=True))
    op.add_column('clients', sa.Column('department_id', sa.Integer(), nullable=True))
    op.add_column('clients', sa.Column('timezone', sa.String(length=64), nullable=True))
    op.add_column('clients', sa.Column('notify_channel', sa.String(length=10), server_default='call', nullable=False))
    op.add_column('clients', sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False))
    op.create_unique_constraint(op.f('uq_clients_external_id'), 'clients', ['external_id'])
    op.create_foreign_key(op.f('fk_clients_department_id_departments'), 'clients', 'departments', ['department_id'], ['id'], ondelete='SET NULL')
    op.create_foreign_key(op.f('fk_clients_assigned_operator_id_operators'), 'clients', 'operators', ['assigned_operator_id'], ['id'], ondelete='SET NULL')
    op.add_column('departments', sa.Column('strategy', sa.String(length=20), server_default='longest_idle', nullable=False))
    op.add_column('departments', sa.Column('ring_timeout', sa.Integer(), server_default='15', nullable=False))
    op.add_column('departments', sa.Column('wrapup_seconds', sa.Integer(), server_default='10', nullable=False))
    op.add_column('departments', sa.Column('timezone', sa.String(length=64), server_default='Europe/Moscow', nullable=False))
    op.add_column('operators', sa.Column('sip_secret', sa.String(length=64), nullable=True))
    op.add_column('operators', sa.Column('sip_contact', sa.String(length=200), nullable=True))
    op.add_column('operators', sa.Column('status', sa.Enum('logged_out', 'available', 'paused', name='operator_status'), server_default='available', nullable=False))
    op.add_column('operators', sa.Column('pause_reason', sa.String(length=200), nullable=True))
    op.add_column('operators', sa.Column('status_since', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False))
    # Check constraints are not autogenerated: written by hand, named as models.tables names them.
    op.create_check_constraint('segment_known', 'clients',
                               "segment IS NULL OR segment IN ('retail', 'small_wholesale', 'wholesale', 'large_wholesale')")
    op.create_check_constraint('notify_channel_known', 'clients', "notify_channel IN ('call', 'sms')")
    op.create_check_constraint('deals_count_positive', 'clients', 'deals_count >= 0')
    op.create_check_constraint('code_format', 'departments', "code ~ '^[a-z][a-z0-9_]{0,39}$'")


def downgrade() -> None:
    op.drop_constraint(op.f('ck_departments_code_format'), 'departments', type_='check')
    op.drop_constraint(op.f('ck_clients_deals_count_positive'), 'clients', type_='check')
    op.drop_constraint(op.f('ck_clients_notify_channel_known'), 'clients', type_='check')
    op.drop_constraint(op.f('ck_clients_segment_known'), 'clients', type_='check')
    op.drop_column('operators', 'status_since')
    op.drop_column('operators', 'pause_reason')
    op.drop_column('operators', 'status')
    op.drop_column('operators', 'sip_contact')
    op.drop_column('operators', 'sip_secret')
    op.drop_column('departments', 'timezone')
    op.drop_column('departments', 'wrapup_seconds')
    op.drop_column('departments', 'ring_timeout')
    op.drop_column('departments', 'strategy')
    op.drop_constraint(op.f('fk_clients_assigned_operator_id_operators'), 'clients', type_='foreignkey')
    op.drop_constraint(op.f('fk_clients_department_id_departments'), 'clients', type_='foreignkey')
    op.drop_constraint(op.f('uq_clients_external_id'), 'clients', type_='unique')
    op.drop_column('clients', 'updated_at')
    op.drop_column('clients', 'notify_channel')
    op.drop_column('clients', 'timezone')
    op.drop_column('clients', 'department_id')
    op.drop_column('clients', 'assigned_operator_id')
    op.drop_column('clients', 'deals_count')
    op.drop_column('clients', 'stage')
    op.drop_column('clients', 'segment')
    op.drop_column('clients', 'address_name')
    op.drop_column('clients', 'external_id')
    op.drop_constraint(op.f('fk_calls_answered_by_operator_id_operators'), 'calls', type_='foreignkey')
    op.drop_column('calls', 'degraded')
    op.drop_column('calls', 'talk_seconds')
    op.drop_column('calls', 'wait_seconds')
    op.drop_column('calls', 'answered_by_operator_id')
    op.drop_column('calls', 'topic')
    op.drop_column('calls', 'department_code')
    op.drop_column('calls', 'rule')
    op.drop_index(op.f('ix_deals_client_id'), table_name='deals')
    op.drop_table('deals')
    op.drop_index('ix_contacts_client_at', table_name='contacts')
    op.drop_table('contacts')
    op.drop_index('uq_callback_requests_open_e164', table_name='callback_requests', postgresql_where=sa.text("status = 'open' AND e164 IS NOT NULL"))
    op.drop_table('callback_requests')
    op.drop_index('ix_violations_at', table_name='violations')
    op.drop_table('violations')
    op.drop_table('summons')
    op.drop_index('ix_operator_events_operator_at', table_name='operator_events')
    op.drop_table('operator_events')
    op.drop_index('ix_call_attempts_operator_started', table_name='call_attempts')
    op.drop_index(op.f('ix_call_attempts_call_uid'), table_name='call_attempts')
    op.drop_table('call_attempts')
    op.drop_table('ruleset_versions')
    sa.Enum(name='operator_status').drop(op.get_bind(), checkfirst=True)
