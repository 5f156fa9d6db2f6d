"""staff accounts and console sessions (issue 6)

Placeholder: filled by the work on this issue.

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
    pass


def downgrade():
    pass
