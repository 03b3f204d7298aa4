"""index for delivery receipts: attempts by SMSC message id (issue 4)

Revision ID: 0005
Revises: 0004
"""
from alembic import op
import sqlalchemy as sa

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A receipt names the message id only; without this every receipt scans all attempts.
    op.create_index('ix_notification_attempts_sms_message_id', 'notification_attempts', ['sms_message_id'],
                    postgresql_where=sa.text('sms_message_id IS NOT NULL'))


def downgrade() -> None:
    op.drop_index('ix_notification_attempts_sms_message_id', table_name='notification_attempts',
                  postgresql_where=sa.text('sms_message_id IS NOT NULL'))
