"""real orders: client and venue order ids on nodes, venue fill ids, risk limits, kill switches

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0004'
down_revision = '0003'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('graph_nodes', schema=None) as batch_op:
        batch_op.add_column(sa.Column('client_order_id', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('venue_order_id', sa.String(length=128), nullable=True))

    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.add_column(sa.Column('venue_fill_id', sa.String(length=128), nullable=True))
        batch_op.create_index(batch_op.f('ix_fills_venue_venue_fill_id'), ['venue', 'venue_fill_id'], unique=True)

    op.create_table(
        'risk_limits',
        sa.Column('client_id', sa.String(length=32), nullable=False),
        sa.Column('strategy_id', sa.String(length=40), server_default='', nullable=False),
        sa.Column('limits', sa.Text(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('client_id', 'strategy_id'),
    )
    op.create_table(
        'kill_switches',
        sa.Column('client_id', sa.String(length=32), nullable=False),
        sa.Column('strategy_id', sa.String(length=40), server_default='', nullable=False),
        sa.Column('engaged_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('client_id', 'strategy_id'),
    )


def downgrade() -> None:
    op.drop_table('kill_switches')
    op.drop_table('risk_limits')
    with op.batch_alter_table('fills', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_fills_venue_venue_fill_id'))
        batch_op.drop_column('venue_fill_id')
    with op.batch_alter_table('graph_nodes', schema=None) as batch_op:
        batch_op.drop_column('venue_order_id')
        batch_op.drop_column('client_order_id')
