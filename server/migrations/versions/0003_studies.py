"""Studies: a named set of runs varying one or two settings; runs know their study, their values in it,
the evaluations to queue when they succeed, and the preset and overrides they were submitted with.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("studies",
                    sa.Column("id", sa.String(length=32), nullable=False),
                    sa.Column("name", sa.String(length=200), nullable=False),
                    sa.Column("template", sa.String(length=64), nullable=True),
                    sa.Column("team_id", sa.Integer(), nullable=False),
                    sa.Column("project_id", sa.Integer(), nullable=False),
                    sa.Column("owner_id", sa.Integer(), nullable=False),
                    sa.Column("preset", sa.String(length=64), nullable=True),
                    sa.Column("overrides", sa.JSON(), nullable=False),
                    sa.Column("axes", sa.JSON(), nullable=False),
                    sa.Column("evaluations", sa.JSON(), nullable=False),
                    sa.Column("eval_overrides", sa.JSON(), nullable=False),
                    sa.Column("notes", sa.String(), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.ForeignKeyConstraint(["owner_id"], ["users.id"]),
                    sa.ForeignKeyConstraint(["project_id"], ["projects.id"]),
                    sa.ForeignKeyConstraint(["team_id"], ["teams.id"]),
                    sa.PrimaryKeyConstraint("id"))
    op.create_index(op.f("ix_studies_team_id"), "studies", ["team_id"], unique=False)
    op.create_index(op.f("ix_studies_project_id"), "studies", ["project_id"], unique=False)
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("preset", sa.String(length=64), nullable=True))
        batch.add_column(sa.Column("overrides", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("study_id", sa.String(length=32), nullable=True))
        batch.add_column(sa.Column("study_values", sa.JSON(), nullable=False, server_default="{}"))
        batch.add_column(sa.Column("followups", sa.JSON(), nullable=False, server_default="[]"))
        batch.add_column(sa.Column("followups_pending", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch.create_index(batch.f("ix_runs_study_id"), ["study_id"], unique=False)
        batch.create_index(batch.f("ix_runs_followups_pending"), ["followups_pending"], unique=False)
        batch.create_foreign_key("fk_runs_study_id_studies", "studies", ["study_id"], ["id"])


def downgrade() -> None:
    with op.batch_alter_table("runs") as batch:
        batch.drop_constraint("fk_runs_study_id_studies", type_="foreignkey")
        batch.drop_index(batch.f("ix_runs_followups_pending"))
        batch.drop_index(batch.f("ix_runs_study_id"))
        batch.drop_column("followups_pending")
        batch.drop_column("followups")
        batch.drop_column("study_values")
        batch.drop_column("study_id")
        batch.drop_column("overrides")
        batch.drop_column("preset")
    op.drop_index(op.f("ix_studies_project_id"), table_name="studies")
    op.drop_index(op.f("ix_studies_team_id"), table_name="studies")
    op.drop_table("studies")
