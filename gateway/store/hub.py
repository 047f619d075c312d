"""The Hugging Face Hub store: objects as LFS files of a dataset repo.

The only module that imports ``huggingface_hub``. Two layers:

* :class:`HubClient`: the repo operations hfdav needs, each one call of ``HfApi`` (create_repo,
  repo_info, preupload_lfs_files, create_commit, list_repo_tree, get_paths_info,
  super_squash_history) or, for ranged reads, one GET of the ``resolve`` URL pinned to a commit
  (the library has no ranged-read call). Every failure is translated once into :class:`HubError`
  (a :class:`StoreError` carrying the HTTP status and whether a retry may help).
* Ranged reads carry every byte a cold GET serves, so they go through urllib3 (:class:`_Reader`):
  its responses read large blocks with two copies, where the library's HTTP client parses the
  body in pieces through several layers and spent about three times the CPU per GiB. The URL and
  the headers (token, user agent) still come from huggingface_hub, TLS trust is the library
  client's (``httpx2.create_ssl_context``: certifi, ``SSL_CERT_FILE``), proxies come from the
  environment as for the library (``HTTPS_PROXY``, ``NO_PROXY``), redirects to the storage
  origin drop the token, and transient answers are retried with backoff as the library does.
* :class:`HubStore`: the :class:`ObjectStore` contract on top of it, one commit per ``adopt`` or
  ``delete``. The gateway puts the write-back store in front of it and lets the sync package batch
  uploads into few commits; used alone it is what the contract suite and tools see.

Repo layout (the format is documented in FORMAT.md): an object lives at ``objects/ab/cd/<id>``.

``HF_ENDPOINT`` is honoured (``endpoint=None`` lets the library read it); Xet uploads are the
library's choice (``HF_HUB_DISABLE_XET``), see docs/HUB.md.
"""

from __future__ import annotations

import logging
import os
import re
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urljoin, urlsplit
from urllib.request import getproxies, proxy_bypass

import httpx2
import urllib3
from httpx2._content import IteratorByteStream
from huggingface_hub import CommitOperationAdd, CommitOperationDelete, HfApi, constants, hf_hub_url
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.lfs import UploadInfo
from huggingface_hub.utils import build_hf_headers, disable_progress_bars
from urllib3.util.retry import Retry

from gateway import metrics
from gateway.bandwidth import Bandwidth, ThrottledReader
from gateway.errors import HubUnreachable, IntegrityError, ObjectMissing, StoreError
from gateway.meta.records import ObjectState
from gateway.store.base import OBJECT_ID_RE, ObjectStore, RangeStream, ReadStream, shard_path
from gateway.store.hubhttp import HubHttp, HubLimits, install

log = logging.getLogger(__name__)

REPO_TYPE = "dataset"
BRANCH = "main"
OBJECTS_DIR = "objects"

#: HTTP statuses after which trying the same call again may succeed: timeouts, "another commit
#: is in progress" (409), rate limits (429) and server errors.
TRANSIENT_STATUSES = frozenset({408, 409, 429, 500, 502, 503, 504})
#: The Hub answers 413 beyond 1000 paths in one paths-info call; stay well below.
PATHS_INFO_BATCH = 500
#: Bytes asked from the HTTP stream per iteration of a ranged read.
READ_BLOCK = 1 << 20
#: Concurrent LFS PUTs inside one preupload call.
UPLOAD_THREADS = 4
#: Bytes the library's HTTP client reads from a file it sends (an LFS PUT). It reads 64 KiB,
#: and each piece then costs its way through the protocol layers: larger pieces roughly halve
#: the CPU per MiB sent.
UPLOAD_READ = 1 << 20
#: Ranged reads: attempts of one request, backoff between them (1, 2, 4, 8 s as the library),
#: the longest wait a Retry-After or RateLimit answer is obeyed for, redirects followed.
READ_ATTEMPTS = 5
READ_BACKOFF_MAX_S = 8.0
READ_RETRY_AFTER_MAX_S = 60
#: GETs of one read when the storage refuses the signed URL it was redirected to (403): the first,
#: and one after resolving again.
SIGNED_URL_ATTEMPTS = 2
MAX_REDIRECTS = 5
#: Kept-alive connections per host for ranged reads (cache fills, windowed reads).
READ_POOL_SIZE = 16

