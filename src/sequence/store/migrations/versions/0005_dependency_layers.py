"""dependency layers: locks, wheels stored once, who uploaded them; the layer of strategies and runs

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'layers',
        sa.Column('layer_id', sa.String(length=64), nullable=False),
        sa.Column('target', sa.JSON(), nullable=False),
        sa.Column('wheels', sa.JSON(), nullable=False),
        sa.Column('size_bytes', sa.BigInteger(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('last_used_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('layer_id'),
    )
    op.create_table(
        'wheels',
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.Column('size', sa.BigInteger(), nullable=False),
        sa.Column('data', sa.LargeBinary(), nullable=False),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.PrimaryKeyConstraint('sha256'),
    )
    op.create_table(
        'wheel_owners',
        sa.Column('client_id', sa.String(length=32), nullable=False),
        sa.Column('sha256', sa.String(length=64), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'], ondelete='CASCADE'),
        sa.ForeignKeyConstraint(['sha256'], ['wheels.sha256'], ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('client_id', 'sha256'),
    )
    with op.batch_alter_table('strategies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('layer_id', sa.String(length=64), nullable=True))
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('layer_id', sa.String(length=64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('layer_id')
    with op.batch_alter_table('strategies', schema=None) as batch_op:
        batch_op.drop_column('layer_id')
    op.drop_table('wheel_owners')
    op.drop_table('wheels')
    op.drop_table('layers')
