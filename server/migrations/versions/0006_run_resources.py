"""Run resources: the machines and devices per machine a run asks for, why a queued run waits, and where a
placed run runs (issue 11: one run on many GPUs and machines).

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # server_default fills the rows already there (every earlier run asked for one device); the models have
    # no server default, so it is dropped again once they are filled
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("nodes", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("gpus_per_node", sa.Integer(), nullable=False, server_default="1"))
        batch.add_column(sa.Column("wait_reason", sa.String(), nullable=True))
        batch.add_column(sa.Column("placement", sa.JSON(), nullable=True))
    with op.batch_alter_table("runs") as batch:
        batch.alter_column("nodes", server_default=None)
        batch.alter_column("gpus_per_node", server_default=None)


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("placement")
        batch.drop_column("wait_reason")
        batch.drop_column("gpus_per_node")
        batch.drop_column("nodes")
