"""packs: small objects stored inside shared pack objects

Revision ID: 0002
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("pack_id", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("pack_offset", sa.BigInteger(), nullable=True))
        batch_op.add_column(sa.Column("is_pack", sa.Boolean(), nullable=False, server_default=sa.false()))
        batch_op.create_index("ix_objects_pack", ["pack_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.drop_index("ix_objects_pack")
        batch_op.drop_column("is_pack")
        batch_op.drop_column("pack_offset")
        batch_op.drop_column("pack_id")
