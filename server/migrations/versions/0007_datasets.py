"""Datasets: a team's registered datasets, what their scan found and their packed copy (issue 12).

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("datasets",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("team_id", sa.Integer(), nullable=False),
                    sa.Column("name", sa.String(length=64), nullable=False),
                    sa.Column("kind", sa.String(length=16), nullable=False),
                    sa.Column("root", sa.String(), nullable=True),
                    sa.Column("status", sa.String(length=16), nullable=False),
                    sa.Column("error", sa.String(), nullable=True),
                    sa.Column("info", sa.JSON(), nullable=True),
                    sa.Column("samples_jpeg", sa.String(), nullable=True),
                    sa.Column("packed_root", sa.String(), nullable=True),
                    sa.Column("prepare_status", sa.String(length=16), nullable=False),
                    sa.Column("scan_run_id", sa.String(length=32), nullable=True),
                    sa.Column("prepare_run_id", sa.String(length=32), nullable=True),
                    sa.Column("created_by", sa.Integer(), nullable=True),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("builtin", sa.Boolean(), nullable=False),
                    sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
                    sa.ForeignKeyConstraint(["prepare_run_id"], ["runs.id"]),
                    sa.ForeignKeyConstraint(["scan_run_id"], ["runs.id"]),
                    sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
                    sa.PrimaryKeyConstraint("id"),
                    sa.UniqueConstraint("team_id", "name", name="uq_datasets_team_name"))
    op.create_index(op.f("ix_datasets_team_id"), "datasets", ["team_id"], unique=False)
    op.create_index(op.f("ix_datasets_scan_run_id"), "datasets", ["scan_run_id"], unique=False)
    op.create_index(op.f("ix_datasets_prepare_run_id"), "datasets", ["prepare_run_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_datasets_prepare_run_id"), table_name="datasets")
    op.drop_index(op.f("ix_datasets_scan_run_id"), table_name="datasets")
    op.drop_index(op.f("ix_datasets_team_id"), table_name="datasets")
    op.drop_table("datasets")
