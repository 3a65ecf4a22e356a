"""Log lines stored a batch per row (``log_chunks``) instead of a row per line

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

Existing lines are moved: each run's lines, in seq order, become chunks of up to
1,000 lines in the same JSON the runner sends (store/logs.py), with the byte
count retention keeps per run.
"""

from __future__ import annotations

import json
from typing import Any

import sqlalchemy as sa
from alembic import op

revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None

_OVERHEAD = 64  # store/logs.py LOG_LINE_OVERHEAD at this revision
_CODE = {"stdout": "o", "stderr": "e", "system": "s"}


def upgrade() -> None:
    chunks = op.create_table('log_chunks',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('last_seq', sa.BigInteger(), nullable=False),
    sa.Column('first_seq', sa.BigInteger(), nullable=False),
    sa.Column('nbytes', sa.BigInteger(), nullable=False),
    sa.Column('body', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'last_seq', name=op.f('pk_log_chunks')),
    sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    old = sa.table('hosted_strategy_logs', sa.column('run_id'), sa.column('seq'), sa.column('ts'),
                   sa.column('stream'), sa.column('line'), sa.column('partial'))
    for (run_id,) in bind.execute(sa.select(old.c.run_id).distinct()).all():
        rows = bind.execute(sa.select(old.c.seq, old.c.ts, old.c.stream, old.c.line, old.c.partial)
                            .where(old.c.run_id == run_id).order_by(old.c.seq)).all()
        group: list[Any] = []
        for r in rows:
            # A chunk is consecutive seqs: a gap (none is expected) starts a new one.
            if group and (len(group) == 1000 or r.seq != group[-1].seq + 1):
                _put(bind, chunks, run_id, group)
                group = []
            group.append(r)
        if group:
            _put(bind, chunks, run_id, group)
    op.drop_table('hosted_strategy_logs')


def _put(bind: Any, chunks: Any, run_id: str, group: list[Any]) -> None:
    body = json.dumps({"ts": [float(r.ts) for r in group], "streams": "".join(_CODE.get(r.stream, "s") for r in group),
                       "lines": [r.line for r in group], "partial": [i for i, r in enumerate(group) if r.partial]},
                      separators=(",", ":"), ensure_ascii=False)
    bind.execute(chunks.insert().values(run_id=run_id, first_seq=group[0].seq, last_seq=group[-1].seq,
                                        nbytes=sum(len(r.line) + _OVERHEAD for r in group), body=body))


def downgrade() -> None:
    op.create_table('hosted_strategy_logs',
    sa.Column('run_id', sa.String(length=40), nullable=False),
    sa.Column('seq', sa.BigInteger(), nullable=False),
    sa.Column('strategy_id', sa.String(length=40), nullable=False),
    sa.Column('ts', sa.Float(), nullable=False),
    sa.Column('stream', sa.String(length=8), nullable=False),
    sa.Column('line', sa.Text(), nullable=False),
    sa.Column('partial', sa.Boolean(), server_default=sa.false(), nullable=False),
    sa.PrimaryKeyConstraint('run_id', 'seq', name=op.f('pk_hosted_strategy_logs')),
    sqlite_with_rowid=False,
    )
    bind = op.get_bind()
    chunks = sa.table('log_chunks', sa.column('run_id'), sa.column('first_seq'), sa.column('body'))
    runs = sa.table('runs', sa.column('run_id'), sa.column('strategy_id'))
    old = sa.table('hosted_strategy_logs', sa.column('run_id'), sa.column('seq'), sa.column('strategy_id'),
                   sa.column('ts'), sa.column('stream'), sa.column('line'), sa.column('partial'))
    names = {c: s for s, c in _CODE.items()}
    q = sa.select(chunks.c.run_id, chunks.c.first_seq, chunks.c.body, runs.c.strategy_id).join(
        runs, runs.c.run_id == chunks.c.run_id)
    for run_id, first, body, sid in bind.execute(q).all():
        b = json.loads(body)
        partial = set(b.get("partial") or ())
        rows = [{"run_id": run_id, "seq": first + i, "strategy_id": sid, "ts": float(b["ts"][i]),
                 "stream": names[b["streams"][i]], "line": line, "partial": i in partial}
                for i, line in enumerate(b["lines"])]
        if rows:
            bind.execute(old.insert(), rows)
    op.drop_table('log_chunks')
