"""Metadata: the file tree, versions, extents, objects, dead properties and locks (SQLAlchemy).

Only this package imports sqlalchemy. :mod:`gateway.meta.schema` defines every table and its
invariants; :mod:`gateway.meta.records` the values the repository hands out (frozen
dataclasses, the :class:`~gateway.meta.records.ObjectState` enum) — the layers above import
those from there. :mod:`gateway.meta.repo` is the repository, composed of parts by job over one
database object (:mod:`~gateway.meta.base`): :mod:`~gateway.meta.tree`,
:mod:`~gateway.meta.objects`, :mod:`~gateway.meta.locks`, :mod:`~gateway.meta.consistency` and
:mod:`~gateway.meta.ledger`.
"""
