"""hfdav: a WebDAV gateway that keeps files as chunks in a Hugging Face dataset repo.

Layers (imports point down only)::

    cli.py / wsgi.py   entry points
    app.py             composition root: the only module that names concrete classes
    dav/               WsgiDAV adapter (provider, resources, property and lock storage)
    files.py           file service: write sessions, seekable readers, namespace operations
    meta/              metadata repository (SQLAlchemy); every query lives there
    store/             object store interface and implementations
    config.py          frozen settings, validated once
    errors.py          the one error tree
"""

__version__ = "0.1.0"
