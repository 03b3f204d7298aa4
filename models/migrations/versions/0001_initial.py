"""initial schema: clients, phones, departments, operators, calls

Revision ID: 0001
Revises: 
Create Date: 2026-11-23 12:24:11.598864
"""
from alembic import op
import sqlalchemy as sa


revision = '0001'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('clients',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('full_name', sa.String(length=300), nullable=False),
    sa.Column('company', sa.String(length=300), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_clients'))
    )
    op.create_table('departments',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('code', sa.String(length=40), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_departments')),
    sa.UniqueConstraint('code', name=op.f('uq_departments_code'))
    )
    op.create_table('calls',
    sa.Column('id', sa.BigInteger(), nullable=False),
    sa.Column('call_uid', sa.String(length=64), nullable=False),
    sa.Column('direction', sa.Enum('inbound', 'outbound', 'internal', name='call_direction'), nullable=False),
    sa.Column('from_number', sa.String(length=80), nullable=True),
    sa.Column('from_e164', sa.String(length=16), nullable=True),
    sa.Column('caller_name', sa.String(length=80), nullable=True),
    sa.Column('to_number', sa.String(length=80), nullable=True),
    sa.Column('client_id', sa.Integer(), nullable=True),
    sa.Column('channel_name', sa.String(length=120), nullable=True),
    sa.Column('started_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('answered_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('ended_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('result', sa.String(length=40), nullable=True),
    sa.Column('digits', sa.String(length=64), nullable=True),
    sa.Column('hangup_cause', sa.Integer(), nullable=True),
    sa.Column('hangup_by', sa.String(length=20), nullable=True),
    sa.Column('flow', sa.String(length=40), nullable=True),
    sa.Column('notes', sa.Text(), nullable=True),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_calls_client_id_clients'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_calls')),
    sa.UniqueConstraint('call_uid', name=op.f('uq_calls_call_uid'))
    )
    op.create_index(op.f('ix_calls_from_e164'), 'calls', ['from_e164'], unique=False)
    op.create_index('ix_calls_started_at', 'calls', ['started_at'], unique=False)
    op.create_table('client_phones',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('client_id', sa.Integer(), nullable=False),
    sa.Column('e164', sa.String(length=16), nullable=False),
    sa.Column('label', sa.String(length=40), nullable=True),
    sa.CheckConstraint("e164 ~ '^\\+[1-9][0-9]{6,14}$'", name=op.f('ck_client_phones_e164_format')),
    sa.ForeignKeyConstraint(['client_id'], ['clients.id'], name=op.f('fk_client_phones_client_id_clients'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_client_phones')),
    sa.UniqueConstraint('e164', name=op.f('uq_client_phones_e164'))
    )
    op.create_index(op.f('ix_client_phones_client_id'), 'client_phones', ['client_id'], unique=False)
    op.create_table('operators',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('extension', sa.String(length=20), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.CheckConstraint("extension ~ '^[0-9]{2,8}$'", name=op.f('ck_operators_extension_digits')),
    sa.ForeignKeyConstraint(['department_id'], ['departments.id'], name=op.f('fk_operators_department_id_departments'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_operators')),
    sa.UniqueConstraint('extension', name=op.f('uq_operators_extension'))
    )


def downgrade() -> None:
    op.drop_table('operators')
    op.drop_index(op.f('ix_client_phones_client_id'), table_name='client_phones')
    op.drop_table('client_phones')
    op.drop_index('ix_calls_started_at', table_name='calls')
    op.drop_index(op.f('ix_calls_from_e164'), table_name='calls')
    op.drop_table('calls')
    op.drop_table('departments')
    op.drop_table('clients')
    sa.Enum(name='call_direction').drop(op.get_bind(), checkfirst=True)