if IteratorByteStream.CHUNK_SIZE < UPLOAD_READ:
    IteratorByteStream.CHUNK_SIZE = UPLOAD_READ

metrics.describe("hfdav_hub_api_calls_total", "Hub calls made through huggingface_hub, by kind")
metrics.describe("hfdav_hub_429_total", "Hub answers 429 (rate limited) seen by hfdav")


def object_path(object_id: str) -> str:
    """``objects/ab/cd/<id>``: two levels of 256 folders keep every folder far below the Hub's
    10k-entries limit."""
    return f"{OBJECTS_DIR}/{shard_path(object_id)}"


def object_id_of(path: str) -> str | None:
    """The object id of a repo path made by :func:`object_path`, else None."""
    parts = path.split("/")
    if len(parts) == 4 and parts[0] == OBJECTS_DIR and OBJECT_ID_RE.match(parts[3]):
        oid = parts[3]
        if parts[1] == oid[:2] and parts[2] == oid[2:4]:
            return oid
    return None


class HubError(StoreError):
    """A Hub call failed. ``status``: the HTTP status (None for a transport failure: the answer
    never came, so the call may or may not have taken effect). ``retry_after``: seconds the Hub
    asked to wait, if it said."""

    def __init__(self, message: str, *, status: int | None, transient: bool, retry_after: float | None = None):
        super().__init__(message, transient=transient)
        self.status = status
        self.retry_after = retry_after


_RATELIMIT_RESET_RE = re.compile(r";\s*t=(\d+)")


def _retry_after(response) -> float | None:
    """Seconds the Hub asked to wait: ``Retry-After``, or the reset time of a ``RateLimit``
    header (``"api";r=0;t=55``)."""
    if response is None:
        return None
    raw = response.headers.get("Retry-After")
    if raw and raw.strip().isdigit():
        return float(raw)
    m = _RATELIMIT_RESET_RE.search(response.headers.get("RateLimit", ""))
    return float(m.group(1)) + 1 if m else None


def translate(exc: BaseException, what: str) -> HubError:
    """The one place that maps huggingface_hub / httpx2 failures to :class:`HubError`."""
    if isinstance(exc, HubError):
        return exc
    if isinstance(exc, HfHubHTTPError) and exc.response is not None:
        status = exc.response.status_code
        if status == 429:
            metrics.inc("hfdav_hub_429_total")
        first_line = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        return HubError(
            f"{what}: {first_line}",
            status=status,
            transient=status in TRANSIENT_STATUSES,
            retry_after=_retry_after(exc.response),
        )
    if isinstance(exc, (httpx2.TransportError, urllib3.exceptions.HTTPError, OSError)):
        return HubError(f"{what}: {type(exc).__name__}: {exc}", status=None, transient=True)
    if isinstance(exc, RuntimeError) and isinstance(exc.__cause__, BaseException):
        # LFS upload failures come wrapped: "Error while uploading '<path>' to the Hub."
        inner = translate(exc.__cause__, what)
        return HubError(f"{what}: {exc} ({inner})", status=inner.status, transient=inner.transient)
    return HubError(f"{what}: {type(exc).__name__}: {exc}", status=None, transient=False)


@dataclass(frozen=True)
class RemoteFile:
    """A file of the repo: ``lfs_sha256`` is None for a regular (git) file."""

    path: str
    size: int
    lfs_sha256: str | None
    blob_id: str


@dataclass(frozen=True)
class Upload:
    """A local file to send as the repo file ``path``. ``sha256``: its hex digest if the caller
    knows it already (saves reading the file twice)."""

    path: str
    source: Path
    sha256: str | None = None


@dataclass(frozen=True)
class Uploaded:
    """Outcome of an :class:`Upload`. ``lfs``: the bytes are in the repo's LFS storage (a commit
    can reference them without the local file). False when the Hub wants the file as a regular
    git file: it then travels inside the commit, so the local file must stay until then."""

    path: str
    sha256: str
    size: int
    lfs: bool


@dataclass(frozen=True)
class Add:
    """A file a commit adds: either an uploaded LFS object (``sha256`` and ``size``), or a local
    ``source`` file, or small ``data`` (journal files)."""

    path: str
    sha256: str | None = None
    size: int | None = None
    source: Path | None = None
    data: bytes | None = None


