"""dialplan versions: every applied Asterisk configuration with author, time, diff (issue 6)

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'dialplan_versions',
        sa.Column('id', sa.Integer(), nullable=False),
        sa.Column('instance', sa.String(length=64), nullable=False),
        sa.Column('applied_by', sa.String(length=80), nullable=True),
        sa.Column('applied_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
        sa.Column('outcome', sa.String(length=20), nullable=False),
        sa.Column('active', sa.Boolean(), server_default='false', nullable=False),
        sa.Column('rollback_of', sa.Integer(), nullable=True),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('files', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column('diff', sa.Text(), nullable=False),
        sa.Column('problems', sa.Text(), nullable=True),
        sa.Column('seconds', sa.Float(), nullable=True),
        sa.CheckConstraint("outcome IN ('applied', 'rolled_back')", name=op.f('ck_dialplan_versions_outcome_known')),
        sa.ForeignKeyConstraint(['rollback_of'], ['dialplan_versions.id'], ondelete='SET NULL',
                                name=op.f('fk_dialplan_versions_rollback_of_dialplan_versions')),
        sa.PrimaryKeyConstraint('id', name=op.f('pk_dialplan_versions')),
    )
    op.create_index('ix_dialplan_versions_instance_id', 'dialplan_versions', ['instance', 'id'])


def downgrade() -> None:
    op.drop_index('ix_dialplan_versions_instance_id', table_name='dialplan_versions')
    op.drop_table('dialplan_versions')
