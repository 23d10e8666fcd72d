"""history.leftover: placements whose host was in ERROR when the VM left it

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25 02:10:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column('history', sa.Column('leftover', sa.Boolean(), nullable=False,
                                       server_default=sa.false()))


def downgrade() -> None:
    with op.batch_alter_table('history', schema=None) as batch_op:
        batch_op.drop_column('leftover')