def _operations(adds: Sequence[Add], deletes: Sequence[str]) -> list:
    ops: list = [CommitOperationDelete(path_in_repo=p) for p in deletes]
    for add in adds:
        if add.data is not None:
            ops.append(CommitOperationAdd(path_in_repo=add.path, path_or_fileobj=add.data))
        elif add.source is not None:
            op = CommitOperationAdd(path_in_repo=add.path, path_or_fileobj=str(add.source))
            if add.sha256:
                op.upload_info.sha256 = bytes.fromhex(add.sha256)
            ops.append(op)
        elif add.sha256 and add.size is not None:
            ops.append(_uploaded_lfs_operation(add.path, add.sha256, add.size))
        else:
            raise ValueError(f"nothing to commit for {add.path}")
    return ops


def _uploaded_lfs_operation(path: str, sha256: str, size: int) -> CommitOperationAdd:
    """A commit operation referencing an LFS object uploaded earlier, when the local copy may be
    gone. huggingface_hub builds such operations itself between ``preupload_lfs_files`` and
    ``create_commit`` (the op carries its ``UploadInfo`` and is flagged as uploaded); this sets the
    same fields, so the commit sends one ``lfsFile`` line and uploads nothing."""
    op = CommitOperationAdd(path_in_repo=path, path_or_fileobj=b"")
    op.upload_info = UploadInfo(size=size, sample=b"", sha256=bytes.fromhex(sha256))
    op._upload_mode = "lfs"
    op._is_uploaded = True
    return op


def apply_hub_transport(transport: str, data_dir: Path) -> None:
    """Choose how huggingface_hub uploads: ``xet`` (through hf_xet, its cache under
    ``<data_dir>/.cache/hf``, telemetry off unless the environment says otherwise) or ``lfs``
    (classic LFS). Set before the first upload; logged once."""
    xet = transport == "xet"
    constants.HF_HUB_DISABLE_XET = not xet
    os.environ["HF_HUB_DISABLE_XET"] = "0" if xet else "1"
    if xet:
        home = data_dir / ".cache" / "hf"
        home.mkdir(parents=True, exist_ok=True)
        os.environ.setdefault("HF_XET_CACHE", str(home / "xet"))
        if hasattr(constants, "HF_XET_CACHE"):
            constants.HF_XET_CACHE = os.environ["HF_XET_CACHE"]
        if "HF_HUB_DISABLE_TELEMETRY" not in os.environ:
            os.environ["HF_HUB_DISABLE_TELEMETRY"] = "1"
            constants.HF_HUB_DISABLE_TELEMETRY = True
    log.info("Hub transport: %s", transport)


