"""objections, their timeline, evidence and escalations (issue 6)

Objections (异议) about a certificate's data in the issuing department's queue, with working-day deadlines; the
status timeline; cleaned evidence images kept in the evidence storage; one escalation per objection and level.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-26 22:05:00

"""
from alembic import op
import sqlalchemy as sa

import backend.models.base


# revision identifiers, used by Alembic.
revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

OPEN = sa.text("status IN ('submitted', 'in_progress')")


def upgrade():
    op.create_table('objection',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('public_id', sa.String(length=32), nullable=False),
    sa.Column('certificate_id', sa.Integer(), nullable=False),
    sa.Column('department_id', sa.Integer(), nullable=False),
    sa.Column('filer_kind', sa.String(length=12), nullable=False),
    sa.Column('filer_holder_id', sa.Integer(), nullable=True),
    sa.Column('filer_department_id', sa.Integer(), nullable=True),
    sa.Column('filer_client_id', sa.String(length=64), nullable=True),
    sa.Column('disputed_enc', sa.LargeBinary(), nullable=False),
    sa.Column('description_enc', sa.LargeBinary(), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('answer', sa.String(length=500), nullable=True),
    sa.Column('evidence_count', sa.Integer(), nullable=False),
    sa.Column('acknowledge_due_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('resolve_due_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('acknowledged_at', backend.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('closed_at', backend.models.base.UTCDateTime(timezone=True), nullable=True),
    sa.Column('corrected_certificate_id', sa.Integer(), nullable=True),
    sa.Column('created_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('updated_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['certificate_id'], ['certificate.id'], name=op.f('fk_objection_certificate_id_certificate')),
    sa.ForeignKeyConstraint(['corrected_certificate_id'], ['certificate.id'], name=op.f('fk_objection_corrected_certificate_id_certificate')),
    sa.ForeignKeyConstraint(['department_id'], ['department.id'], name=op.f('fk_objection_department_id_department')),
    sa.ForeignKeyConstraint(['filer_department_id'], ['department.id'], name=op.f('fk_objection_filer_department_id_department')),
    sa.ForeignKeyConstraint(['filer_holder_id'], ['holder.id'], name=op.f('fk_objection_filer_holder_id_holder')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objection')),
    sa.UniqueConstraint('public_id', name=op.f('uq_objection_public_id'))
    )
    with op.batch_alter_table('objection', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_objection_certificate_id'), ['certificate_id'], unique=False)
        batch_op.create_index('ix_objection_filer_holder', ['filer_holder_id', 'created_at'], unique=False)
        batch_op.create_index('ix_objection_queue', ['department_id', 'status', 'created_at'], unique=False)
        # One open objection per certificate and filer (partial unique indexes; both databases support them).
        batch_op.create_index('uq_objection_open_by_holder', ['certificate_id', 'filer_holder_id'], unique=True,
                              sqlite_where=OPEN, postgresql_where=OPEN)
        batch_op.create_index('uq_objection_open_by_department', ['certificate_id', 'filer_department_id'],
                              unique=True, sqlite_where=OPEN, postgresql_where=OPEN)

    op.create_table('objection_escalation',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('objection_id', sa.Integer(), nullable=False),
    sa.Column('level', sa.String(length=16), nullable=False),
    sa.Column('due_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.Column('created_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['objection_id'], ['objection.id'], name=op.f('fk_objection_escalation_objection_id_objection')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objection_escalation')),
    sa.UniqueConstraint('objection_id', 'level', name=op.f('uq_objection_escalation_objection_id_level'))
    )
    op.create_table('objection_event',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('objection_id', sa.Integer(), nullable=False),
    sa.Column('event', sa.String(length=24), nullable=False),
    sa.Column('from_status', sa.String(length=12), nullable=True),
    sa.Column('to_status', sa.String(length=12), nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('actor', sa.String(length=80), nullable=False),
    sa.Column('occurred_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['objection_id'], ['objection.id'], name=op.f('fk_objection_event_objection_id_objection')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objection_event'))
    )
    with op.batch_alter_table('objection_event', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_objection_event_objection_id'), ['objection_id'], unique=False)

    op.create_table('objection_evidence',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('objection_id', sa.Integer(), nullable=False),
    sa.Column('position', sa.Integer(), nullable=False),
    sa.Column('storage_key', sa.String(length=128), nullable=False),
    sa.Column('media_type', sa.String(length=16), nullable=False),
    sa.Column('width', sa.Integer(), nullable=False),
    sa.Column('height', sa.Integer(), nullable=False),
    sa.Column('size', sa.Integer(), nullable=False),
    sa.Column('digest', sa.String(length=64), nullable=False),
    sa.Column('created_at', backend.models.base.UTCDateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['objection_id'], ['objection.id'], name=op.f('fk_objection_evidence_objection_id_objection')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_objection_evidence')),
    sa.UniqueConstraint('objection_id', 'position', name=op.f('uq_objection_evidence_objection_id_position')),
    sa.UniqueConstraint('storage_key', name=op.f('uq_objection_evidence_storage_key'))
    )


def downgrade():
    op.drop_table('objection_evidence')
    with op.batch_alter_table('objection_event', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_objection_event_objection_id'))
    op.drop_table('objection_event')
    op.drop_table('objection_escalation')
    with op.batch_alter_table('objection', schema=None) as batch_op:
        batch_op.drop_index('uq_objection_open_by_department')
        batch_op.drop_index('uq_objection_open_by_holder')
        batch_op.drop_index('ix_objection_queue')
        batch_op.drop_index('ix_objection_filer_holder')
        batch_op.drop_index(batch_op.f('ix_objection_certificate_id'))
    op.drop_table('objection')
