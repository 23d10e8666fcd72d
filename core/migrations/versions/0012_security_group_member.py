"""security_group_member: VMs in security groups, by index; lease.vm_id indexed

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-25 07:00:00
"""
import re

from alembic import op
import sqlalchemy as sa


revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None

DONE = 6
# SECURITY_GROUPS as the core writes it in a VM template (core.template.dumps)
GROUPS = re.compile(r'^SECURITY_GROUPS\s*=\s*"?([0-9 ,]*)"?\s*$', re.MULTILINE)


def upgrade() -> None:
    member = op.create_table(
        'security_group_member',
        sa.Column('group_id', sa.Integer(), nullable=False),
        sa.Column('vm_id', sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint('group_id', 'vm_id'),
    )
    op.create_index(op.f('ix_security_group_member_vm_id'), 'security_group_member',
                    ['vm_id'], unique=False)
    with op.batch_alter_table('lease', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_lease_vm_id'), ['vm_id'], unique=False)
    rows = op.get_bind().execute(sa.text(
        "SELECT id, template FROM vm WHERE state != :done AND template LIKE :pattern"),
        {"done": DONE, "pattern": "%SECURITY_GROUPS%"})
    found = []
    for vm_id, text in rows:
        match = GROUPS.search(text or "")
        ids = dict.fromkeys(int(w) for w in (match.group(1) if match else "").replace(",", " ").split())
        found += [{"group_id": g, "vm_id": vm_id} for g in ids]
    if found:
        op.bulk_insert(member, found)


def downgrade() -> None:
    with op.batch_alter_table('lease', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_lease_vm_id'))
    op.drop_index(op.f('ix_security_group_member_vm_id'), table_name='security_group_member')
    op.drop_table('security_group_member')
