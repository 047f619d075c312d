"""The request front and the request server's GET/COPY/MOVE, table by table: every header that
carries a URL or a list (Destination, If, Range, Depth, Overwrite, Timeout, Lock-Token), first
as parsed values, then through the whole WSGI stack (cheroot in a thread, real HTTP), where a
malformed value must be a 400 and never a 500."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from urllib.parse import quote, unquote

import pytest
import requests

from gateway.dav.front import DESTINATION_KEY, BadHeader, check_request, if_header_valid, parse_destination
from gateway.dav.ranges import MAX_RANGE_HEADER, ByteRange, Multipart, parse_range, resolve
from tests.inprocess import served_gateway

AUTH = ("admin", "pw")
HOST = "dav.example:8080"

# -- Destination -------------------------------------------------------------------------------

DESTINATIONS = [
    # (header, expected decoded path, or the status of the refusal)
    (f"http://{HOST}/report%3F.txt", "/report?.txt"),
    (f"http://{HOST}/a%23b%3Bc.txt", "/a#b;c.txt"),
    (f"http://{HOST}/a;b.txt", "/a;b.txt"),
    (f"http://{HOST}/100%25%2520.txt", "/100%%20.txt"),  # decoded once only
    (f"http://{HOST}/a+b&c=d'e.txt", "/a+b&c=d'e.txt"),
    (f"http://{HOST}/%E4%B8%AD%E6%96%87%20%F0%9F%98%80.txt", "/中文 😀.txt"),
    ("HTTP://DAV.Example:8080/x", "/x"),  # scheme and host are case-insensitive
    (f"http://user:secret@{HOST}/x", "/x"),  # user info is ignored, as by Apache mod_dav
    ("/only/a/path%3F", "/only/a/path?"),
    (f"http://{HOST}", "/"),
    ("/raw \xe4\xb8\xad.txt", "/raw 中.txt"),  # unencoded UTF-8 and a space, as some clients send
    (f"http://{HOST}/x?y=1", 400),
    (f"http://{HOST}/x?", 400),
    (f"http://{HOST}/x#frag", 400),
    ("relative.txt", 400),
    ("", 400),
    ("/tab\there", 400),
    (f"http://{HOST}/caf%e9.txt", 400),
    ("mailto:someone@example.org", 400),
    ("ftp://dav.example:8080/x", 400),
    ("http://[::1/x", 400),
    ("http://dav.example:port/x", 400),
    ("https://dav.example:8080/x", 502),
    ("http://other.example:8080/x", 502),
    ("http://dav.example:8081/x", 502),
    ("http://dav.example/x", 502),  # port 80
]


@pytest.mark.parametrize(("header", "expected"), DESTINATIONS)
def test_parse_destination(header, expected):
    environ = {"HTTP_HOST": HOST, "wsgi.url_scheme": "http"}
    if isinstance(expected, str):
        assert parse_destination(header, environ) == expected
    else:
        with pytest.raises(BadHeader) as err:
            parse_destination(header, environ)
        assert err.value.status == expected


@pytest.mark.parametrize(
    ("header", "environ", "expected"),
    [
        # behind the bundled proxy: the client's scheme and host come as X-Forwarded-*
        ("https://space.example/x", {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_HOST": "space.example"}, "/x"),
        ("https://space.example:443/x", {"HTTP_X_FORWARDED_PROTO": "https", "HTTP_HOST": "space.example"}, "/x"),
        ("http://pub.example/x", {"HTTP_HOST": "127.0.0.1:8000", "HTTP_X_FORWARDED_HOST": "pub.example"}, "/x"),
        ("http://evil.example/x", {"HTTP_HOST": "127.0.0.1:8000", "HTTP_X_FORWARDED_HOST": "pub.example"}, 502),
        ("http://[::1]:8000/x", {"HTTP_HOST": "[::1]:8000"}, "/x"),
    ],
)
def test_parse_destination_behind_a_proxy(header, environ, expected):
    environ = {"wsgi.url_scheme": "http", **environ}
    if isinstance(expected, str):
        assert parse_destination(header, environ) == expected
    else:
        with pytest.raises(BadHeader):
            parse_destination(header, environ)


# -- If -----------------------------------------------------------------------------------------

IF_HEADERS = [
    ("(<opaquelocktoken:a-b>)", True),
    ("(Not <DAV:no-lock>)", True),
    ('(<urn:uuid:1> ["etag"]) (Not <DAV:no-lock>)', True),
    ('<http://h/a> (<opaquelocktoken:x>) </b> ([W/"e"])', True),
    ("(<a:b>)(<c:d>)", True),
    ("garbage", False),
    ("(<opaquelocktoken:a>", False),
    ("()", False),
    ("<>", False),
    ("<http://h/a>", False),  # a tag without a list
    ('(["e"] Not)', False),  # Not must precede a condition
    ("(<a:b>) <http://h/x> (<c:d>)", False),  # untagged and tagged lists mixed
    ("(<a b>)", False),
]


@pytest.mark.parametrize(("header", "valid"), IF_HEADERS)
def test_if_header_grammar(header, valid):
    assert if_header_valid(header) is valid


# -- the other headers, as the front sees them -----------------------------------------------

REQUESTS = [
    # (method, headers, expected: None when accepted, else the status)
    ("PROPFIND", {"HTTP_DEPTH": "Infinity "}, None),
    ("PROPFIND", {"HTTP_DEPTH": "2"}, 400),
    ("PROPFIND", {"HTTP_DEPTH": ""}, 400),
    ("COPY", {"HTTP_OVERWRITE": "f"}, None),
    ("COPY", {"HTTP_OVERWRITE": "yes"}, 400),
    ("LOCK", {"HTTP_TIMEOUT": "Infinite, Second-4100000000"}, None),
    ("LOCK", {"HTTP_TIMEOUT": "Second-3600"}, None),
    ("LOCK", {"HTTP_TIMEOUT": "Second-abc"}, 400),
    ("LOCK", {"HTTP_TIMEOUT": "Second--5"}, 400),
    ("LOCK", {"HTTP_TIMEOUT": ", ,"}, 400),
    ("UNLOCK", {"HTTP_LOCK_TOKEN": "<opaquelocktoken:x>"}, None),
    ("UNLOCK", {"HTTP_LOCK_TOKEN": "opaquelocktoken:x"}, None),  # brackets left out: still one token
    ("UNLOCK", {"HTTP_LOCK_TOKEN": "opaque locktoken"}, 400),
    ("UNLOCK", {"HTTP_LOCK_TOKEN": "<>"}, 400),
    ("PUT", {"HTTP_IF": "garbage"}, 400),
    ("PUT", {"PATH_INFO": "/caf\xe9.txt"}, 400),  # %e9 decoded by the server: latin-1, not UTF-8
    ("PUT", {"PATH_INFO": "/caf\xc3\xa9.txt"}, None),  # UTF-8 é
    ("GET", {"HTTP_DESTINATION": "garbage"}, None),  # Destination means nothing to a GET
]


@pytest.mark.parametrize(("method", "headers", "expected"), REQUESTS)
def test_check_request(method, headers, expected):
    environ = {"REQUEST_METHOD": method, "PATH_INFO": "/x", "HTTP_HOST": HOST, "wsgi.url_scheme": "http", **headers}
    if expected is None:
        check_request(environ)
    else:
        with pytest.raises(BadHeader) as err:
            check_request(environ)
        assert err.value.status == expected


def test_paths_and_destinations_reach_wsgidav_in_nfc():
    nfd, nfc = "cafe\u0301", "caf\u00e9"
    wsgi = "/" + nfd.encode().decode("latin-1") + ".txt"  # as the server hands it over
    environ = {"REQUEST_METHOD": "MOVE", "PATH_INFO": wsgi, "HTTP_HOST": HOST, "wsgi.url_scheme": "http",
               "HTTP_DESTINATION": f"http://{HOST}/{quote(nfd)}/x.txt",
               "HTTP_IF": f"<http://{HOST}/{quote(nfd)}> (Not <x:y>)"}  # fmt: skip
    check_request(environ)
    assert environ["PATH_INFO"].encode("latin-1").decode() == f"/{nfc}.txt"
    assert environ[DESTINATION_KEY] == f"/{nfc}/x.txt"
    assert f"/{quote(nfc)}" in environ["wsgidav.conditions.if"]


# -- Range --------------------------------------------------------------------------------------

RANGES = [
    # (header, size, expected ranges as (start, end) pairs, or None: send the whole file)
    ("bytes=0-9", 100, [(0, 9)]),
    ("bytes=0-9,20-29", 100, [(0, 9), (20, 29)]),
    ("bytes=20-29,0-9", 100, [(0, 9), (20, 29)]),
    ("bytes=0-9,10-19", 100, [(0, 19)]),  # adjacent: coalesced
    ("bytes=0-9,5-50,40-", 100, [(0, 99)]),
    ("bytes=-10", 100, [(90, 99)]),
    ("bytes=-1000", 100, [(0, 99)]),
    ("bytes=90-1000", 100, [(90, 99)]),
    ("bytes=0-9,999-", 100, [(0, 9)]),  # the unsatisfiable one is dropped
    ("bytes=999-,1000-1001", 100, []),  # none satisfiable: 416
    ("bytes=-0", 100, []),
    ("Bytes = 0-1 , ,2-3", 100, [(0, 3)]),  # case, spaces, empty list elements
    ("bytes=10-5", 100, None),  # invalid: the whole header is ignored
    ("bytes=0-5,10-5", 100, None),
    ("bytes=-", 100, None),
    ("bytes=abc", 100, None),
    ("bytes=", 100, None),
    ("bytes=1-2-3", 100, None),
    ("items=0-5", 100, None),
    ("bytes 0-5", 100, None),
    (None, 100, None),
]


@pytest.mark.parametrize(("header", "size", "expected"), RANGES)
def test_ranges(header, size, expected):
    specs = parse_range(header)
    if expected is None:
        assert specs is None
    else:
        assert [(r.start, r.end) for r in resolve(specs, size)] == expected


def test_range_header_over_the_limit_is_ignored():
    under = "bytes=" + ",".join(["0-0"] * ((MAX_RANGE_HEADER - 6) // 4))
    assert len(under) <= MAX_RANGE_HEADER and parse_range(under) is not None
    assert parse_range(under + ",0-0") is None


def test_multipart_length_matches_the_body():
    ranges = [ByteRange(0, 9), ByteRange(50, 50), ByteRange(90, 99)]
    parts = Multipart.new(ranges, 100, "text/plain")
    data = bytes(range(100))
    body = b"".join(parts.head(i) + data[r.start : r.end + 1] for i, r in enumerate(ranges)) + parts.tail
    assert len(body) == parts.content_length
    assert body.startswith(f"--{parts.boundary}\r\nContent-Type: text/plain\r\nContent-Range: bytes 0-9/100".encode())
    assert body.count(parts.boundary.encode()) == 4


# -- the whole stack --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    env = {
        "HFDAV_DATA_DIR": str(tmp_path_factory.mktemp("front") / "data"),
        "SYS_TOKEN": "pw",
        "HFDAV_CHUNK_SIZE": "1MiB",
    }
    with served_gateway(env) as (url, _gw):
        for path in ("/t", "/t/coll", "/t/coll/sub"):
            requests.request("MKCOL", url + path, auth=AUTH, timeout=10)
        for path in ("/t/f.txt", "/t/coll/a.txt", "/t/coll/sub/b.txt"):
            requests.put(url + path, data=b"0123456789", auth=AUTH, timeout=10)
        yield url


def dav(method, url, **kw):
    return requests.request(method, url, auth=AUTH, timeout=30, **kw)


MALFORMED = [
    # (method, path, headers, expected status); before the front, the malformed Destinations, If,
    # Lock-Token, Timeout and Range were misread, and the right statuses came with a branded page
    ("PROPFIND", "/t", {"Depth": "2"}, 400),
    ("PROPFIND", "/t", {"Depth": "one"}, 400),
    ("COPY", "/t/f.txt", {"Destination": "/t/g.txt", "Overwrite": "maybe"}, 400),
    ("COPY", "/t/f.txt", {"Destination": "/t/g.txt?x"}, 400),
    ("COPY", "/t/f.txt", {"Destination": "/t/g.txt#x"}, 400),
    ("COPY", "/t/f.txt", {"Destination": "/t/caf%E9.txt"}, 400),
    ("COPY", "/t/f.txt", {"Destination": "/t/%00.txt"}, 400),
    ("COPY", "/t/f.txt", {"Destination": "/../../etc"}, 400),
    ("COPY", "/t/f.txt", {"Destination": "http://elsewhere.example/t/g.txt"}, 502),
    ("COPY", "/t/coll", {"Destination": "/t/c2", "Depth": "1"}, 400),
    ("MOVE", "/t/coll", {"Destination": "/t/c2", "Depth": "0"}, 400),
    ("MOVE", "/t/coll", {"Destination": "/t/coll/sub/x"}, 403),
    ("MOVE", "/t/f.txt", {"Destination": "/t/f.txt"}, 403),
    ("COPY", "/t/f.txt", {"Destination": "/t/coll/a.txt", "Overwrite": "F"}, 412),
    ("COPY", "/t/f.txt", {"Destination": "/t/no/such/x.txt"}, 409),
    ("COPY", "/t/f.txt", {}, 400),
    ("PUT", "/t/f.txt", {"If": "garbage"}, 400),
    ("PUT", "/t/f.txt", {"If": "(<opaquelocktoken:unknown>)"}, 412),
    ("LOCK", "/t/f.txt", {"Timeout": "Second-soon"}, 400),
    ("UNLOCK", "/t/f.txt", {"Lock-Token": "no-brackets"}, 400),
    ("UNLOCK", "/t/f.txt", {"Lock-Token": "<no-brackets"}, 400),
    ("GET", "/t/f.txt", {"Depth": "1"}, 400),
    ("DELETE", "/t/coll", {"Depth": "0"}, 400),  # RFC 4918 §9.6.1: a collection goes with infinity
    ("LOCK", "/t/f.txt", {"Depth": "1"}, 400),  # §9.10.3: 0 or infinity
    ("PROPPATCH", "/t/f.txt", {"Depth": "infinity"}, 400),
    ("GET", "/t/f.txt", {"Range": "bytes=5-2"}, 200),
    ("GET", "/t/f.txt", {"Range": "bytes=50-"}, 416),
    ("GET", "/t/f.txt", {"Range": "bytes=0-0", "If-Range": "not a date"}, 200),
]


LOCK_BODY = (
    '<?xml version="1.0"?><D:lockinfo xmlns:D="DAV:"><D:lockscope><D:exclusive/></D:lockscope>'
    "<D:locktype><D:write/></D:locktype><D:owner>t</D:owner></D:lockinfo>"
)


@pytest.mark.parametrize(("method", "path", "headers", "expected"), MALFORMED)
def test_malformed_headers(base, method, path, headers, expected):
    data = {"PUT": b"new", "LOCK": LOCK_BODY}.get(method)
    r = dav(method, base + path, headers=headers, data=data)
    assert r.status_code == expected, r.text
    assert b"WsgiDAV" not in r.content


NAMES = ["report?.txt", "a#b.txt", "100%.txt", "a&b.txt", "a+b.txt", "a;b.txt", "it's.txt", " lead and trail ",
         "中文.txt", "😀.txt"]  # fmt: skip


@pytest.mark.parametrize("name", NAMES)
def test_copy_move_and_listing_of_awkward_names(base, name):
    folder = f"/n-{NAMES.index(name)}"
    assert dav("MKCOL", base + folder).status_code == 201
    assert dav("PUT", base + folder + "/plain", data=b"plain").status_code == 201
    target = f"{folder}/{quote(name)}"
    assert dav("COPY", base + folder + "/plain", headers={"Destination": base + target}).status_code == 201
    moved = f"{folder}/{quote('m ' + name)}"
    assert dav("MOVE", base + target, headers={"Destination": moved}).status_code == 201
    assert dav("GET", base + moved).content == b"plain"
    assert dav("GET", base + target).status_code == 404
    assert dav("GET", base + folder + "/plain").content == b"plain"
    r = dav("PROPFIND", base + folder, headers={"Depth": "1"})
    hrefs = [e.text for e in ET.fromstring(r.content).iter("{DAV:}href")]
    assert sorted(unquote(h) for h in hrefs) == sorted([folder + "/", f"{folder}/plain", f"{folder}/m {name}"])


def test_copy_depth_0_of_a_collection_copies_no_members(base):
    assert dav("COPY", base + "/t/coll", headers={"Destination": base + "/t/shallow", "Depth": "0"}).status_code == 201
    r = dav("PROPFIND", base + "/t/shallow", headers={"Depth": "1"})
    assert r.text.count("<D:response>") == 1


def test_copy_collection_over_collection_does_not_merge(base):
    assert dav("MKCOL", base + "/t/over").status_code == 201
    assert dav("PUT", base + "/t/over/stale.txt", data=b"stale").status_code == 201
    assert dav("COPY", base + "/t/coll", headers={"Destination": base + "/t/over"}).status_code == 204
    assert dav("GET", base + "/t/over/stale.txt").status_code == 404
    assert dav("GET", base + "/t/over/sub/b.txt").content == b"0123456789"


def test_getetag_property_equals_the_etag_header(base):
    etag = dav("HEAD", base + "/t/f.txt").headers["ETag"]
    r = dav("PROPFIND", base + "/t/f.txt", headers={"Depth": "0"})
    assert f"<D:getetag>{etag}</D:getetag>" in r.text.replace("&quot;", '"')


@pytest.mark.parametrize("spelling", ["absolute URL", "path", "lower-case escape", "user info"])
def test_tagged_if_conditions_apply_however_the_tag_is_spelled(base, spelling):
    """WsgiDAV matched a tagged list only when spelled like its ref URL: absolute URLs, what
    clients send, made the conditions silently not apply."""
    path = "/t/" + quote("tagged?.txt")
    assert dav("PUT", base + path, data=b"v1").status_code in (201, 204)
    host = base.split("//", 1)[1]
    tag = {
        "absolute URL": base + path,
        "path": path,
        "lower-case escape": base + path.replace("%3F", "%3f"),
        "user info": f"http://u:p@{host}{path}",
    }[spelling]
    assert dav("PUT", base + path, data=b"v2", headers={"If": f'<{tag}> (["stale"])'}).status_code == 412
    etag = dav("HEAD", base + path).headers["ETag"]
    assert dav("PUT", base + path, data=b"v3", headers={"If": f"<{tag}> ([{etag}])"}).status_code == 204
    assert dav("GET", base + path).content == b"v3"


def test_tagged_if_on_a_collection_without_its_slash(base):
    body = (
        '<?xml version="1.0"?><D:propertyupdate xmlns:D="DAV:"><D:set><D:prop>'
        '<Z:x xmlns:Z="urn:z">1</Z:x></D:prop></D:set></D:propertyupdate>'
    )
    r = dav("PROPPATCH", base + "/t/coll", data=body, headers={"If": f"<{base}/t/coll> (<opaquelocktoken:none>)"})
    assert r.status_code == 412


def test_if_tags_of_another_server_match_nothing():
    environ = {"HTTP_HOST": HOST, "wsgi.url_scheme": "http", "REQUEST_METHOD": "PUT", "PATH_INFO": "/x",
               "HTTP_IF": "<http://other.example/x> ([\"e\"]) <http://dav.example:8080/a%3fb> ([\"f\"])"}  # fmt: skip
    check_request(environ)
    assert set(environ["wsgidav.conditions.if"]) == {"http://other.example/x", "/a%3Fb", "/a%3Fb/"}


def test_an_html_file_is_served_as_it_is(base):
    page = b"<html><body>" + b"x" * 100 + b"</body></html>"
    assert dav("PUT", base + "/t/page.html", data=page, headers={"Content-Type": "text/html"}).status_code == 201
    assert dav("GET", base + "/t/page.html").content == page
    r = dav("GET", base + "/t/page.html", headers={"Range": "bytes=0-5"})
    assert r.status_code == 206 and r.content == page[:6]
