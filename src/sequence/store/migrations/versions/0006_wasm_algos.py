"""WASM algos: deployments, their log lines, and the deployment a graph came from

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        'deployments',
        sa.Column('deployment_id', sa.String(length=40), nullable=False),
        sa.Column('client_id', sa.String(length=32), nullable=False),
        sa.Column('key_id', sa.String(length=40), nullable=False),
        sa.Column('name', sa.String(length=128), nullable=False),
        sa.Column('wasm', sa.LargeBinary(), nullable=False),
        sa.Column('wasm_sha256', sa.String(length=64), nullable=False),
        sa.Column('wasm_size', sa.Integer(), nullable=False),
        sa.Column('symbols', sa.JSON(), nullable=False),
        sa.Column('params', sa.JSON(), nullable=False),
        sa.Column('sandbox', sa.Boolean(), nullable=False),
        sa.Column('desired_state', sa.String(length=16), nullable=False),
        sa.Column('status', sa.String(length=16), nullable=False),
        sa.Column('restarts', sa.Integer(), server_default='0', nullable=False),
        sa.Column('consecutive_failures', sa.Integer(), server_default='0', nullable=False),
        sa.Column('last_reason', sa.Text(), nullable=True),
        sa.Column('last_exit_at', sa.Float(), nullable=True),
        sa.Column('next_attempt_at', sa.Float(), nullable=True),
        sa.Column('owner', sa.String(length=64), nullable=True),
        sa.Column('lease_expires_at', sa.Float(), nullable=True),
        sa.Column('epoch', sa.Integer(), server_default='0', nullable=False),
        sa.Column('started_at', sa.Float(), nullable=True),
        sa.Column('created_at', sa.Float(), nullable=False),
        sa.Column('updated_at', sa.Float(), nullable=False),
        sa.ForeignKeyConstraint(['client_id'], ['clients.client_id'],
                                name=op.f('fk_deployments_client_id_clients'), ondelete='CASCADE'),
        sa.PrimaryKeyConstraint('deployment_id', name=op.f('pk_deployments')),
        sa.UniqueConstraint('client_id', 'name', name=op.f('uq_deployments_client_id_name')),
    )
    op.create_index(op.f('ix_deployments_desired_state_status'), 'deployments', ['desired_state', 'status'])
    op.create_table(
        'deployment_logs',
        sa.Column('deployment_id', sa.String(length=40), nullable=False),
        sa.Column('seq', sa.BigInteger(), nullable=False),
        sa.Column('epoch', sa.Integer(), nullable=False),
        sa.Column('ts', sa.Float(), nullable=False),
        sa.Column('stream', sa.String(length=8), nullable=False),
        sa.Column('line', sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint('deployment_id', 'seq', name=op.f('pk_deployment_logs')),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table('graphs', schema=None) as batch_op:
        batch_op.add_column(sa.Column('deployment_id', sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('graphs', schema=None) as batch_op:
        batch_op.drop_column('deployment_id')
    op.drop_table('deployment_logs')
    op.drop_index(op.f('ix_deployments_desired_state_status'), table_name='deployments')
    op.drop_table('deployments')