class HubClient:
    """One dataset repo on a Hub (``endpoint`` None: ``HF_ENDPOINT`` or huggingface.co)."""

    def __init__(
        self,
        repo_id: str,
        *,
        token: str | None,
        endpoint: str | None = None,
        private: bool = True,
        limits: HubLimits | None = None,
        upload_limit: Bandwidth | None = None,
        download_limit: Bandwidth | None = None,
    ):
        """``limits``: timeouts and API budget of every request (:mod:`gateway.store.hubhttp`;
        the defaults when None). ``upload_limit``, ``download_limit``: the bandwidth limits of
        the bytes sent and received (:mod:`gateway.bandwidth`; None: none)."""
        self.repo_id = repo_id
        self.private = private
        self._token = token
        self.api = HfApi(endpoint=endpoint, token=token)
        self.endpoint = self.api.endpoint
        #: the process's Hub HTTP policy: timeouts, request counts, API budget, health
        self.http: HubHttp = install(limits or HubLimits(), self.endpoint)
        self.reader = _Reader(self.http)
        self.upload_limit = upload_limit
        self.download_limit = download_limit
        disable_progress_bars()  # a server's log is no terminal

    def unreachable(self, exc: BaseException) -> HubUnreachable:
        """The error of a first start that could not reach the Hub (one line)."""
        first = " ".join(str(exc).split())
        return HubUnreachable(
            f"the Hub at {self.endpoint} does not answer or only fails ({first}); the data dir holds no drive "
            "yet, so nothing can be served before the dataset repo is read: check HF_ENDPOINT and the network, "
            "then start again"
        )

    # -- repo ---------------------------------------------------------------------------------
    def ensure_repo(self) -> str:
        """Create the repo if missing (private unless told otherwise); return the head commit."""
        metrics.inc("hfdav_hub_api_calls_total", kind="create_repo")
        try:
            self.api.create_repo(self.repo_id, repo_type=REPO_TYPE, private=self.private, exist_ok=True)
        except Exception as exc:
            raise translate(exc, f"creating the dataset repo {self.repo_id}") from exc
        return self.head()

    def head(self) -> str:
        """The commit sha the branch points at now."""
        metrics.inc("hfdav_hub_api_calls_total", kind="repo_info")
        try:
            info = self.api.repo_info(self.repo_id, repo_type=REPO_TYPE, revision=BRANCH)
        except Exception as exc:
            raise translate(exc, f"reading the head of {self.repo_id}") from exc
        if not info.sha:
            raise HubError(f"the Hub gave no head commit for {self.repo_id}", status=None, transient=True)
        return info.sha

    def squash(self, message: str) -> str:
        """Squash the branch history into one commit (frees the quota held by deleted LFS
        files); returns the new head."""
        metrics.inc("hfdav_hub_api_calls_total", kind="super_squash")
        try:
            self.api.super_squash_history(self.repo_id, repo_type=REPO_TYPE, branch=BRANCH, commit_message=message)
        except Exception as exc:
            raise translate(exc, f"squashing the history of {self.repo_id}") from exc
        return self.head()

    # -- writes -------------------------------------------------------------------------------
    def upload(self, items: Sequence[Upload], *, threads: int = UPLOAD_THREADS) -> list[Uploaded]:
        """Send local files to the repo's LFS storage without committing (``preupload_lfs_files``:
        the library retries each request with backoff). Files the Hub wants as regular git files
        are not sent (``lfs=False``)."""
        if not items:
            return []
        ops = []
        try:
            for item in items:
                op = CommitOperationAdd(path_in_repo=item.path, path_or_fileobj=str(item.source))
                if item.sha256:
                    op.upload_info.sha256 = bytes.fromhex(item.sha256)
                ops.append(op)
        except Exception as exc:
            raise translate(exc, f"uploading {len(items)} objects") from exc
        if self.upload_limit is None:
            self._preupload(ops, threads)
        elif constants.HF_HUB_DISABLE_XET:
            self._preupload_throttled(ops, threads)
        else:
            # hf_xet reads the files itself: each file is charged whole before it is sent, one
            # at a time, so the average rate is the limit's
            for op in ops:
                self.upload_limit.take(op.upload_info.size)
                self._preupload([op], 1)
        return [
            Uploaded(op.path_in_repo, op.upload_info.sha256.hex(), op.upload_info.size, bool(op._is_uploaded))
            for op in ops
        ]

    def _preupload(self, ops: list[CommitOperationAdd], threads: int) -> None:
        metrics.inc("hfdav_hub_api_calls_total", kind="preupload")
        try:
            self.api.preupload_lfs_files(
                self.repo_id,
                additions=ops,
                repo_type=REPO_TYPE,
                revision=BRANCH,
                num_threads=max(1, min(threads, len(ops))),
                free_memory=True,
            )
        except Exception as exc:
            raise translate(exc, f"uploading {len(ops)} objects") from exc

    def _preupload_throttled(self, ops: list[CommitOperationAdd], threads: int) -> None:
        """LFS uploads read by the library from streams charged to the upload limit."""
        assert self.upload_limit is not None
        streams = []
        try:
            for op in ops:
                source = op.path_or_fileobj
                assert isinstance(source, str)  # upload() names every file by its path
                stream = ThrottledReader(open(source, "rb"), self.upload_limit)  # noqa: SIM115
                streams.append(stream)
                op.path_or_fileobj = stream  # type: ignore[assignment]  # a BufferedIOBase, as the library takes
            self._preupload(ops, threads)
        finally:
            for stream in streams:
                stream.close()

    def commit(
        self,
        adds: Sequence[Add],
        deletes: Sequence[str],
        *,
        message: str,
        description: str = "",
        parent: str | None,
    ) -> str:
        """One commit on the branch: ``deletes`` first, then ``adds``, atomically; ``parent`` is
        the head it must apply to (412 otherwise). Returns the new head. ``create_commit`` is not
        retried by the library: the caller decides, after finding out whether it landed."""
        metrics.inc("hfdav_hub_api_calls_total", kind="commit")
        try:
            ops = _operations(adds, deletes)
            info = self.api.create_commit(
                self.repo_id,
                ops,
                commit_message=message,
                commit_description=description,
                repo_type=REPO_TYPE,
                revision=BRANCH,
                parent_commit=parent,
                num_threads=UPLOAD_THREADS,
            )
        except Exception as exc:
            raise translate(exc, f"commit of {len(adds) + len(deletes)} operations") from exc
        return info.oid

    # -- listings -----------------------------------------------------------------------------
    def paths_info(self, paths: Iterable[str], *, revision: str = BRANCH) -> dict[str, RemoteFile]:
        """The files among ``paths`` that exist at ``revision`` (folders and missing paths are
        left out)."""
        paths = list(dict.fromkeys(paths))
        out: dict[str, RemoteFile] = {}
        for start in range(0, len(paths), PATHS_INFO_BATCH):
            metrics.inc("hfdav_hub_api_calls_total", kind="paths_info")
            try:
                entries = self.api.get_paths_info(
                    self.repo_id, paths[start : start + PATHS_INFO_BATCH], repo_type=REPO_TYPE, revision=revision
                )
            except Exception as exc:
                raise translate(exc, "paths-info") from exc
            for entry in entries:
                remote = _remote_file(entry)
                if remote is not None:
                    out[remote.path] = remote
        return out

    def list_files(self, folder: str | None = None, *, revision: str = BRANCH) -> Iterator[RemoteFile]:
        """Every file under ``folder`` (recursive; the whole repo for None). A missing folder
        lists nothing."""
        metrics.inc("hfdav_hub_api_calls_total", kind="list_tree")
        try:
            for entry in self.api.list_repo_tree(
                self.repo_id, folder, recursive=True, repo_type=REPO_TYPE, revision=revision
            ):
                remote = _remote_file(entry)
                if remote is not None:
                    yield remote
        except HfHubHTTPError as exc:
            response = exc.response
            if folder and response is not None and response.headers.get("X-Error-Code") == "EntryNotFound":
                return
            raise translate(exc, f"listing {folder or 'the repo'}") from exc
        except Exception as exc:
            raise translate(exc, f"listing {folder or 'the repo'}") from exc

    # -- reads --------------------------------------------------------------------------------
    def open_range(self, path: str, offset: int, length: int | None, *, revision: str) -> _RangeStream:
        """A lazy stream of ``length`` bytes of the repo file ``path`` from ``offset``, read with
        one HTTP Range GET of its resolve URL pinned to ``revision`` (a commit sha). Exactly
        ``length`` bytes or an error; nothing is transferred before the first read."""
        return _RangeStream(self, path, offset, length, revision)

    def read_file(self, path: str, *, revision: str) -> bytes:
        """A small repo file's whole content (hfdav.json, journal files)."""
        with _RangeStream(self, path, 0, None, revision) as stream:
            return stream.read()

    def download(self, path: str, target: Path, *, revision: str) -> int:
        """Stream a repo file into ``target``; returns its size."""
        n = 0
        with _RangeStream(self, path, 0, None, revision) as stream, open(target, "wb") as out:
            while block := stream.read(READ_BLOCK):
                out.write(block)
                n += len(block)
        return n

    def _resolve_url(self, path: str, revision: str) -> str:
        return hf_hub_url(self.repo_id, path, repo_type=REPO_TYPE, revision=revision, endpoint=self.endpoint)

    def _headers(self) -> dict[str, str]:
        return build_hf_headers(token=self._token)


