"""notifications: a partial index over unread, visible rows, for the unread counts

Every publish answers each recipient's exact unread count; without this index that count read
every row of the recipients (PostgreSQL chose a sequential scan for a list of users), so a
publish got slower as the table grew.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 07:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNREAD = "read = false AND deleted_at IS NULL AND in_app = true"


def upgrade() -> None:
    op.create_index(
        "ix_notifications_unread",
        "notifications",
        ["user_id"],
        postgresql_where=sa.text(UNREAD),
        sqlite_where=sa.text(UNREAD),
    )


def downgrade() -> None:
    op.drop_index("ix_notifications_unread", table_name="notifications")
