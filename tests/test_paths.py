import pytest

from gateway.errors import InvalidPath
from gateway.paths import normalize


@pytest.mark.parametrize(
    "raw,expected",
    [("/", ""), ("", ""), ("/a/b/", "/a/b"), ("//a///b", "/a/b"), ("/中文 名#%.txt", "/中文 名#%.txt")],
)
def test_normal_form(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize(
    "raw",
    ["/a/../b", "/./a", "/a\x00b", "/a\nb", "/" + "x" * 256,
     # not characters of XML 1.0: a listing holding such a name could not be written
     "/a\ufffeb", "/a\uffffb", "/a\ud800b"],
)  # fmt: skip
def test_rejected(raw):
    with pytest.raises(InvalidPath):
        normalize(raw)


def test_nfc():
    assert normalize("/e\u0301") == "/\u00e9"


@pytest.mark.parametrize("name", ["a\u0085b", "a\ufffdb", "\U0001f600", "\U0010fffd", "trail.", "trail "])
def test_accepted_unusual_names(name):
    assert normalize("/" + name) == "/" + name
