"""The other WebDAV servers users compare hfdav with, each on a fresh directory and a free port,
with Basic auth for the benchmark's user: rclone ``serve webdav``, nginx with its dav modules
(``dav_ext`` adds PROPFIND), and Apache ``mod_dav_fs``.

Each ``start_*`` returns a :class:`bench._util.Server`, or raises :class:`PeerMissing` naming
the Debian package to install (``ensure_installed`` installs them as root with apt-get).
"""

from __future__ import annotations

import os
import pwd
import shutil
import subprocess
from pathlib import Path

import _util as u

#: peer name -> (executable, Debian packages providing it)
PACKAGES = {
    "rclone": ("rclone", ["rclone"]),
    "nginx": ("nginx", ["nginx", "libnginx-mod-http-dav-ext"]),
    "apache": ("apache2", ["apache2", "apache2-utils"]),
}
NGINX_DAV_EXT = Path("/usr/lib/nginx/modules/ngx_http_dav_ext_module.so")
APACHE_MODULES = Path("/usr/lib/apache2/modules")


class PeerMissing(RuntimeError):
    pass


def _which(name: str) -> str | None:
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def ensure_installed(peers: list[str]) -> list[str]:
    """Install the peers' packages where missing (root with apt-get only); returns the peers
    still missing afterwards."""
    wanted = [pkg for peer in peers if not _present(peer) for pkg in PACKAGES[peer][1]]
    if wanted and os.geteuid() == 0 and _which("apt-get"):
        env = dict(os.environ, DEBIAN_FRONTEND="noninteractive")
        subprocess.run(["apt-get", "install", "-y", "-qq", "--no-install-recommends", *wanted],
                       env=env, capture_output=True, check=False)  # fmt: skip
    return [peer for peer in peers if not _present(peer)]


def _present(peer: str) -> bool:
    if _which(PACKAGES[peer][0]) is None:
        return False
    if peer == "nginx":
        return NGINX_DAV_EXT.exists()
    if peer == "apache":
        return (APACHE_MODULES / "mod_dav_fs.so").exists()
    return True


def _require(peer: str) -> str:
    if not _present(peer):
        raise PeerMissing(f"{peer} not installed: apt-get install {' '.join(PACKAGES[peer][1])}")
    return _which(PACKAGES[peer][0]) or PACKAGES[peer][0]


def start_rclone(workdir: Path) -> u.Server:
    exe = _require("rclone")
    port = u.free_port()
    workdir = workdir / "rclone"
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "rclone-root"
    root.mkdir(parents=True, exist_ok=True)
    argv = [exe, "serve", "webdav", str(root), "--addr", f"127.0.0.1:{port}", "--user", u.USER,
            "--pass", u.PASSWORD, "--config", "/dev/null", "--cache-dir", str(workdir / "rclone-cache")]  # fmt: skip
    return u._launch("rclone serve webdav", argv, dict(os.environ), workdir / "rclone.log", port, root)


NGINX_CONF = """\
load_module {dav_ext};
{user}
worker_processes auto;
pid {work}/nginx.pid;
error_log {work}/nginx-error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {work}/nginx-body;
    proxy_temp_path {work}/nginx-proxy;
    fastcgi_temp_path {work}/nginx-fastcgi;
    uwsgi_temp_path {work}/nginx-uwsgi;
    scgi_temp_path {work}/nginx-scgi;
    sendfile on;
    server {{
        listen 127.0.0.1:{port};
        root {root};
        client_max_body_size 0;
        create_full_put_path on;
        dav_methods PUT DELETE MKCOL COPY MOVE;
        dav_ext_methods PROPFIND OPTIONS LOCK UNLOCK;
        dav_ext_lock zone=bench;
        auth_basic "bench";
        auth_basic_user_file {work}/nginx.htpasswd;
        location / {{ dav_ext_lock zone=bench; }}
    }}
    dav_ext_lock_zone zone=bench:10m;
}}
"""


def _password_file(path: Path) -> None:
    hashed = subprocess.run(["openssl", "passwd", "-apr1", u.PASSWORD], capture_output=True, text=True,
                            check=True).stdout.strip()  # fmt: skip
    path.write_text(f"{u.USER}:{hashed}\n")
    path.chmod(0o644)


def start_nginx(workdir: Path) -> u.Server:
    exe = _require("nginx")
    port = u.free_port()
    workdir = workdir / "nginx"
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "nginx-root"
    root.mkdir(parents=True, exist_ok=True)
    _password_file(workdir / "nginx.htpasswd")
    user = "user root;" if os.geteuid() == 0 else ""  # workers write into the bench's own dirs
    conf = workdir / "nginx.conf"
    conf.write_text(NGINX_CONF.format(dav_ext=NGINX_DAV_EXT, user=user, work=workdir, port=port, root=root))
    argv = [exe, "-c", str(conf), "-p", str(workdir), "-g", "daemon off;"]
    return u._launch("nginx dav", argv, dict(os.environ), workdir / "nginx.log", port, root)


APACHE_CONF = """\
ServerRoot "{work}"
ServerName 127.0.0.1
Listen 127.0.0.1:{port}
PidFile {work}/apache.pid
ErrorLog {work}/apache-error.log
LogLevel warn
{user}
LoadModule mpm_event_module {mods}/mod_mpm_event.so
LoadModule authn_core_module {mods}/mod_authn_core.so
LoadModule authn_file_module {mods}/mod_authn_file.so
LoadModule authz_core_module {mods}/mod_authz_core.so
LoadModule authz_user_module {mods}/mod_authz_user.so
LoadModule auth_basic_module {mods}/mod_auth_basic.so
LoadModule dav_module {mods}/mod_dav.so
LoadModule dav_fs_module {mods}/mod_dav_fs.so
LoadModule dav_lock_module {mods}/mod_dav_lock.so
DAVLockDB {work}/apache-davlock
EnableSendfile On
DocumentRoot "{root}"
<Directory "{root}">
    Dav On
    AuthType Basic
    AuthName "bench"
    AuthUserFile {work}/apache.htpasswd
    Require valid-user
</Directory>
"""


def start_apache(workdir: Path) -> u.Server:
    exe = _require("apache")
    port = u.free_port()
    workdir = workdir / "apache"
    workdir.mkdir(parents=True, exist_ok=True)
    root = workdir / "apache-root"
    root.mkdir(parents=True, exist_ok=True)
    _password_file(workdir / "apache.htpasswd")
    user = ""
    if os.geteuid() == 0:  # Apache will not serve as root: its children run as www-data
        account = pwd.getpwnam("www-data")
        for path in (workdir, root):
            os.chown(path, account.pw_uid, account.pw_gid)
        user = "User www-data\nGroup www-data"
    conf = workdir / "apache.conf"
    conf.write_text(APACHE_CONF.format(work=workdir, port=port, mods=APACHE_MODULES, root=root, user=user))
    argv = [exe, "-f", str(conf), "-DFOREGROUND"]
    return u._launch("apache mod_dav", argv, dict(os.environ), workdir / "apache.log", port, root)


STARTERS = {"rclone": start_rclone, "nginx": start_nginx, "apache": start_apache}
