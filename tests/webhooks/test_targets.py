"""Which callback URLs a webhook may go to (webhooks/targets.py), with a resolver of our own
for host names (the system's is used by the HTTP tests)."""

from __future__ import annotations

import ipaddress

import pytest

from acestep_api.webhooks.targets import RefusedTarget, address_class, check_target, split_url


def resolver(table: dict[str, list[str]]):
    def resolve(host: str, port: int):
        if host not in table:
            raise OSError("unknown host")
        return [ipaddress.ip_address(address) for address in table[host]]
    return resolve


@pytest.mark.parametrize("address, expected", [
    ("8.8.8.8", None), ("2606:4700:4700::1111", None),
    ("127.0.0.1", "loopback"), ("::1", "loopback"), ("::ffff:127.0.0.1", "loopback"),
    ("0.0.0.0", "unspecified"), ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("224.0.0.1", "multicast"), ("ff02::1", "multicast"),
    ("10.0.0.1", "private"), ("172.16.0.1", "private"), ("192.168.1.1", "private"), ("fd00::1", "private"),
    ("240.0.0.1", "reserved"), ("100.64.0.1", "non-public"),
])
def test_address_classes(address, expected):
    assert address_class(ipaddress.ip_address(address)) == expected


def test_every_address_of_a_host_is_checked():
    resolve = resolver({"mixed.example": ["93.184.216.34", "10.0.0.5"], "public.example": ["93.184.216.34"]})
    with pytest.raises(RefusedTarget, match=r"points at a private address \(10\.0\.0\.5\)"):
        check_target("https://mixed.example/hook", allow_private=False, resolve=resolve)
    target = check_target("https://public.example/hook?a=1", allow_private=False, resolve=resolve)
    assert target.pinned_url() == "https://93.184.216.34:443/hook?a=1"
    assert target.host_header == "public.example"
    # Allowed private addresses, still never the server's own endpoint.
    assert check_target("http://mixed.example:8080/", allow_private=True, resolve=resolve).port == 8080
    own = {(ipaddress.ip_address("10.0.0.5"), 8080)}
    with pytest.raises(RefusedTarget, match="this server itself"):
        check_target("http://mixed.example:8080/", allow_private=True, own=own, resolve=resolve)


def test_ipv6_targets_are_pinned_in_brackets():
    target = check_target("http://[::1]:9000/x", allow_private=True, resolve=resolver({"::1": ["::1"]}))
    assert target.pinned_url() == "http://[::1]:9000/x" and target.host_header == "[::1]:9000"


def test_a_host_that_does_not_resolve_is_refused():
    with pytest.raises(RefusedTarget, match=r"does not resolve \(nowhere\.invalid\)"):
        check_target("https://nowhere.invalid/", allow_private=False, resolve=resolver({}))


@pytest.mark.parametrize("url, words", [
    ("file:///etc/passwd", "http:// or https://"),
    ("javascript:alert(1)", "http:// or https://"),
    ("http:///path", "must name a host"),
    ("http://exa mple.com/", "spaces or control characters"),
    ("http://example.com:99999/", "valid http:// or https:// URL"),
    ("https://a:b@example.com/", "user name or password"),
    ("https://example.com/" + "x" * 2048, "at most 2048 characters"),
    (None, "(a string)"),
])
def test_malformed_urls(url, words):
    with pytest.raises(RefusedTarget, match=words.replace("(", r"\(").replace(")", r"\)").replace("/", "/")):
        split_url(url)
