"""The file manager driven in a real headless browser (Debian's chromium and chromedriver):
sign in, upload a file while the connection is dropped and the server restarted mid-way,
preview, share and open the link in a fresh browser, rename, delete and restore. The uploaded
file must be byte-identical over WebDAV."""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import socket
import struct
import threading
import zlib
from pathlib import Path

import pytest
import requests

from gateway.app import build_gateway
from gateway.config import load_settings
from gateway.server_front import Limits, Server
from gateway.server_io import request_socket

UI = "/.hfdav-ui"
USER, PASSWORD = "alice", "alice-password-long"
ROOT = Path(__file__).resolve().parents[2]

webdriver = pytest.importorskip("selenium.webdriver", reason="selenium is not installed (pip install -e .[test])")
from selenium.webdriver.common.by import By  # noqa: E402
from selenium.webdriver.support import expected_conditions as EC  # noqa: E402
from selenium.webdriver.support.ui import WebDriverWait  # noqa: E402

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
CHROMEDRIVER = shutil.which("chromedriver")


class DropOnce:
    """WSGI middleware: the ``nth`` PATCH of an upload reads ``after`` bytes of its body, then its
    connection is shut (the browser sees a broken connection) and ``dropped`` is set."""

    def __init__(self, app, *, nth: int, after: int):
        self.app, self.nth, self.after = app, nth, after
        self.seen = 0
        self.created = 0
        self.dropped = threading.Event()
        self._lock = threading.Lock()

    def __call__(self, environ, start_response):
        if environ.get("REQUEST_METHOD") == "POST" and environ.get("PATH_INFO", "").endswith(UI + "/api/uploads"):
            with self._lock:
                self.created += 1
        if environ.get("REQUEST_METHOD") == "PATCH" and UI + "/api/uploads/" in environ.get("PATH_INFO", ""):
            with self._lock:
                self.seen += 1
                mine = self.seen == self.nth
            if mine:
                environ["wsgi.input"] = _Cutting(
                    environ["wsgi.input"], self.after, request_socket(environ), self.dropped
                )
        return self.app(environ, start_response)


class _Cutting:
    def __init__(self, raw, after, sock, dropped):
        self.raw, self.left, self.sock, self.dropped = raw, after, sock, dropped

    def read(self, n=-1):
        if self.left <= 0:
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
            self.dropped.set()
            raise OSError("connection dropped by the test")
        data = self.raw.read(min(n, self.left) if n and n > 0 else self.left)
        self.left -= len(data)
        return data


class Restartable:
    """The gateway served by hfdav's own HTTP server on a fixed port; :meth:`restart` closes it
    and builds and serves a new one on the same data dir and port."""

    def __init__(self, env, wrap):
        self.env, self.wrap = env, wrap
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base = f"http://127.0.0.1:{self.port}"
        self._start()

    def _start(self):
        self.gw = build_gateway(load_settings(dict(self.env)))
        self.app = self.wrap(self.gw.wsgi_app)
        self.httpd = Server(("127.0.0.1", self.port), self.app, limits=Limits(), numthreads=8)
        self.httpd.shutdown_timeout = 2
        self.httpd.prepare()
        self.thread = threading.Thread(target=self.httpd.serve, daemon=True)
        self.thread.start()

    def stop(self):
        self.httpd.stop()
        self.thread.join(10)
        self.gw.close()

    def restart(self):
        self.stop()
        self._start()


def _driver(download_dir: Path):
    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--window-size=1280,900",
                "--disable-gpu", "--no-first-run"):  # fmt: skip
        opts.add_argument(arg)
    opts.add_experimental_option("prefs", {"download.default_directory": str(download_dir)})
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=webdriver.ChromeService(executable_path=CHROMEDRIVER), options=opts)


def _png(width: int, height: int) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes((200, 80, 40)) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def _wav(seconds: float, rate: int = 8000) -> bytes:
    samples = bytes(int(seconds * rate) * 2)  # 16-bit mono silence
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate * 2, 2, 16)
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", len(samples)) + samples
    return b"RIFF" + struct.pack("<I", len(body)) + body


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


def _dav_sha256(url: str) -> str:
    h = hashlib.sha256()
    with requests.get(url, auth=(USER, PASSWORD), stream=True, timeout=120) as r:
        assert r.status_code == 200
        for block in r.iter_content(1 << 20):
            h.update(block)
    return h.hexdigest()


