"""email_logs.payload: what the worker needs to render a queued email

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-23 01:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("email_logs", schema=None) as batch_op:
        batch_op.add_column(sa.Column("payload", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("email_logs", schema=None) as batch_op:
        batch_op.drop_column("payload")
