"""retention: users.purged_seq (the recovery watermark) and the indexes the purge scans use

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-01 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ALTER TABLE, not batch mode (see 0003: a rebuilt `users` on SQLite would cascade).


def upgrade() -> None:
    op.add_column(
        "users",
        sa.Column("purged_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
    )
    op.create_index("ix_notifications_read_at", "notifications", ["read_at"])
    op.create_index("ix_notifications_deleted_at", "notifications", ["deleted_at"])
    op.create_index("ix_email_logs_created_at", "email_logs", ["created_at"])


def downgrade() -> None:
    op.drop_index("ix_email_logs_created_at", table_name="email_logs")
    op.drop_index("ix_notifications_deleted_at", table_name="notifications")
    op.drop_index("ix_notifications_read_at", table_name="notifications")
    op.drop_column("users", "purged_seq")