def _row(driver, name):
    return driver.find_element(By.CSS_SELECTOR, f'#rows tr[data-name="{name}"]')


def run_scenario(
    tmp_path: Path,
    size: int,
    *,
    drop_at: int,
    screenshot: Path | None = None,
    timeout: float = 120,
    reload: bool = False,
    prefix: str = "",
):
    """``reload``: after the drop the page is reloaded and the file chosen again (the upload goes
    on from the id kept in localStorage); else the server is restarted while the page retries."""
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.skip("chromium and chromedriver are needed (apt-get install -y chromium chromium-driver)")
    users = f"{USER}:{PASSWORD}:rw,viewer:viewer-password-long:ro"
    env = {"HFDAV_DATA_DIR": str(tmp_path / "data"), "HFDAV_USERS": users,
           "HFDAV_TRASH_DAYS": "7", "HFDAV_QUOTA": "10GiB", "HFDAV_PREFIX": prefix or "/"}  # fmt: skip
    dropper = {}

    def wrap(app):
        if "d" not in dropper:
            dropper["d"] = DropOnce(app, nth=drop_at, after=3 << 20)
            return dropper["d"]
        return app  # after the restart: no more drops

    server = Restartable(env, wrap)
    source = tmp_path / "big upload.bin"
    with open(source, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 4 << 20))
            f.write(block)
            left -= len(block)
    server.gw.files.mkdir("/Documents")
    server.gw.files.mkdir("/Fotos été")
    server.gw.files.write_bytes("/photo.png", _png(40, 30))
    server.gw.files.write_bytes("/tone.wav", _wav(2.0))
    server.gw.files.write_bytes("/hello.py", b'def greet(name):\n    return "hi " + name  # a comment\n')
    driver = _driver(tmp_path / "dl")
    fresh = None
    try:
        wait = WebDriverWait(driver, timeout)
        driver.get(server.base + prefix + "/")  # a browser's GET of the share: the file manager
        wait.until(EC.visibility_of_element_located((By.ID, "user"))).send_keys(USER)
        driver.find_element(By.ID, "password").send_keys(PASSWORD)
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "whoami"), USER))
        wait.until(lambda d: _row(d, "hello.py"))

        # into a folder (non-ASCII name) and back by the breadcrumbs
        _row(driver, "Fotos été").find_element(By.CSS_SELECTOR, "a.open").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "more"), "This folder is empty."))
        assert driver.find_element(By.CSS_SELECTOR, "nav.crumbs").text.split() == ["Drive", "/", "Fotos", "été"]
        driver.find_element(By.CSS_SELECTOR, "nav.crumbs a").click()
        wait.until(lambda d: _row(d, "hello.py"))

        # upload; the connection is dropped mid-way and the server restarted
        driver.find_element(By.ID, "upload-input").send_keys(str(source))
        assert dropper["d"].dropped.wait(timeout), "the upload never reached the piece to drop"
        if reload:
            driver.refresh()
            wait.until(EC.text_to_be_present_in_element((By.ID, "whoami"), USER))  # the session cookie stays
            driver.find_element(By.ID, "upload-input").send_keys(str(source))
        else:
            server.restart()
        wait.until(lambda d: "done" in d.find_element(By.CSS_SELECTOR, "#upload-list .up .st").text
                   or "failed" in d.find_element(By.CSS_SELECTOR, "#upload-list .up .st").text)  # fmt: skip
        status = driver.find_element(By.CSS_SELECTOR, "#upload-list .up .st").text
        assert status == "done", status
        assert _dav_sha256(server.base + prefix + "/big%20upload.bin") == _sha256(source)
        if reload:
            assert dropper["d"].created == 1, "the reloaded page started a new upload instead of resuming"
        assert not list((tmp_path / "data" / "webui-uploads").iterdir())  # staging area emptied
        wait.until(lambda d: _row(d, "big upload.bin"))
        if screenshot is not None:
            driver.save_screenshot(str(screenshot))
            driver.set_window_size(390, 844)  # a phone
            driver.save_screenshot(str(screenshot.with_name(screenshot.stem + "-phone.png")))
            driver.set_window_size(1280, 900)

        # a whole folder by the folder picker, and a file dropped on the list
        tree = tmp_path / "album"
        (tree / "inner").mkdir(parents=True)
        (tree / "one.txt").write_bytes(b"first file")
        (tree / "inner" / "two.txt").write_bytes(b"second file")
        driver.find_element(By.ID, "upload-dir-input").send_keys(str(tree))
        driver.execute_script(
            "const dt = new DataTransfer(); dt.items.add(new File(['dropped bytes'], 'dropped.txt'));"
            "document.getElementById('main').dispatchEvent(new DragEvent('drop', {dataTransfer: dt, bubbles: true}));"
        )

        def all_done(d):
            states = [e.text for e in d.find_elements(By.CSS_SELECTOR, "#upload-list .up .st")]
            return all(t == "done" for t in states)

        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#upload-list .up")) == 4)
        wait.until(all_done)
        assert server.gw.files.read_bytes("/album/inner/two.txt") == b"second file"
        assert server.gw.files.read_bytes("/album/one.txt") == b"first file"
        assert server.gw.files.read_bytes("/dropped.txt") == b"dropped bytes"
        total = driver.find_element(By.ID, "upload-total").text
        assert total.startswith("4/4"), total

        # several at once: select two items and move them into a folder
        wait.until(lambda d: _row(d, "album") and _row(d, "dropped.txt"))
        _row(driver, "album").find_element(By.CSS_SELECTOR, "input.pick").click()
        _row(driver, "dropped.txt").find_element(By.CSS_SELECTOR, "input.pick").click()
        assert driver.find_element(By.ID, "bulk-count").text == "2 selected"
        driver.find_element(By.ID, "bulk-move").click()
        field = wait.until(EC.visibility_of_element_located((By.ID, "f-dest")))
        field.clear()
        field.send_keys("/Documents")
        driver.find_element(By.ID, "dialog-ok").click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '#rows tr[data-name="album"]'))
        assert server.gw.files.read_bytes("/Documents/album/inner/two.txt") == b"second file"
        assert server.gw.files.read_bytes("/Documents/dropped.txt") == b"dropped bytes"
        assert not driver.find_element(By.ID, "bulk").is_displayed()

        # preview: an image
        _row(driver, "photo.png").find_element(By.CSS_SELECTOR, "a.open").click()
        image = wait.until(EC.visibility_of_element_located((By.ID, "preview-image")))
        wait.until(lambda d: d.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image) == 40)
        driver.find_element(By.ID, "preview-close").click()

        driver.find_element(By.ID, "uploads-hide").click()  # the panel covers the lower rows

        # preview: audio in the browser's player, seekable
        _row(driver, "tone.wav").find_element(By.CSS_SELECTOR, "a.open").click()
        audio = wait.until(EC.presence_of_element_located((By.ID, "preview-audio")))
        wait.until(lambda d: d.execute_script("return arguments[0].readyState", audio) >= 1)
        assert abs(driver.execute_script("return arguments[0].duration", audio) - 2.0) < 0.05
        driver.execute_script("arguments[0].currentTime = 1.5", audio)
        wait.until(lambda d: d.execute_script("return !arguments[0].seeking && arguments[0].currentTime", audio) >= 1.4)
        driver.find_element(By.ID, "preview-close").click()

        # preview: highlighted code
        _row(driver, "hello.py").find_element(By.CSS_SELECTOR, "a.open").click()
        code = wait.until(EC.visibility_of_element_located((By.ID, "preview-text")))
        assert "greet" in code.text
        assert [k.text for k in code.find_elements(By.CSS_SELECTOR, "span.k")][:2] == ["def", "return"]
        driver.find_element(By.ID, "preview-close").click()

        # choosing a file whose name is taken asks first: cancelled, then replaced
        newer = tmp_path / "pick" / "hello.py"
        newer.parent.mkdir()
        newer.write_bytes(b"print('replaced')\n")
        driver.find_element(By.ID, "upload-input").send_keys(str(newer))
        wait.until(EC.element_to_be_clickable((By.CSS_SELECTOR, "#dialog .buttons button:first-child"))).click()
        driver.find_element(By.ID, "upload-input").send_keys(str(newer))
        wait.until(EC.element_to_be_clickable((By.ID, "dialog-ok"))).click()
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#upload-list .up")) == 5)
        wait.until(all_done)
        assert server.gw.files.read_bytes("/hello.py") == b"print('replaced')\n"

        # share link, opened in a fresh browser without a session
        _row(driver, "big upload.bin").find_element(By.CSS_SELECTOR, "button.share").click()
        wait.until(EC.element_to_be_clickable((By.ID, "dialog-ok"))).click()
        link = wait.until(EC.visibility_of_element_located((By.ID, "share-url"))).get_attribute("value")
        assert link.startswith(f"{server.base}{prefix}{UI}/s/")
        driver.find_element(By.ID, "dialog-ok").click()
        fresh = _driver(tmp_path / "dl2")
        fresh.get(link)
        shared = WebDriverWait(fresh, timeout).until(EC.visibility_of_element_located((By.ID, "shared-name")))
        assert shared.text == "big upload.bin"
        href = fresh.find_element(By.ID, "shared-download").get_attribute("href")
        r = requests.get(href, headers={"Range": "bytes=0-99"}, timeout=30)  # the link works without a login
        with open(source, "rb") as f:
            assert r.status_code == 206 and r.content == f.read(100)

        # rename
        _row(driver, "big upload.bin").find_element(By.CSS_SELECTOR, "button.rename").click()
        field = wait.until(EC.visibility_of_element_located((By.ID, "f-name")))
        field.clear()
        field.send_keys("renamed.bin")
        driver.find_element(By.ID, "dialog-ok").click()
        wait.until(lambda d: _row(d, "renamed.bin"))

        # delete (to the trash) and restore
        _row(driver, "renamed.bin").find_element(By.CSS_SELECTOR, "button.delete").click()
        wait.until(EC.element_to_be_clickable((By.ID, "dialog-ok"))).click()
        wait.until(lambda d: not d.find_elements(By.CSS_SELECTOR, '#rows tr[data-name="renamed.bin"]'))
        assert server.gw.files.stat("/renamed.bin") is None
        driver.find_element(By.ID, "nav-trash").click()
        wait.until(
            EC.element_to_be_clickable((By.CSS_SELECTOR, '#trash-rows tr[data-path="/renamed.bin"] button.restore'))
        ).click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "main"), "The trash is empty."))
        driver.find_element(By.ID, "nav-files").click()
        wait.until(lambda d: _row(d, "renamed.bin"))
        assert _dav_sha256(server.base + prefix + "/renamed.bin") == _sha256(source)
        # a read-only user gets no write actions
        driver.find_element(By.ID, "logout").click()
        wait.until(EC.visibility_of_element_located((By.ID, "user"))).send_keys("viewer")
        driver.find_element(By.ID, "password").send_keys("viewer-password-long")
        driver.find_element(By.CSS_SELECTOR, "#login button[type=submit]").click()
        wait.until(EC.text_to_be_present_in_element((By.ID, "whoami"), "read-only"))
        wait.until(lambda d: _row(d, "renamed.bin"))
        for sel in ("#upload-files", "#mkdir", "#nav-trash", "#nav-shares", "button.rename", "button.delete"):
            assert not driver.find_elements(By.CSS_SELECTOR, sel), sel
        assert _row(driver, "renamed.bin").find_elements(By.CSS_SELECTOR, "a.dl")
        for d in (driver, fresh):
            problems = [e["message"] for e in d.get_log("browser")
                        if "Content Security Policy" in e["message"] or "Uncaught" in e["message"]]  # fmt: skip
            assert not problems, problems
    except Exception:
        driver.save_screenshot(str(tmp_path / "failure.png"))
        print("page at failure:", tmp_path / "failure.png", driver.find_element(By.TAG_NAME, "body").text[:2000])
        raise
    finally:
        if fresh is not None:
            fresh.quit()
        driver.quit()
        server.stop()


def test_browser_upload_with_reconnect_preview_share_rename_delete_restore(tmp_path):
    shots = os.environ.get("HFDAV_WEBUI_SCREENSHOTS") == "1"  # refresh the README's pictures
    run_scenario(
        tmp_path, 20 * 1024 * 1024 + 12345, drop_at=2, screenshot=ROOT / "docs" / "webui.png" if shots else None
    )


def test_browser_upload_resumes_after_page_reload(tmp_path):
    run_scenario(tmp_path, 20 * 1024 * 1024 + 7, drop_at=2, reload=True, prefix="/dav")


@pytest.mark.slow
def test_browser_200mb_upload_with_reconnect(tmp_path):
    run_scenario(tmp_path, 200 * 1000 * 1000, drop_at=8, timeout=600)
