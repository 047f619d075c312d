"""Metadata: the file tree, versions, extents, objects, dead properties and locks (SQLAlchemy).

Only this package imports sqlalchemy. :mod:`gateway.meta.schema` defines every table and its
invariants; :mod:`gateway.meta.repo` holds every query and returns frozen dataclasses.
"""
