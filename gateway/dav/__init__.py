"""WsgiDAV adapter: provider, resources, dead-property and lock storage, auth. No SQL, no Hub.

Only this package imports wsgidav.
"""
