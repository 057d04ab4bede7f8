"""receipts and activity: notifications.delivered_at, notifications.publisher_kind, activity

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-02 09:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from backend.models import UTCDateTime

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


# Plain ADD/DROP COLUMN on notifications, not batch mode (see 0003: a rebuilt table on SQLite
# would cascade deletes through its foreign keys).


def upgrade() -> None:
    op.add_column("notifications", sa.Column("delivered_at", UTCDateTime(), nullable=True))
    op.add_column("notifications", sa.Column("publisher_kind", sa.String(length=16), nullable=True))
    op.create_table(
        "activity",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "notification_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            nullable=False,
        ),
        sa.Column("user_id", sa.String(length=255), nullable=False),
        sa.Column("type", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("at", UTCDateTime(), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.ForeignKeyConstraint(
            ["notification_id"],
            ["notifications.id"],
            name=op.f("fk_activity_notification_id_notifications"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_activity")),
    )
    op.create_index("ix_activity_notification_id_id", "activity", ["notification_id", "id"])
    op.create_index("ix_activity_user_id_id", "activity", ["user_id", "id"])
    op.create_index("ix_activity_type_id", "activity", ["type", "id"])
    op.create_index("ix_activity_at", "activity", ["at"])


def downgrade() -> None:
    op.drop_index("ix_activity_at", table_name="activity")
    op.drop_index("ix_activity_type_id", table_name="activity")
    op.drop_index("ix_activity_user_id_id", table_name="activity")
    op.drop_index("ix_activity_notification_id_id", table_name="activity")
    op.drop_table("activity")
    op.drop_column("notifications", "publisher_kind")
    op.drop_column("notifications", "delivered_at")
