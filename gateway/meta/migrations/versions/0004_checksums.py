"""content checksums of file versions (MD5 and SHA-1, for sync clients)

Revision ID: 0004
Revises: 0003
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # existing versions keep NULL: their checksums are not known (they are not shown)
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.add_column(sa.Column("md5", sa.String(length=32), nullable=True))
        batch_op.add_column(sa.Column("sha1", sa.String(length=40), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("versions", schema=None) as batch_op:
        batch_op.drop_column("sha1")
        batch_op.drop_column("md5")
