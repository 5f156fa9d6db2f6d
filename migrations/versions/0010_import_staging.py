"""imports stage their certificates and publish them at the end (issue 11, finding 8)

A batch import commits chunk by chunk (so that other writers, on SQLite the one writer at a time, wait for a chunk
at most, not for the whole import): its signed, encrypted certificates wait in `import_staging` with their holders'
notifications until the batch publishes them with INSERT … SELECT. Status-list allocators skip the slots of staged
rows (index on status_list_id, status_index). An all-or-nothing batch that decided to publish (`publishing_since`)
publishes in short steps too; its staged numbers are taken for other issuers meanwhile (index on number_index).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 18:40:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql

import backend.models.base


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('import_staging',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('import_batch_id', sa.Integer(), nullable=False),
    sa.Column('row_number', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('identifier', sa.String(length=100), nullable=False),
    sa.Column('certificate_type_id', sa.Integer(), nullable=False),
    sa.Column('catalog_version', sa.Integer(), nullable=False),
    sa.Column('issuer_department_id', sa.Integer(), nullable=False),
    sa.Column('serial', sa.String(length=32), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('number_index', sa.String(length=64), nullable=False),
    sa.Column('number_enc', sa.LargeBinary(), nullable=False),
    sa.Column('holder_code_type', sa.String(length=3), nullable=False),
    sa.Column('holder_index', sa.String(length=64), nullable=False),
    sa.Column('holder_name_enc', sa.LargeBinary(), nullable=False),
    sa.Column('holder_code_enc', sa.LargeBinary(), nullable=False),
    sa.Column('face_enc', sa.LargeBinary(), nullable=False),
    sa.Column('sd_jwt_enc', sa.LargeBinary(), nullable=False),
    sa.Column('content_hash', sa.String(length=64), nullable=False),
    sa.Column('issued_on', sa.Date(), nullable=False),
    sa.Column('valid_from', sa.Date(), nullable=False),
    sa.Column('valid_until', sa.Date(), nullable=True),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('status_reason', sa.String(length=200), nullable=True),
    sa.Column('status_changed_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('status_list_id', sa.Integer(), nullable=False),
    sa.Column('status_index', sa.Integer(), nullable=False),
    sa.Column('signing_kid', sa.String(length=64), nullable=False),
    sa.Column('origin', sa.String(length=10), nullable=False),
    sa.Column('previous_id', sa.Integer(), nullable=True),
    sa.Column('created_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('notice_public_id', sa.String(length=32), nullable=False),
    sa.Column('notice_title', sa.String(length=200), nullable=False),
    sa.Column('notice_body', sa.Text(), nullable=False),
    sa.Column('notice_data', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=False),
    sa.ForeignKeyConstraint(['import_batch_id'], ['import_batch.id'], name=op.f('fk_import_staging_import_batch_id_import_batch')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_import_staging'))
    )
    with op.batch_alter_table('import_staging', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_import_staging_import_batch_id'), ['import_batch_id'], unique=False)
        batch_op.create_index('ix_import_staging_slot', ['status_list_id', 'status_index'], unique=False)
        batch_op.create_index('ix_import_staging_number', ['number_index'], unique=False)
    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('publishing_since', backend.models.base.UTCDateTime(timezone=True),
                                      nullable=True))


def downgrade():
    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.drop_column('publishing_since')
    with op.batch_alter_table('import_staging', schema=None) as batch_op:
        batch_op.drop_index('ix_import_staging_number')
        batch_op.drop_index('ix_import_staging_slot')
        batch_op.drop_index(batch_op.f('ix_import_staging_import_batch_id'))
    op.drop_table('import_staging')
