"""The metadata schema: every table, what each column means, its sentinels and invariants.

Changing this module needs an Alembic revision in ``gateway/meta/migrations/versions``.

Invariants (checked by ``hfdav fsck``):

* The tree is rooted at the node with ``id = ROOT_ID``; its ``parent_id`` is NULL, its name
  and path are ``""``. Every other node has a parent that is a folder.
* ``nodes.path`` is the node's full path (``/a/b.txt``, no trailing slash; ``""`` for the
  root) and always equals the parent's path + ``/`` + ``name``.
* A file node always has a version (a 0-byte file has a version of size 0 and no extents);
  a folder node never has one.
* A version's ``md5``/``sha1``, when not NULL, are the digests of the concatenation of its
  extents; a copy of a file carries them with its extents. (fsck does not check them: that
  would read every byte.)
* A version's extents, in ``seq`` order, cover ``[0, size)`` without gaps:
  ``extents.file_offset`` is the sum of the lengths before it.
* ``objects.refcount`` equals the number of ``extents`` rows that name the object. An object
  whose refcount reached 0 gets ``orphaned_at``; it stays readable for the grace period (a
  reader that opened the old version of an overwritten file keeps working) and is then deleted
  from the store by the collector.
* An object id never gets new content: ids are content hashes (keyed, with encryption).
* Write-back (Hub store): a chunk is registered when it is cut, before its upload ends. Such a
  row has ``refcount = 0`` and ``orphaned_at`` NULL: it is *pinned* by the upload in progress
  and the collector leaves it alone; the version commit adds the references, an aborted upload
  stamps ``orphaned_at`` (and so does start-up, for uploads a crash interrupted).
* Hub store: a journal entry is committed to the repo only with (or after) every object its
  extents need; ``hub_deletes`` rows wait for ``after_seq`` so that a deletion never reaches
  the repo before the metadata change that orphaned the object.
* Packs: small objects may be copied into a shared *pack* object (``pack_id``/``pack_offset``);
  their extents keep naming the small object, so refcounts and dedup work per small object.
  A packed object has state ``packed`` and no store entry of its own. A pack's ``refcount`` is
  the number of object rows pointing into it: packed rows live until the collector forgets
  them, so a pack with refcount 0 holds nothing anyone can reach and is collected like any
  other orphan.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    UniqueConstraint,
    false,
)

from gateway.meta.records import ObjectState

#: The root folder's node id.
ROOT_ID = 1

#: Object states, in the order an object moves through them (see
#: :class:`~gateway.meta.records.ObjectState`).
OBJECT_STATES = tuple(ObjectState)

metadata = MetaData()

nodes = Table(
    "nodes",
    metadata,
    Column("id", Integer, primary_key=True, comment="node id; ROOT_ID is the root folder"),
    Column(
        "parent_id",
        Integer,
        ForeignKey("nodes.id", ondelete="CASCADE"),
        nullable=True,
        comment="parent folder; NULL only for the root",
    ),
    Column("name", String(255), nullable=False, comment="one path segment, UTF-8, no '/'"),
    Column("path", Text, nullable=False, comment="full path, '/a/b'; '' for the root"),
    Column("is_dir", Boolean, nullable=False),
    Column("version_id", Integer, nullable=True, comment="current version of a file; NULL for folders"),
    Column("created_at", Float, nullable=False, comment="epoch seconds"),
    Column("modified_at", Float, nullable=False, comment="epoch seconds; settable by PROPPATCH"),
    Column("content_type", String(255), nullable=True, comment="NULL: guessed from the name"),
    UniqueConstraint("parent_id", "name", name="uq_nodes_parent_name"),
    UniqueConstraint("path", name="uq_nodes_path"),
    sqlite_autoincrement=True,
)

versions = Table(
    "versions",
    metadata,
    Column("id", Integer, primary_key=True, comment="never reused (autoincrement)"),
    Column("node_id", Integer, nullable=False, comment="the file this version was written for"),
    Column("size", BigInteger, nullable=False, comment="bytes; sum of the extents' lengths"),
    Column("etag", String(64), nullable=False, comment="strong etag, unquoted; derived from the extents"),
    Column("created_at", Float, nullable=False),
    Column(
        "md5",
        String(32),
        nullable=True,
        comment="hex MD5 of the content, computed while it was written (sync clients compare it); "
        "NULL: not known (written before checksums were kept)",
    ),
    Column("sha1", String(40), nullable=True, comment="hex SHA-1 of the content; NULL like md5"),
    Index("ix_versions_node", "node_id"),
    sqlite_autoincrement=True,
)

extents = Table(
    "extents",
    metadata,
    Column("version_id", Integer, ForeignKey("versions.id", ondelete="CASCADE"), primary_key=True),
    Column("seq", Integer, primary_key=True, comment="0, 1, 2 … in file order"),
    Column("file_offset", BigInteger, nullable=False, comment="where this extent starts in the file"),
    Column("object_id", String(64), nullable=False, comment="objects.id holding the bytes"),
    Column("object_offset", BigInteger, nullable=False, comment="start inside the object (packs: > 0)"),
    Column("length", BigInteger, nullable=False, comment="> 0"),
    Index("ix_extents_object", "object_id"),
)

objects = Table(
    "objects",
    metadata,
    Column("id", String(64), primary_key=True, comment="hex content hash (keyed with encryption)"),
    Column("size", BigInteger, nullable=False, comment="stored size in bytes"),
    Column("state", String(16), nullable=False, comment="one of OBJECT_STATES"),
    Column("refcount", Integer, nullable=False, comment="number of extents naming this object"),
    Column("created_at", Float, nullable=False),
    Column("orphaned_at", Float, nullable=True, comment="when refcount fell to 0; NULL while referenced"),
    Column(
        "pack_id",
        String(64),
        nullable=True,
        comment="NULL: the object is stored on its own. Else the pack object holding its bytes "
        "(the object then has no store entry of its own; state is the pack's business)",
    ),
    Column("pack_offset", BigInteger, nullable=True, comment="where the object's bytes start in the pack"),
    Column("is_pack", Boolean, nullable=False, server_default=false(), comment="true for a pack object"),
    Column(
        "remote_sha256",
        String(64),
        nullable=True,
        comment="Hub store: sha256 of the stored bytes (the LFS oid) once uploaded; NULL while staged "
        "and for stores without one",
    ),
    Column(
        "remote_size",
        BigInteger,
        nullable=True,
        comment="Hub store: size of the stored bytes (differs from size with encryption); set with remote_sha256",
    ),
    Index("ix_objects_state", "state"),
    Index("ix_objects_pack", "pack_id"),
    Index("ix_objects_orphaned", "orphaned_at"),
)

properties = Table(
    "properties",
    metadata,
    Column("node_id", Integer, ForeignKey("nodes.id", ondelete="CASCADE"), primary_key=True),
    Column("name", String(512), primary_key=True, comment="Clark notation '{ns}local'"),
    Column("value", Text, nullable=False, comment="the property element serialized as XML"),
)

#: Lock paths compare byte-wise (PostgreSQL: collation "C"), so "every lock below /a" is an
#: index range scan from "/a/" up to "/a0" ("0" follows "/") whatever the database's locale.
_LOCK_PATH = Text().with_variant(Text(collation="C"), "postgresql")

locks = Table(
    "locks",
    metadata,
    Column("token", String(128), primary_key=True, comment="opaquelocktoken:…"),
    Column("root", _LOCK_PATH, nullable=False, comment="locked path as WsgiDAV normalizes it ('/a/b', '/')"),
    Column(
        "parent",
        _LOCK_PATH,
        nullable=False,
        server_default="",
        comment="the root's parent folder ('/a' for '/a/b'; '' for '/'): the locks of a folder's "
        "members in one indexed lookup (PROPFIND Depth 1)",
    ),
    Column("depth", String(16), nullable=False, comment="'0' or 'infinity'"),
    Column("scope", String(16), nullable=False, comment="'exclusive' or 'shared'"),
    Column("type", String(16), nullable=False, comment="'write'"),
    Column("owner", Text, nullable=False, comment="owner XML as sent by the client (size capped)"),
    Column("principal", String(255), nullable=True, comment="user that took the lock"),
    Column("timeout", Float, nullable=False, comment="seconds, as granted"),
    Column("expire", Float, nullable=False, comment="epoch seconds when the lock lapses"),
    Index("ix_locks_root", "root"),
    Index("ix_locks_parent", "parent"),
    Index("ix_locks_principal", "principal"),
    Index("ix_locks_expire", "expire"),
)

journal = Table(
    "journal",
    metadata,
    Column("seq", Integer, primary_key=True, comment="order of metadata changes; never reused"),
    Column("created_at", Float, nullable=False),
    Column("entry", Text, nullable=False, comment="one JSON change record (see FORMAT.md)"),
    Column("commit_oid", String(40), nullable=True, comment="remote commit holding it; NULL: pending"),
    sqlite_autoincrement=True,
)

hub_deletes = Table(
    "hub_deletes",
    metadata,
    Column("path", Text, primary_key=True, comment="repo path to delete, e.g. objects/ab/cd/<id>"),
    Column("requested_at", Float, nullable=False),
    Column(
        "after_seq",
        Integer,
        nullable=False,
        comment="journal seq that must be committed first: the deletion never lands before the "
        "metadata change that made the object unreferenced (a rebuild never misses bytes)",
    ),
)

settings_kv = Table(
    "settings",
    metadata,
    Column("key", String(64), primary_key=True),
    Column("value", Text, nullable=False),
)

web_shares = Table(
    "web_shares",
    metadata,
    Column("token", String(64), primary_key=True, comment="the link's secret (secrets.token_urlsafe)"),
    Column("path", Text, nullable=False, comment="shared file or folder, '/a/b' (a moved target breaks the link)"),
    Column("is_dir", Boolean, nullable=False),
    Column("owner", String(255), nullable=False, comment="user that created the link"),
    Column("created_at", Float, nullable=False),
    Column("expires_at", Float, nullable=True, comment="epoch seconds; NULL: never"),
    Column("password_hash", String(128), nullable=True, comment="bcrypt hash; NULL: no password"),
    Column("revoked_at", Float, nullable=True, comment="NULL while the link works"),
    Index("ix_web_shares_owner", "owner"),
)