def _remote_file(entry) -> RemoteFile | None:
    if not hasattr(entry, "blob_id"):
        return None  # a folder
    lfs = getattr(entry, "lfs", None)
    return RemoteFile(entry.path, int(entry.size), lfs.sha256 if lfs else None, entry.blob_id)


def _range_start(response) -> int | None:
    """The first byte a 206 answer says it holds (``Content-Range: bytes a-b/n``), if it says."""
    unit, _, spec = response.headers.get("Content-Range", "").partition(" ")
    first = spec.split("-", 1)[0]
    return int(first) if unit.lower() == "bytes" and first.isdigit() else None


def _unsatisfied_size(response) -> int | None:
    """The size a 416 answer names (``Content-Range: bytes */n``), if it names one."""
    spec = response.headers.get("Content-Range", "")
    size = spec.rsplit("/", 1)[-1] if spec.startswith("bytes */") else ""
    return int(size) if size.isdigit() else None


def _total_size(response) -> int | None:
    content_range = response.headers.get("Content-Range", "")
    if "/" in content_range and not content_range.endswith("/*"):
        return int(content_range.rsplit("/", 1)[1])
    length = response.headers.get("Content-Length")
    return int(length) if length is not None and response.status == 200 else None


class _ReadRetry(Retry):
    """urllib3's retry policy, also obeying the Hub's ``RateLimit`` reset time."""

    def get_retry_after(self, response) -> float | None:
        wait = _retry_after(response)
        return None if wait is None else min(wait, float(self.retry_after_max))


