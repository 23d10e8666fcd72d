"""hooks (VM_HOOK, HOST_HOOK) and their runs

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25 02:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('hook',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('resource', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('on', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('command', sa.Text(), nullable=False),
    sa.Column('arguments', sa.Text(), nullable=False),
    sa.Column('remote', sa.Boolean(), nullable=False),
    sa.Column('state', sa.Integer(), nullable=False),
    sa.Column('lcm_state', sa.Integer(), nullable=False),
    sa.Column('origin', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('resource', 'name'),
    sqlite_autoincrement=True
    )
    op.create_table('hook_run',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('hook_id', sa.Integer(), nullable=False),
    sa.Column('hook_name', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('resource', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('object_id', sa.Integer(), nullable=False),
    sa.Column('event', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('argv', sa.Text(), nullable=False),
    sa.Column('host', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('rc', sa.Integer(), nullable=True),
    sa.Column('output', sa.Text(), nullable=False),
    sa.Column('created', sa.Float(), nullable=False),
    sa.Column('started', sa.Float(), nullable=False),
    sa.Column('finished', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('hook_run', schema=None) as batch_op:
        batch_op.create_index('ix_hook_run_status', ['status', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_hook_run_hook_id'), ['hook_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_hook_run_object_id'), ['object_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('hook_run', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_hook_run_object_id'))
        batch_op.drop_index(batch_op.f('ix_hook_run_hook_id'))
        batch_op.drop_index('ix_hook_run_status')
    op.drop_table('hook_run')
    op.drop_table('hook')
