"""Share links: a read-only view of one file or folder for anyone who has the link.

A link is ``/.hfdav-ui/s/<token>``; the token is ``secrets.token_urlsafe(24)`` (192 random
bits) and says nothing about the owner or the path. Links are rows of ``web_shares`` in the
metadata database (:data:`gateway.meta.schema.web_shares`): they may expire, may need a password
(bcrypt-hashed), and stop working at once when revoked. A link names a path: moving or deleting
the shared item breaks it.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import bcrypt
from sqlalchemy import insert, select, update

from gateway.meta.schema import web_shares
from gateway.paths import normalize


@dataclass(frozen=True)
class Share:
    token: str
    path: str
    is_dir: bool
    owner: str
    created_at: float
    expires_at: float | None
    has_password: bool
    revoked_at: float | None
    password_hash: str | None = None

    def live(self, now: float) -> bool:
        return self.revoked_at is None and (self.expires_at is None or self.expires_at > now)

    def as_json(self, now: float) -> dict:
        return {
            "token": self.token, "path": self.path, "is_dir": self.is_dir, "owner": self.owner,
            "created_at": self.created_at, "expires_at": self.expires_at,
            "has_password": self.has_password, "revoked": self.revoked_at is not None,
            "live": self.live(now),
        }  # fmt: skip


def _share(row) -> Share:
    return Share(row.token, row.path, row.is_dir, row.owner, row.created_at, row.expires_at,
                 row.password_hash is not None, row.revoked_at, row.password_hash)  # fmt: skip


class ShareBook:
    def __init__(self, repo, *, clock=time.time):
        self._engine = repo.engine
        self._clock = clock

    def create(self, token: str, path: str, is_dir: bool, owner: str, *, expires_at: float | None,
               password: str | None) -> Share:  # fmt: skip
        hashed = bcrypt.hashpw(password.encode(), bcrypt.gensalt()).decode() if password else None
        row = dict(token=token, path=normalize(path), is_dir=is_dir, owner=owner, created_at=self._clock(),
                   expires_at=expires_at, password_hash=hashed, revoked_at=None)  # fmt: skip
        with self._engine.begin() as c:
            c.execute(insert(web_shares).values(**row))
        share = self.get(token)
        assert share is not None  # just inserted
        return share

    def get(self, token: str) -> Share | None:
        with self._engine.connect() as c:
            row = c.execute(select(web_shares).where(web_shares.c.token == token)).first()
        return _share(row) if row else None

    def live(self, token: str) -> Share | None:
        share = self.get(token) if token else None
        return share if share is not None and share.live(self._clock()) else None

    def list(self, owner: str | None) -> list[Share]:
        q = select(web_shares).order_by(web_shares.c.created_at.desc())
        if owner is not None:
            q = q.where(web_shares.c.owner == owner)
        with self._engine.connect() as c:
            return [_share(r) for r in c.execute(q)]

    def revoke(self, token: str, owner: str | None) -> bool:
        q = update(web_shares).where(web_shares.c.token == token, web_shares.c.revoked_at.is_(None))
        if owner is not None:
            q = q.where(web_shares.c.owner == owner)
        with self._engine.begin() as c:
            return c.execute(q.values(revoked_at=self._clock())).rowcount > 0

    @staticmethod
    def password_ok(share: Share, password: str) -> bool:
        if share.password_hash is None:
            return True
        try:
            return bcrypt.checkpw(password.encode(), share.password_hash.encode())
        except ValueError:
            return False
