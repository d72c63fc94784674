"""Metric rollups (min, max, counts and last point per key over 64 and 1024 steps, for fast downsampled reads), and
each run's count of alerts (for the runs table's badge).

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table("metric_rollups",
                    sa.Column("run_id", sa.String(length=64), nullable=False),
                    sa.Column("key", sa.String(length=64), nullable=False),
                    sa.Column("width", sa.Integer(), nullable=False),
                    sa.Column("bucket", sa.BigInteger(), nullable=False),
                    sa.Column("vmin", sa.Float(), nullable=True),
                    sa.Column("vmax", sa.Float(), nullable=True),
                    sa.Column("n", sa.Integer(), nullable=False),
                    sa.Column("n_nan", sa.Integer(), nullable=False),
                    sa.Column("last_step", sa.BigInteger(), nullable=False),
                    sa.Column("last_value", sa.Float(), nullable=True),
                    sa.PrimaryKeyConstraint("run_id", "key", "width", "bucket"))
    with op.batch_alter_table("runs") as batch:
        batch.add_column(sa.Column("alert_count", sa.Integer(), nullable=False, server_default="0"))
    op.execute("UPDATE runs SET alert_count = (SELECT count(*) FROM alerts WHERE alerts.run_id = runs.id)")
    # a database that already holds metrics gets its rollups now (the ingest keeps them from here on)
    for width in (64, 1024):
        op.execute(
            "INSERT INTO metric_rollups (run_id, key, width, bucket, vmin, vmax, n, n_nan, last_step, last_value) "
            f"SELECT g.run_id, g.key, {width}, g.bucket, g.vmin, g.vmax, g.n, g.n_nan, g.last_step, m.value FROM "
            f"(SELECT run_id, key, step / {width} AS bucket, min(value) AS vmin, max(value) AS vmax, count(*) AS n, "
            "count(*) - count(value) AS n_nan, max(step) AS last_step FROM metrics "
            f"GROUP BY run_id, key, step / {width}) g "
            "JOIN metrics m ON m.run_id = g.run_id AND m.key = g.key AND m.step = g.last_step")


def downgrade() -> None:
    op.drop_table("metric_rollups")
    with op.batch_alter_table("runs") as batch:
        batch.drop_column("alert_count")
