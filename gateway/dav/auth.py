"""Domain controller: users from the settings, Basic and Digest, read-only users, anonymous access.

Write permission is enforced by the provider's request handler (WsgiDAV records roles but
does not enforce them).
"""

from __future__ import annotations

import hmac

from wsgidav.dc.base_dc import BaseDomainController

from gateway.config import Settings

ROLE_WRITE = "editor"
ROLE_READ = "reader"

#: Methods that change something; refused for read-only users and read-only anonymous access.
WRITE_METHODS = frozenset({"PUT", "DELETE", "MKCOL", "COPY", "MOVE", "PROPPATCH", "LOCK", "UNLOCK", "POST", "PATCH"})


def user_table(settings: Settings) -> dict[str, tuple[str, bool]]:
    table = {u.name: (u.password, u.can_write) for u in settings.users}
    if settings.admin_password:
        table["admin"] = (settings.admin_password, True)
    return table


class HfdavDomainController(BaseDomainController):
    """Configured through the WsgiDAV config key ``hfdav_dc``: ``{"users": {...}, "anonymous": ...}``."""

    def __init__(self, wsgidav_app, config):
        super().__init__(wsgidav_app, config)
        opts = config["hfdav_dc"]
        self._users: dict[str, tuple[str, bool]] = opts["users"]
        self._anonymous: str = opts["anonymous"]

    def get_domain_realm(self, path_info, environ):
        return "hfdav"

    def require_authentication(self, realm, environ):
        if environ is None:
            return self._anonymous == "none"
        if self._anonymous == "rw":
            environ["wsgidav.auth.roles"] = (ROLE_WRITE,)
            return False
        read = environ.get("REQUEST_METHOD") not in WRITE_METHODS
        if self._anonymous == "ro" and read and "HTTP_AUTHORIZATION" not in environ:
            environ["wsgidav.auth.roles"] = (ROLE_READ,)
            return False
        return True

    def is_share_anonymous(self, path_info):
        return self._anonymous != "none"

    def basic_auth_user(self, realm, user_name, password, environ):
        entry = self._users.get(user_name)
        if entry is None or not hmac.compare_digest(entry[0].encode(), password.encode()):
            return False
        environ["wsgidav.auth.roles"] = (ROLE_WRITE if entry[1] else ROLE_READ,)
        return True

    def supports_http_digest_auth(self):
        return True

    def digest_auth_user(self, realm, user_name, environ):
        entry = self._users.get(user_name)
        if entry is None:
            return False
        environ["wsgidav.auth.roles"] = (ROLE_WRITE if entry[1] else ROLE_READ,)
        return self._compute_http_digest_a1(realm, user_name, entry[0])