class _Reader:
    """GETs for ranged reads over urllib3 (see the module docstring): a connection pool per
    proxy setting, redirects followed here so that each hop gets the proxy its host needs and
    a hop to another host goes without the token."""

    def __init__(self, policy: HubHttp):
        self._policy = policy
        self._ssl = httpx2.create_ssl_context()
        self._managers: dict[str | None, urllib3.PoolManager] = {}
        self._lock = threading.Lock()
        self._retry = _ReadRetry(
            total=READ_ATTEMPTS,
            backoff_factor=1.0,
            backoff_max=READ_BACKOFF_MAX_S,
            status_forcelist=TRANSIENT_STATUSES - {409},
            allowed_methods=frozenset({"GET"}),
            redirect=False,
            raise_on_redirect=False,
            raise_on_status=False,
            retry_after_max=READ_RETRY_AFTER_MAX_S,
        )

    def _manager(self, url: str) -> urllib3.PoolManager:
        parts = urlsplit(url)
        proxy = None if proxy_bypass(parts.hostname or "") else getproxies().get(parts.scheme)
        with self._lock:
            manager = self._managers.get(proxy)
            if manager is None:
                kwargs = dict(num_pools=8, maxsize=READ_POOL_SIZE, ssl_context=self._ssl)
                manager = urllib3.ProxyManager(proxy, **kwargs) if proxy else urllib3.PoolManager(**kwargs)
                self._managers[proxy] = manager
            return manager

    def get(self, url: str, headers: dict[str, str]) -> tuple[urllib3.BaseHTTPResponse, bool]:
        """The final answer to a GET of ``url`` (redirects followed, transient failures retried;
        the body not read yet), and whether it came from another host than ``url``'s (the
        storage behind the Hub's redirect). Raises urllib3's errors for a transport failure."""
        origin = urlsplit(url).netloc
        timeout = urllib3.Timeout(connect=constants.HF_HUB_DOWNLOAD_TIMEOUT, read=constants.HF_HUB_DOWNLOAD_TIMEOUT)
        headers = {**headers, "Accept-Encoding": "identity"}
        for _ in range(MAX_REDIRECTS + 1):
            kind = "resolve" if urlsplit(url).netloc == origin else "transfer"
            self._policy.before(kind)
            token = self._policy.health.begin(kind)
            try:
                response = self._manager(url).urlopen(
                    "GET", url, headers=headers, retries=self._retry, redirect=False,
                    preload_content=False, decode_content=False, timeout=timeout,
                )  # fmt: skip
            except BaseException as exc:
                self._policy.after(token, None, None, f"{kind}: {type(exc).__name__}: {exc}", kind=kind)
                raise
            self._policy.after(token, response.status, response.headers, None, kind=kind)
            location = response.headers.get("Location")
            if response.status not in (301, 302, 303, 307, 308) or not location:
                return response, urlsplit(url).netloc != origin
            response.drain_conn()
            response.release_conn()
            url = urljoin(url, location)
            if urlsplit(url).netloc != origin:
                headers = {k: v for k, v in headers.items() if k.lower() not in ("authorization", "cookie")}
        raise HubError(f"more than {MAX_REDIRECTS} redirects reading {url}", status=None, transient=False)

    def close(self) -> None:
        with self._lock:
            managers, self._managers = list(self._managers.values()), {}
        for manager in managers:
            manager.clear()


