"""ids of owned and public objects are never reused (SQLite AUTOINCREMENT)

SQLite hands the highest deleted id to the next row unless a table is AUTOINCREMENT: a
new user got a deleted user's id, and with it whatever that user had left behind. The
tables are rebuilt with AUTOINCREMENT; PostgreSQL's sequences never reuse ids, so there
nothing changes.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-24 20:25:00
"""
from alembic import op

revision = '0005'
down_revision = '0004'
branch_labels = None
depends_on = None

TABLES = ("group", "user", "host", "datastore", "image", "vmtemplate", "vnet", "keypair",
          "user_mixin")


def _rebuild(autoincrement: bool) -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    # core.db.migrate turns foreign keys off around the rebuild and checks them after
    for name in TABLES:
        with op.batch_alter_table(name, recreate="always",
                                  table_kwargs={"sqlite_autoincrement": autoincrement}):
            pass


def upgrade() -> None:
    _rebuild(True)


def downgrade() -> None:
    _rebuild(False)
