"""Token lineage: the token a token, a browser session or a login code was minted with, so that revoking a
token revokes its descendants.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.add_column(sa.Column("parent_id", sa.Integer(), nullable=True))
        batch.create_foreign_key("fk_api_tokens_parent_id", "api_tokens", ["parent_id"], ["id"], ondelete="CASCADE")
        batch.create_index("ix_api_tokens_parent_id", ["parent_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("api_tokens") as batch:
        batch.drop_index("ix_api_tokens_parent_id")
        batch.drop_constraint("fk_api_tokens_parent_id", type_="foreignkey")
        batch.drop_column("parent_id")
