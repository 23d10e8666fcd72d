"""datastore driver work for images (image_job) and the images the datastore stored

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25 10:00:00
"""
from alembic import op
import sqlalchemy as sa
import sqlmodel


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # a plain ADD COLUMN: a batch rebuild of the table would drop its AUTOINCREMENT (0005)
    op.add_column('image', sa.Column('stored', sa.Boolean(), nullable=False,
                                     server_default=sa.false()))  # existing rows: in place
    op.create_table('image_job',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('image_id', sa.Integer(), nullable=False),
    sa.Column('datastore_id', sa.Integer(), nullable=False),
    sa.Column('action', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('source', sa.Text(), nullable=False),
    sa.Column('origin_id', sa.Integer(), nullable=True),
    sa.Column('safe_dir', sa.Text(), nullable=False),
    sa.Column('status', sqlmodel.sql.sqltypes.AutoString(), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('created', sa.Integer(), nullable=False),
    sa.Column('started', sa.Integer(), nullable=False),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('image_job', schema=None) as batch_op:
        batch_op.create_index('ix_image_job_status', ['status', 'id'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_job_image_id'), ['image_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_image_job_origin_id'), ['origin_id'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('image_job', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_image_job_origin_id'))
        batch_op.drop_index(batch_op.f('ix_image_job_image_id'))
        batch_op.drop_index('ix_image_job_status')
    op.drop_table('image_job')
    with op.batch_alter_table('image', schema=None,
                              table_kwargs={"sqlite_autoincrement": True}) as batch_op:
        batch_op.drop_column('stored')