def _answer_error(response, what: str) -> StoreError:
    status = response.status
    if status == 429:
        metrics.inc("hfdav_hub_429_total")
    code = response.headers.get("X-Error-Code", "")
    if status == 404 and code == "EntryNotFound":
        return ObjectMissing(f"{what}: not in the repo")
    if status == 404 and code == "RevisionNotFound":
        return HubError(f"{what}: revision gone", status=404, transient=True)
    message = response.headers.get("X-Error-Message") or response.reason or ""
    return HubError(
        f"{what}: {status} {message}".rstrip(),
        status=status,
        transient=status in TRANSIENT_STATUSES,
        retry_after=_retry_after(response),
    )


class _RangeStream(ReadStream):
    """The body of one ranged GET, opened on the first read, closed with the stream.
    ``length`` None: to the end of the file."""

    def __init__(self, client: HubClient, path: str, offset: int, length: int | None, revision: str):
        self._client = client
        self._path = path
        self._offset = offset
        self._left = length
        self._revision = revision
        self._response = None
        #: the file's total size, known once the request was answered
        self.total_size: int | None = None

    def start(self) -> None:
        """Send the request now (the first read does it otherwise): errors surface here."""
        if self._response is None:
            self._open()

    def _open(self) -> None:
        headers = self._client._headers()
        if self._offset or self._left is not None:
            end = "" if self._left is None else str(self._offset + self._left - 1)
            headers["Range"] = f"bytes={self._offset}-{end}"
        url = self._client._resolve_url(self._path, self._revision)
        metrics.inc("hfdav_hub_api_calls_total", kind="resolve_get")
        what = f"reading {self._path}@{self._revision[:12]}"
        for attempt in range(1, SIGNED_URL_ATTEMPTS + 1):
            try:
                response, from_storage = self._client.reader.get(url, headers)
            except StoreError:
                raise
            except Exception as exc:
                raise translate(exc, what) from exc
            if response.status == 403 and from_storage and attempt < SIGNED_URL_ATTEMPTS:
                # the storage refused the URL the Hub signed (expired on the way, or a clock
                # apart): resolve again for a freshly signed one
                log.info("%s: the storage refused its signed URL (403); resolving again", what)
                response.drain_conn()
                response.release_conn()
                continue
            break
        self._response = response
        if response.status == 416 and self._left is None and self._offset >= (_unsatisfied_size(response) or -1):
            self.total_size, self._left = _unsatisfied_size(response), 0  # from the end: nothing left to read
            self.close()
            return
        if response.status >= 400:
            self.close()
            raise _answer_error(response, what)
        if "Range" in headers and response.status != 206 and self._offset:
            self.close()
            raise IntegrityError(f"{what}: the server ignored the Range header (status {response.status})")
        start = _range_start(response)
        if response.status == 206 and start is not None and start != self._offset:
            self.close()
            raise IntegrityError(f"{what}: asked for bytes from {self._offset}, the storage sent them from {start}")
        self.total_size = _total_size(response)
        if self._left is None and self.total_size is not None:
            self._left = self.total_size - self._offset

    def _piece(self, n: int | None) -> bytes:
        """Up to ``n`` bytes (fewer only at the end of the body); None: all the rest."""
        try:
            return self._response.read(n)
        except Exception as exc:
            raise translate(exc, f"reading {self._path}") from exc

    def read(self, n: int = -1) -> bytes:
        if self._left is not None and self._left <= 0:
            return b""
        if self._response is None:
            self._open()
            if self._left == 0:
                return b""  # a read from the end
        want = n if n is not None and n >= 0 else None
        if self._left is not None:
            want = self._left if want is None else min(want, self._left)
        out = self._piece(want)
        if out and self._client.download_limit is not None:
            self._client.download_limit.take(len(out))
        if self._left is not None:
            if not out and want:
                raise IntegrityError(f"{self._path}: the Hub stream ended {self._left} bytes early")
            self._left -= len(out)
        return out

    def close(self) -> None:
        response, self._response = self._response, None
        if response is not None:
            try:
                if self._left == 0:
                    response.release_conn()  # the whole body was read: the connection is reusable
                else:
                    response.close()
            except Exception:  # closing a read stream loses nothing
                log.debug("closing a Hub stream failed", exc_info=True)
        super().close()


