import pytest

from gateway.errors import InvalidPath
from gateway.paths import normalize


@pytest.mark.parametrize(
    "raw,expected",
    [("/", ""), ("", ""), ("/a/b/", "/a/b"), ("//a///b", "/a/b"), ("/中文 名#%.txt", "/中文 名#%.txt")],
)
def test_normal_form(raw, expected):
    assert normalize(raw) == expected


@pytest.mark.parametrize("raw", ["/a/../b", "/./a", "/a\x00b", "/a\nb", "/" + "x" * 256])
def test_rejected(raw):
    with pytest.raises(InvalidPath):
        normalize(raw)


def test_nfc():
    assert normalize("/e\u0301") == "/\u00e9"
