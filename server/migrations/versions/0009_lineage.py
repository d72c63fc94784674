"""Lineage: a fork's (and an evaluation's) step of its parent, the rollback branches of a run with the curve
they abandoned, and what the stall watch needs (when the step last moved, the usual step time) (issue 13).

Revision ID: 0009_lineage
Revises: 0008_notifications
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009_lineage"
down_revision: str | None = "0008_notifications"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("parent_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("step_at", sa.DateTime(timezone=True), nullable=True))
        batch.add_column(sa.Column("step_clock", sa.Float(), nullable=True))
        batch.add_column(sa.Column("clock_step", sa.BigInteger(), nullable=True))
        batch.add_column(sa.Column("step_time_s", sa.Float(), nullable=True))
        batch.add_column(sa.Column("stalled_at", sa.DateTime(timezone=True), nullable=True))
    op.create_table("run_branches",
                    sa.Column("run_id", sa.String(length=64), nullable=False),
                    sa.Column("branch", sa.Integer(), nullable=False),
                    sa.Column("seq", sa.BigInteger(), nullable=False),
                    sa.Column("time", sa.Float(), nullable=False),
                    sa.Column("from_step", sa.BigInteger(), nullable=False),
                    sa.Column("to_step", sa.BigInteger(), nullable=False),
                    sa.Column("alert_kind", sa.String(length=64), nullable=False),
                    sa.Column("alert_step", sa.BigInteger(), nullable=True),
                    sa.Column("lr_scale", sa.Float(), nullable=True),
                    sa.Column("skipped", sa.JSON(), nullable=True),
                    sa.Column("checkpoint", sa.String(), nullable=True),
                    sa.PrimaryKeyConstraint("run_id", "branch"))
    op.create_table("branch_metrics",
                    sa.Column("run_id", sa.String(length=64), nullable=False),
                    sa.Column("branch", sa.Integer(), nullable=False),
                    sa.Column("key", sa.String(length=64), nullable=False),
                    sa.Column("step", sa.BigInteger(), nullable=False),
                    sa.Column("value", sa.Float(), nullable=True),
                    sa.PrimaryKeyConstraint("run_id", "branch", "key", "step"))


def downgrade() -> None:
    op.drop_table("branch_metrics")
    op.drop_table("run_branches")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("stalled_at")
        batch.drop_column("step_time_s")
        batch.drop_column("clock_step")
        batch.drop_column("step_clock")
        batch.drop_column("step_at")
        batch.drop_column("parent_step")
