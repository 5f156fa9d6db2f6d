"""import batches are queued and processed by a job (issue 3)

POST /gov/v1/certificates/batches now spools the file (sealed with the data key) and queues the batch;
`flask --app wsgi jobs imports` claims and imports it. New columns: where the sealed file is (`spool_key`, cleared
when the batch finishes), its size and how much of it was read (progress), which worker holds the batch and how
often it was claimed (a dead worker's batch is reclaimed), the file-level error of a failed batch, and the client
that submitted it (`api_client_id`, null for a CLI import: checked again, still active and holding `issue`, when
the job imports the batch).

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 01:40:00

"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy import Text
from sqlalchemy.dialects import postgresql


# revision identifiers, used by Alembic.
revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.add_column(sa.Column('spool_key', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('file_bytes', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('processed_bytes', sa.BigInteger(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column('claimed_by', sa.String(length=80), nullable=True))
        batch_op.add_column(sa.Column('attempts', sa.Integer(), nullable=False, server_default='0'))
        batch_op.add_column(sa.Column(
            'error', sa.JSON().with_variant(postgresql.JSONB(astext_type=Text()), 'postgresql'), nullable=True))
        batch_op.add_column(sa.Column('api_client_id', sa.Integer(), nullable=True))
        batch_op.create_foreign_key(batch_op.f('fk_import_batch_api_client_id_api_client'), 'api_client',
                                    ['api_client_id'], ['id'])
        batch_op.create_index(batch_op.f('ix_import_batch_status'), ['status', 'created_at'], unique=False)


def downgrade():
    with op.batch_alter_table('import_batch', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_import_batch_status'))
        batch_op.drop_constraint(batch_op.f('fk_import_batch_api_client_id_api_client'), type_='foreignkey')
        batch_op.drop_column('api_client_id')
        batch_op.drop_column('error')
        batch_op.drop_column('attempts')
        batch_op.drop_column('claimed_by')
        batch_op.drop_column('processed_bytes')
        batch_op.drop_column('file_bytes')
        batch_op.drop_column('spool_key')
