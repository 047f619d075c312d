"""hub sync: LFS oid of uploaded objects, queue of repo paths to delete

Revision ID: 0003
Revises: 0002
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.add_column(sa.Column("remote_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("remote_size", sa.BigInteger(), nullable=True))
    op.create_table(
        "hub_deletes",
        sa.Column("path", sa.Text(), nullable=False),
        sa.Column("requested_at", sa.Float(), nullable=False),
        sa.Column("after_seq", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("path"),
    )


def downgrade() -> None:
    op.drop_table("hub_deletes")
    with op.batch_alter_table("objects", schema=None) as batch_op:
        batch_op.drop_column("remote_size")
        batch_op.drop_column("remote_sha256")
