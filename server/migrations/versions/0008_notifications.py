"""Notifications: a team's channels, the outbox of deliveries, and each delivery's attempts (issue 13).

Revision ID: 0008_notifications
Revises: 0007
Create Date: 2026-12-10
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008_notifications"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("notify_channels",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("team_id", sa.Integer(), nullable=False),
                    sa.Column("project_id", sa.Integer(), nullable=True),
                    sa.Column("name", sa.String(length=64), nullable=False),
                    sa.Column("kind", sa.String(length=16), nullable=False),
                    sa.Column("enabled", sa.Boolean(), nullable=False),
                    sa.Column("target_hint", sa.String(length=2000), nullable=False),
                    sa.Column("secret", sa.String(), nullable=True),
                    sa.Column("emails", sa.JSON(), nullable=False),
                    sa.Column("rules", sa.JSON(), nullable=False),
                    sa.Column("cooldown_s", sa.Integer(), nullable=False),
                    sa.Column("created_by", sa.Integer(), nullable=True),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
                    sa.ForeignKeyConstraint(["created_by"], ["users.id"], ondelete="SET NULL"),
                    sa.ForeignKeyConstraint(["project_id"], ["projects.id"], ondelete="CASCADE"),
                    sa.ForeignKeyConstraint(["team_id"], ["teams.id"], ondelete="CASCADE"),
                    sa.PrimaryKeyConstraint("id"),
                    sa.UniqueConstraint("team_id", "name", name="uq_notify_channels_team_name"))
    op.create_index(op.f("ix_notify_channels_team_id"), "notify_channels", ["team_id"], unique=False)
    op.create_index(op.f("ix_notify_channels_project_id"), "notify_channels", ["project_id"], unique=False)
    op.create_table("notify_deliveries",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("channel_id", sa.Integer(), nullable=False),
                    sa.Column("dedup_key", sa.String(length=255), nullable=False),
                    sa.Column("incident", sa.String(length=200), nullable=False),
                    sa.Column("kind", sa.String(length=16), nullable=False),
                    sa.Column("run_id", sa.String(length=64), nullable=True),
                    sa.Column("status", sa.String(length=16), nullable=False),
                    sa.Column("attempts", sa.Integer(), nullable=False),
                    sa.Column("suppressed", sa.Integer(), nullable=False),
                    sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
                    sa.Column("last_error", sa.String(), nullable=True),
                    sa.Column("payload", sa.JSON(), nullable=False),
                    sa.ForeignKeyConstraint(["channel_id"], ["notify_channels.id"], ondelete="CASCADE"),
                    sa.PrimaryKeyConstraint("id"))
    op.create_index(op.f("ix_notify_deliveries_channel_id"), "notify_deliveries", ["channel_id"], unique=False)
    op.create_index(op.f("ix_notify_deliveries_dedup_key"), "notify_deliveries", ["dedup_key"], unique=True)
    op.create_index("ix_notify_deliveries_due", "notify_deliveries", ["status", "next_attempt_at"], unique=False)
    op.create_index("ix_notify_deliveries_incident", "notify_deliveries", ["channel_id", "incident", "created_at"],
                    unique=False)
    op.create_table("notify_attempts",
                    sa.Column("id", sa.Integer(), nullable=False),
                    sa.Column("delivery_id", sa.Integer(), nullable=False),
                    sa.Column("time", sa.DateTime(timezone=True), nullable=False),
                    sa.Column("ok", sa.Boolean(), nullable=False),
                    sa.Column("code", sa.Integer(), nullable=True),
                    sa.Column("reply", sa.String(), nullable=True),
                    sa.Column("error", sa.String(), nullable=True),
                    sa.Column("duration_ms", sa.Float(), nullable=False),
                    sa.ForeignKeyConstraint(["delivery_id"], ["notify_deliveries.id"], ondelete="CASCADE"),
                    sa.PrimaryKeyConstraint("id"))
    op.create_index(op.f("ix_notify_attempts_delivery_id"), "notify_attempts", ["delivery_id"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_notify_attempts_delivery_id"), table_name="notify_attempts")
    op.drop_table("notify_attempts")
    op.drop_index("ix_notify_deliveries_incident", table_name="notify_deliveries")
    op.drop_index("ix_notify_deliveries_due", table_name="notify_deliveries")
    op.drop_index(op.f("ix_notify_deliveries_dedup_key"), table_name="notify_deliveries")
    op.drop_index(op.f("ix_notify_deliveries_channel_id"), table_name="notify_deliveries")
    op.drop_table("notify_deliveries")
    op.drop_index(op.f("ix_notify_channels_project_id"), table_name="notify_channels")
    op.drop_index(op.f("ix_notify_channels_team_id"), table_name="notify_channels")
    op.drop_table("notify_channels")
