"""staff accounts and console sessions (issue 6)

Staff of the departments and the city's administrators who log into the browser console (argon2id password
hashes, lock-out counters), and their server-side sessions (token stored as SHA-256).

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-26 22:05:00

"""
from alembic import op
import sqlalchemy as sa

import backend.models.base


# revision identifiers, used by Alembic.
revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('staff_account',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('username', sa.String(length=64), nullable=False),
    sa.Column('display_name', sa.String(length=100), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=True),
    sa.Column('password_hash', sa.String(length=255), nullable=False),
    sa.Column('failed_attempts', sa.Integer(), nullable=False),
    sa.Column('locked_until', backend.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('created_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_login_at', backend.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('disabled_at', backend.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.CheckConstraint("(role = 'department' AND department_id IS NOT NULL) OR (role = 'city_admin' AND department_id IS NULL)", name=op.f('ck_staff_account_role_department')),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], name=op.f('fk_staff_account_department_id_department')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_account')),
    sa.UniqueConstraint('public_id', name=op.f('uq_staff_account_public_id')),
    sa.UniqueConstraint('username', name=op.f('uq_staff_account_username'))
    )
    with op.batch_alter_table('staff_account', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_account_department_id'), ['department_id'], unique=False)

    op.create_table('staff_session',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('staff_id', sa.Integer(), nullable=False),
    sa.Column('created_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('last_seen_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('expires_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('revoked_at', backend.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('revoked_reason', sa.String(length=32), nullable=True),
    sa.ForeignKeyConstraint(['staff_id'], ['staff_account.id'], name=op.f('fk_staff_session_staff_id_staff_account')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_staff_session')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_staff_session_token_hash'))
    )
    with op.batch_alter_table('staff_session', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_staff_session_staff_id'), ['staff_id'], unique=False)


def downgrade():
    with op.batch_alter_table('staff_session', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_session_staff_id'))

    op.drop_table('staff_session')
    with op.batch_alter_table('staff_account', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_staff_account_department_id'))

    op.drop_table('staff_account')
