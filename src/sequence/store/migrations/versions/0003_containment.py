"""containment: workspace quota and egress per strategy, log retention counters, graph attribution

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('strategies', schema=None) as batch_op:
        batch_op.add_column(sa.Column('disk_mb', sa.Integer(), server_default='1024', nullable=False))
        batch_op.add_column(sa.Column('egress', sa.String(length=16), server_default='public', nullable=False))

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('log_bytes', sa.BigInteger(), server_default='0', nullable=False))
        batch_op.add_column(sa.Column('dropped_lines', sa.BigInteger(), server_default='0', nullable=False))

    with op.batch_alter_table('graphs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('strategy_id', sa.String(length=40), nullable=True))
        batch_op.create_index(batch_op.f('ix_graphs_strategy_id_created_at'), ['strategy_id', 'created_at'],
                              unique=False)

    # Graphs submitted by run keys before this revision: attribute them through their run.
    op.execute("UPDATE graphs SET strategy_id = (SELECT runs.strategy_id FROM runs WHERE runs.run_id = graphs.run_id) "
               "WHERE run_id IS NOT NULL")
    # Existing runs' stored bytes (line text plus the per-line overhead the store counts).
    op.execute("UPDATE runs SET log_bytes = COALESCE((SELECT SUM(LENGTH(l.line) + 64) FROM hosted_strategy_logs l "
               "WHERE l.run_id = runs.run_id), 0)")


def downgrade() -> None:
    with op.batch_alter_table('graphs', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_graphs_strategy_id_created_at'))
        batch_op.drop_column('strategy_id')

    with op.batch_alter_table('runs', schema=None) as batch_op:
        batch_op.drop_column('dropped_lines')
        batch_op.drop_column('log_bytes')

    with op.batch_alter_table('strategies', schema=None) as batch_op:
        batch_op.drop_column('egress')
        batch_op.drop_column('disk_mb')
