"""Runners: when one began shutting down (it is given no new runs from then on), and its last heartbeat

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.add_column(sa.Column('draining_at', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('beat_at', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runners', schema=None) as batch_op:
        batch_op.drop_column('beat_at')
        batch_op.drop_column('draining_at')
