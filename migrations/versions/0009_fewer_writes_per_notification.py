"""fewer writes per stored notification: no unused index, no per-row foreign key check, room
for in-place updates of a user's counters

Every publish writes, per recipient, a notification row and an update of the user's row
(`last_seq`, `unread_count`). Measured on PostgreSQL for a publish to 10,000 users
(bench/README.md, issue 16, third session):

- `ix_notifications_user_id_read_at` is read by no query (unread lists and counts filter
  `read`, listings go by `(user_id, id)`, the retention scan by the partial `read_at` index), yet
  took an index entry per row;
- the foreign key `notifications.user_id -> users.id` checked every row with a trigger, though
  every insert of a notification runs in the transaction that has just written (and locked) its
  user's row, and an erase deletes the user's notifications itself, under that row's lock
  (services/personal_data.py), so the constraint never caught anything the statements allow;
- `users` at fillfactor 50 (PostgreSQL): the counters' update stays on its page (a HOT update,
  no new entry in `pk_users`), where a full page moved the row and indexed it again.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03 08:00:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

FOREIGN_KEY = "fk_notifications_user_id_users"


def upgrade() -> None:
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.drop_index("ix_notifications_user_id_read_at")
        batch_op.drop_constraint(FOREIGN_KEY, type_="foreignkey")
    if op.get_bind().dialect.name == "postgresql":
        # New pages keep half free: rows move to them as they are updated, and stay put after.
        op.execute("ALTER TABLE users SET (fillfactor = 50)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE users RESET (fillfactor)")
    with op.batch_alter_table("notifications") as batch_op:
        batch_op.create_foreign_key(FOREIGN_KEY, "users", ["user_id"], ["id"], ondelete="CASCADE")
        batch_op.create_index("ix_notifications_user_id_read_at", ["user_id", "read_at"])
