"""address.vnet_id: the public network an Elastic IP is a lease of

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-26 10:00:00
"""
from alembic import op
import sqlalchemy as sa


revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('address', schema=None) as batch_op:
        batch_op.add_column(sa.Column('vnet_id', sa.Integer(), nullable=True))
        batch_op.create_index(batch_op.f('ix_address_vnet_id'), ['vnet_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('address', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_address_vnet_id'))
        batch_op.drop_column('vnet_id')
