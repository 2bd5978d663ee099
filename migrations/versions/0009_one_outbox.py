"""one outbox: `slack_outbox`, the queue of Slack messages posted exactly once (metric alerts, SLA notices,
account briefs), with an idempotency key, attempts, next attempt time, message ts and last error.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 14:40:00
"""

from alembic import op
import sqlalchemy as sa
import storage.types


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('slack_outbox',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('team_id', sa.String(length=32), nullable=False),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('idempotency_key', sa.String(length=255), nullable=False),
    sa.Column('channel_id', sa.String(length=32), nullable=False),
    sa.Column('thread_ts', sa.String(length=32), nullable=True),
    sa.Column('text', sa.Text(), nullable=False),
    sa.Column('blocks', sa.JSON(), nullable=True),
    sa.Column('chart_png', sa.LargeBinary(), nullable=True),
    sa.Column('chart_name', sa.String(length=255), nullable=True),
    sa.Column('chart_title', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('next_attempt_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('message_ts', sa.String(length=32), nullable=True),
    sa.Column('last_error', sa.Text(), nullable=True),
    sa.Column('created_at', storage.types.UTCDateTime(timezone=True), nullable=False),
    sa.Column('sent_at', storage.types.UTCDateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_slack_outbox')),
    sa.UniqueConstraint('team_id', 'idempotency_key', name=op.f('uq_slack_outbox_team_id_idempotency_key'))
    )
    with op.batch_alter_table('slack_outbox', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_slack_outbox_status_next_attempt_at'), ['status', 'next_attempt_at'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('slack_outbox', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_slack_outbox_status_next_attempt_at'))

    op.drop_table('slack_outbox')
