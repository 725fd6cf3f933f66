import pytest

from app.tlsrpt.names import normalise_domain, normalise_ip, normalise_mx_pattern


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("example.com", "example.com"),
        ("Mx.Example.COM.", "mx.example.com"),
        ("☺.example", "xn--74h.example"),
        ("Bücher.DE", "xn--bcher-kva.de"),
        ("xn--bcher-kva.de", "xn--bcher-kva.de"),
        ("_smtp._tls.example.com", "_smtp._tls.example.com"),
    ],
)
def test_domains_become_lowercase_alabels(given: str, expected: str) -> None:
    assert normalise_domain(given) == expected


@pytest.mark.parametrize(
    "bad",
    [
        "",
        ".",
        "a..b",
        "-a.com",
        "a-.com",
        "a b.com",
        "a/b.com",
        "x" * 64 + ".com",
        ("a" * 60 + ".") * 5 + "com",
    ],
)
def test_invalid_domains_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_domain(bad)


def test_mx_patterns_keep_their_wildcard() -> None:
    assert normalise_mx_pattern("*.Example.COM") == "*.example.com"
    assert normalise_mx_pattern("mx.example.com.") == "mx.example.com"
    with pytest.raises(ValueError):
        normalise_mx_pattern("mx.*.example.com")


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("192.0.2.1", "192.0.2.1"),
        ("2001:DB8:0::1", "2001:db8::1"),
        ("::ffff:198.51.100.7", "198.51.100.7"),
        (" 192.0.2.9 ", "192.0.2.9"),
    ],
)
def test_ips_are_canonical(given: str, expected: str) -> None:
    assert normalise_ip(given) == expected


@pytest.mark.parametrize("bad", ["", "192.0.2", "300.1.1.1", "mx.example.com", "1.2.3.4/24"])
def test_invalid_ips_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        normalise_ip(bad)
