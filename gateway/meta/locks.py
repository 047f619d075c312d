"""Locks (WebDAV lock rows) and dead properties of nodes."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, and_, bindparam, delete, func, insert, literal, select, text, update

from gateway.errors import Conflict
from gateway.meta import db
from gateway.meta.base import RepositoryBase
from gateway.meta.records import LockLimitReached, LockRow, lock_ancestors, lock_parent
from gateway.meta.schema import locks, nodes, properties

_LOCK_COLS = (
    locks.c.token,
    locks.c.root,
    locks.c.depth,
    locks.c.scope,
    locks.c.type,
    locks.c.owner,
    locks.c.principal,
    locks.c.timeout,
    locks.c.expire,
)

#: PostgreSQL advisory lock key held by the transaction that grants a lock.
_LOCKS_TX_KEY = 0x68666461760002  # "hfdav" 2


def _lock_subtree(root: str):
    """SQL condition: a lock rooted at ``root`` or below it. Below is the byte-wise range
    ``root/`` … ``root0`` (``0`` follows ``/``), which the index on ``locks.root`` answers."""
    if root == "/":
        return literal(True)
    return (locks.c.root == root) | and_(locks.c.root >= root + "/", locks.c.root < root + "0")


_LOCKS_NEAR = select(*_LOCK_COLS).where(
    and_(
        locks.c.root.in_(bindparam("b_roots", expanding=True))
        | (locks.c.parent == bindparam("b_path"))
        | (locks.c.parent == bindparam("b_parent")),
        locks.c.expire >= bindparam("b_now"),
    )
)


class LocksMixin(RepositoryBase):
    """Dead properties and locks."""

    # ------------------------------------------------------------------ dead properties
    def get_properties(self, node_id: int) -> dict[str, str]:
        """A node's dead properties, by name (in name order)."""
        with self._read_one() as c:
            rows = c.execute(
                select(properties.c.name, properties.c.value)
                .where(properties.c.node_id == node_id)
                .order_by(properties.c.name)
            )
            return dict(rows.all())

    def properties_of(self, node_ids: Sequence[int]) -> dict[int, dict[str, str]]:
        """Dead properties of several nodes in one query: node id -> name -> value (in name
        order, as :meth:`get_properties`); nodes without any are left out."""
        out: dict[int, dict[str, str]] = {}
        if not node_ids:
            return out
        with self._read_one() as c:
            rows = c.execute(
                select(properties.c.node_id, properties.c.name, properties.c.value)
                .where(properties.c.node_id.in_(list(node_ids)))
                .order_by(properties.c.node_id, properties.c.name)
            )
            for nid, name, value in rows:
                out.setdefault(nid, {})[name] = value
        return out

    def get_properties_of_children(self, parent_id: int) -> dict[int, dict[str, str]]:
        """Dead properties of every child of a folder, in one query (PROPFIND Depth 1)."""
        out: dict[int, dict[str, str]] = {}
        with self._read() as c:
            rows = c.execute(
                select(properties.c.node_id, properties.c.name, properties.c.value)
                .select_from(properties.join(nodes, nodes.c.id == properties.c.node_id))
                .where(nodes.c.parent_id == parent_id)
                .order_by(properties.c.node_id, properties.c.name)
            )
            for nid, name, value in rows:
                out.setdefault(nid, {})[name] = value
        return out

    @db.retrying
    def set_property(self, node_id: int, name: str, value: str) -> None:
        with self._write() as c:
            stmt = self._upsert(properties).values(node_id=node_id, name=name, value=value)
            c.execute(stmt.on_conflict_do_update(index_elements=["node_id", "name"], set_={"value": value}))

    @db.retrying
    def remove_property(self, node_id: int, name: str) -> None:
        with self._write() as c:
            c.execute(delete(properties).where(and_(properties.c.node_id == node_id, properties.c.name == name)))

    @db.retrying
    def remove_all_properties(self, node_id: int) -> None:
        with self._write() as c:
            c.execute(delete(properties).where(properties.c.node_id == node_id))

    # ------------------------------------------------------------------ locks
    # Lock roots are WsgiDAV paths ('/a/b', '/' for the share root). Every lookup is one indexed
    # query that returns only live (unexpired) locks.
    def _live_locks(self, c: Connection, cond) -> list[LockRow]:
        stmt = select(*_LOCK_COLS).where(and_(cond, locks.c.expire >= self._clock()))
        return [LockRow(*r) for r in c.execute(stmt)]

    def locks_near(self, path: str) -> list[LockRow]:
        """Locks rooted at ``path``, at any of its ancestors, at a sibling (a member of the
        same folder) or at a member of ``path``: what a request needs to check ``path`` and, in
        the same answer, the other members of its folder (PROPFIND lists them all) and a new
        member (a PUT checks the folder, then the file)."""
        parent = lock_parent(path) if path != "/" else path
        params = {"b_roots": lock_ancestors(path), "b_path": path, "b_parent": parent, "b_now": self._clock()}
        with self._read_one() as c:
            return [LockRow(*r) for r in c.execute(_LOCKS_NEAR, params)]

    def locks_below(self, path: str) -> list[LockRow]:
        """Locks rooted at ``path`` or anywhere below it (an index range scan)."""
        with self._read() as c:
            return self._live_locks(c, _lock_subtree(path))

    def all_locks(self, *, principal: str | None = None) -> list[LockRow]:
        """Every live lock (administration), oldest expiry first."""
        with self._read() as c:
            cond = literal(True) if principal is None else locks.c.principal == principal
            stmt = select(*_LOCK_COLS).where(and_(cond, locks.c.expire >= self._clock())).order_by(locks.c.expire)
            return [LockRow(*r) for r in c.execute(stmt)]

    def get_lock(self, token: str) -> LockRow | None:
        with self._read() as c:
            r = c.execute(select(*_LOCK_COLS).where(locks.c.token == token)).first()
            return LockRow(*r) if r else None

    @db.retrying
    def create_lock(
        self, lock: LockRow, conflicts, *, max_total: int | None = None, max_per_principal: int | None = None
    ) -> None:
        """Insert ``lock`` unless ``conflicts(locks)`` returns a reason (raises Conflict); it is
        given the live locks on ``lock.root``, its ancestors and (depth infinity) below it.
        Raises :class:`LockLimitReached` when ``max_total`` live locks exist, or
        ``max_per_principal`` of ``lock.principal``.

        The checks and the insert share one write transaction, serialized across processes
        (SQLite's write lock, a PostgreSQL advisory lock), so two processes cannot both be
        granted conflicting locks, nor together exceed the limits.
        """
        with self._write() as c:
            if not self._is_sqlite:
                c.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCKS_TX_KEY})
            now = self._clock()
            c.execute(delete(locks).where(locks.c.expire < now))
            if max_total is not None:
                n = c.execute(select(func.count()).select_from(locks)).scalar_one()
                if n >= max_total:
                    raise LockLimitReached(f"the server holds {n} locks, its limit")
            if max_per_principal is not None:
                n = c.execute(select(func.count()).where(locks.c.principal == lock.principal)).scalar_one()
                if n >= max_per_principal:
                    raise LockLimitReached(f"user {lock.principal!r} holds {n} locks, the limit per user")
            cond = locks.c.root.in_(lock_ancestors(lock.root))
            if lock.depth == "infinity":
                cond = cond | _lock_subtree(lock.root)
            reason = conflicts(self._live_locks(c, cond))
            if reason:
                raise Conflict(reason)
            c.execute(insert(locks).values(**lock.__dict__, parent=lock_parent(lock.root)))

    @db.retrying
    def refresh_lock(self, token: str, timeout: float, expire: float) -> bool:
        with self._write() as c:
            res = c.execute(update(locks).where(locks.c.token == token).values(timeout=timeout, expire=expire))
            return res.rowcount > 0

    @db.retrying
    def delete_lock(self, token: str) -> bool:
        with self._write() as c:
            return c.execute(delete(locks).where(locks.c.token == token)).rowcount > 0

    @db.retrying
    def delete_locks_below(self, path: str, *, recursive: bool) -> list[LockRow]:
        """Break the locks rooted at ``path`` (``recursive``: and below it); returns them."""
        cond = _lock_subtree(path) if recursive else locks.c.root == path
        with self._write() as c:
            gone = [LockRow(*r) for r in c.execute(select(*_LOCK_COLS).where(cond))]
            c.execute(delete(locks).where(cond))
            return gone

    @db.retrying
    def delete_expired_locks(self) -> int:
        with self._write() as c:
            return c.execute(delete(locks).where(locks.c.expire < self._clock())).rowcount