class HubStore(ObjectStore):
    """:class:`ObjectStore` on a dataset repo, one commit per call (see the module docstring).

    Reads are pinned to the head this store last saw; a read that finds its revision gone (a
    history squash) refreshes the head once.
    """

    initial_state = ObjectState.COMMITTED

    def __init__(self, client: HubClient, *, ids_are_sha256: bool = False):
        self.client = client
        self.ids_are_sha256 = ids_are_sha256
        self._lock = threading.Lock()
        self._head: str | None = None

    # -- head ---------------------------------------------------------------------------------
    @property
    def head(self) -> str:
        if self._head is None:
            self._head = self.client.head()
        return self._head

    def set_head(self, sha: str) -> None:
        """Record the newest commit known (the committer calls this after each commit)."""
        self._head = sha

    # -- the contract -------------------------------------------------------------------------
    def adopt(self, object_id: str, source: Path, size: int) -> None:
        path = object_path(object_id)
        with self._lock:
            if path in self.client.paths_info([path], revision=self.head):
                source.unlink(missing_ok=True)
                return
            sha = object_id if self.ids_are_sha256 else None
            done = self.client.upload([Upload(path, source, sha)])[0]
            add = Add(path, sha256=done.sha256, size=done.size) if done.lfs else Add(path, source=source)
            self._head = self.client.commit([add], [], message=f"hfdav: add object {object_id[:16]}", parent=self.head)
            source.unlink(missing_ok=True)

    def open_range(self, object_id: str, offset: int, length: int) -> RangeStream:
        return _LazyRange(lambda: self._open(object_path(object_id), offset, length))

    def open_whole(self, object_id: str) -> tuple[RangeStream, int]:
        """The whole object as a stream, and its size (one GET, no listing call)."""
        stream = self._open(object_path(object_id), 0, None)
        if stream.total_size is None:
            stream.close()
            raise HubError(f"no size for {object_id} in the Hub's answer", status=None, transient=True)
        return stream, stream.total_size

    def _open(self, path: str, offset: int, length: int | None) -> _RangeStream:
        """A started ranged read at the known head; once more at a fresh head if that revision
        is gone (the history was squashed)."""
        stream = self.client.open_range(path, offset, length, revision=self.head)
        try:
            stream.start()
        except HubError as exc:
            stream.close()
            if exc.status != 404:
                raise
            self.set_head(self.client.head())
            stream = self.client.open_range(path, offset, length, revision=self.head)
            stream.start()
        return stream

    def delete(self, object_ids: Iterable[str]) -> None:
        paths = [object_path(oid) for oid in object_ids]
        if not paths:
            return
        with self._lock:
            present = self.client.paths_info(paths, revision=self.head)
            doomed = [p for p in paths if p in present]
            if doomed:
                self._head = self.client.commit(
                    [], doomed, message=f"hfdav: delete {len(doomed)} objects", parent=self.head
                )

    def list_ids(self) -> Iterator[tuple[str, int]]:
        for remote in self.client.list_files(OBJECTS_DIR, revision=self.head):
            oid = object_id_of(remote.path)
            if oid is not None:
                yield oid, remote.size

    def size_of(self, object_id: str) -> int | None:
        found = self.client.paths_info([object_path(object_id)], revision=self.head)
        remote = found.get(object_path(object_id))
        return remote.size if remote else None

    def close(self) -> None:
        self.client.reader.close()


class _LazyRange(ReadStream):
    """Opens the underlying stream on the first read (``open_range`` transfers nothing)."""

    def __init__(self, opener):
        self._opener = opener
        self._inner: RangeStream | None = None

    def read(self, n: int = -1) -> bytes:
        if self._inner is None:
            self._inner = self._opener()
        return self._inner.read(n)

    def close(self) -> None:
        if self._inner is not None:
            self._inner.close()
            self._inner = None
        super().close()
