"""certificate numbers are unique with number_index first, so that imports look numbers up by it alone (issue 13)

The unique constraint on (certificate_type_id, issuer_department_id, number_index, version) becomes one on
(number_index, certificate_type_id, issuer_department_id, version): the same rule, and an index whose leading column is
the number's blind index. An import looks up 500 numbers at a time, one index probe each
(backend/imports/numbers.py); with the old column order PostgreSQL, planning with the statistics of a table that had
since grown (or had none), chose the other unique index (type, department, serial) and filtered every certificate of
the type for each chunk: the import slowed down with the size of the table.

SQLite cannot drop a constraint: the table is copied (Alembic's batch mode), with foreign keys off meanwhile, since
dropping the old table would otherwise delete (or refuse to delete) the rows of the tables that refer to it.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-07 21:30:00

"""
from alembic import op


# revision identifiers, used by Alembic.
revision = '0011'
down_revision = '0010'
branch_labels = None
depends_on = None


OLD = 'uq_certificate_certificate_type_id_issuer_department_id_number_index_version'
NEW = 'uq_certificate_number_index_certificate_type_id_issuer_department_id_version'


def _swap(drop, create, columns):
    sqlite = op.get_bind().dialect.name == 'sqlite'
    if sqlite:
        op.execute('PRAGMA foreign_keys=OFF')  # a no-op inside a transaction: checked below
    with op.batch_alter_table('certificate', schema=None) as batch_op:
        batch_op.drop_constraint(batch_op.f(drop), type_='unique')
        batch_op.create_unique_constraint(batch_op.f(create), columns)
    if sqlite:
        problems = op.get_bind().exec_driver_sql('PRAGMA foreign_key_check').fetchall()
        if problems:
            raise RuntimeError(f'foreign keys broken by the copy of certificate: {problems[:5]}')
        op.execute('PRAGMA foreign_keys=ON')


def upgrade():
    _swap(OLD, NEW, ['number_index', 'certificate_type_id', 'issuer_department_id', 'version'])


def downgrade():
    _swap(NEW, OLD, ['certificate_type_id', 'issuer_department_id', 'number_index', 'version'])
