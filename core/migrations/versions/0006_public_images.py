"""public images

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-24 21:16:44.015589
"""
from alembic import op
import sqlalchemy as sa


revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN: a batch rebuild of the table would drop its AUTOINCREMENT (0005)
    op.add_column('image', sa.Column('public', sa.Boolean(), nullable=False,
                                     server_default=sa.false()))  # existing rows: private


def downgrade() -> None:
    with op.batch_alter_table('image', schema=None,
                              table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column('public')
