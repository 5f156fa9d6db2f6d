"""access requests grants redemptions (issue 5)

Placeholder: filled by the work on this issue.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-26 22:05:00

"""
from alembic import op
import sqlalchemy as sa

import backend.models.base


# revision identifiers, used by Alembic.
revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    pass


def downgrade():
    pass
