"""the retention indexes hold only rows the purge can select (read, or deleted)

Every insert of a notification added two NULL entries to the full `read_at` and `deleted_at`
indexes, which only the retention scans (`read_at < cutoff`, `deleted_at < cutoff`) use; a
partial index `WHERE ... IS NOT NULL` still serves those scans on PostgreSQL and SQLite, and an
unread, undeleted notification costs neither index anything.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02 12:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

COLUMNS = ("read_at", "deleted_at")


def upgrade() -> None:
    for column in COLUMNS:
        name = f"ix_notifications_{column}"
        where = sa.text(f"{column} IS NOT NULL")
        op.drop_index(name, table_name="notifications")
        op.create_index(name, "notifications", [column], postgresql_where=where, sqlite_where=where)


def downgrade() -> None:
    for column in COLUMNS:
        name = f"ix_notifications_{column}"
        op.drop_index(name, table_name="notifications")
        op.create_index(name, "notifications", [column])
