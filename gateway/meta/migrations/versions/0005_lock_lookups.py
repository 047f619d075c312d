"""locks: parent column and indexes, so a request reads only the locks of its paths

Revision ID: 0005
Revises: 0004
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None


def _parent(root: str) -> str:
    if root == "/":
        return ""
    return root.rsplit("/", 1)[0] or "/"


def upgrade() -> None:
    bind = op.get_bind()
    with op.batch_alter_table("locks", schema=None) as batch_op:
        batch_op.add_column(sa.Column("parent", sa.Text(), nullable=False, server_default=""))
    locks = sa.table("locks", sa.column("token", sa.Text()), sa.column("root", sa.Text()), sa.column("parent"))
    for token, root in bind.execute(sa.select(locks.c.token, locks.c.root)).all():
        bind.execute(sa.update(locks).where(locks.c.token == token).values(parent=_parent(root)))
    if bind.dialect.name == "postgresql":
        # byte-wise order: the range "/a/" … "/a0" is exactly the paths below /a
        op.drop_index("ix_locks_root", table_name="locks")
        op.alter_column("locks", "root", type_=sa.Text(collation="C"))
        op.alter_column("locks", "parent", type_=sa.Text(collation="C"))
        op.create_index("ix_locks_root", "locks", ["root"], unique=False)
    with op.batch_alter_table("locks", schema=None) as batch_op:
        batch_op.create_index("ix_locks_parent", ["parent"], unique=False)
        batch_op.create_index("ix_locks_principal", ["principal"], unique=False)
        batch_op.create_index("ix_locks_expire", ["expire"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("locks", schema=None) as batch_op:
        batch_op.drop_index("ix_locks_expire")
        batch_op.drop_index("ix_locks_principal")
        batch_op.drop_index("ix_locks_parent")
        batch_op.drop_column("parent")
