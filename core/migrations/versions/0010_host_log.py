"""host_log: a host's state changes, missed heartbeats and hook outcomes

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-25 04:10:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('host_log',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('host_id', sa.Integer(), nullable=False),
    sa.Column('time', sa.Float(), nullable=False),
    sa.Column('severity', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('message', sa.Text(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('host_log', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_host_log_host_id'), ['host_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('host_log', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_host_log_host_id'))
    op.drop_table('host_log')
