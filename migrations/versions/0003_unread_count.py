"""users.unread_count: each user's unread, visible notifications, kept with every change

A publish answers each recipient's exact unread count. Counting rows for that read all of a
user's unread notifications on every publish, so a publish got slower as users fell behind;
the counter is changed in the same transactions that change what it counts.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 06:15:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not batch mode: on SQLite batch mode rebuilds `users` (DROP TABLE), and
# with foreign keys on that cascades to every notification. SQLite adds and drops a column
# in place (3.35+).


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("unread_count", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.execute(
        """
        UPDATE users SET unread_count = (
            SELECT count(*) FROM notifications n
            WHERE n.user_id = users.id AND n.read = false AND n.deleted_at IS NULL
              AND n.in_app = true
        )
        """
    )


def downgrade() -> None:
    op.drop_column("users", "unread_count")
