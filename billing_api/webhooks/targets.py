"""Where webhooks may go: public addresses only (no SSRF into the operator's network).

A builder chooses the URL, so a URL naming loopback, a private or link-local network (the
cloud metadata address 169.254.169.254 included), unique-local, multicast, reserved or
unspecified addresses — or an IPv4 address of those written as IPv6 — is refused when the
URL is saved, and again when a delivery connects: a DNS name can resolve to a private address
later (DNS rebinding). At connect time every address the name resolves to is checked and the
connection goes to the checked address itself, with the original Host header and TLS server
name, so the name is not resolved a second time. Classification is the standard library's
`ipaddress`. https only, unless private targets are allowed (local development and tests,
`AGENTMETER_WEBHOOK_ALLOW_PRIVATE`), which also allows http.
"""

from __future__ import annotations

import ipaddress
import socket
from urllib.parse import urlsplit

import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


class TargetRefusedError(ValueError):
    """A webhook URL or address that deliveries must not reach."""


def is_public(address: IpAddress) -> bool:
    """True if `address` is globally routable unicast (IPv4 inside IPv6 judged as IPv4)."""
    if isinstance(address, ipaddress.IPv6Address):
        embedded = address.ipv4_mapped or address.sixtofour
        if embedded is not None:
            return is_public(embedded)
    return address.is_global and not (
        address.is_multicast or address.is_reserved or address.is_unspecified
    )


def _is_local_name(host: str) -> bool:
    name = host.rstrip(".").lower()
    return name == "localhost" or name.endswith(".localhost")


def check_url(url: str, *, allow_private: bool) -> None:
    """Refuse a URL deliveries must not use: not https (http too when private targets are
    allowed), a `localhost` name, or a literal non-public address. Names are checked by
    what they resolve to, with `resolve` at delivery (and at saving, if they resolve)."""
    parts = urlsplit(url)
    schemes = ("https", "http") if allow_private else ("https",)
    if parts.scheme not in schemes:
        raise TargetRefusedError("webhook URL must use https")
    host = parts.hostname or ""
    if allow_private:
        return
    if _is_local_name(host):
        raise TargetRefusedError(f"webhook URL host {host!r} is local; use a public address")
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return
    if not is_public(address):
        raise TargetRefusedError(f"webhook URL address {host} is not a public address")


def resolve(host: str, port: int, *, allow_private: bool) -> IpAddress:
    """The address to connect to for `host`: every address it resolves to must be public
    (one private answer refuses all, so a rebinding name cannot mix one in)."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (socket.gaierror, UnicodeError) as error:
        raise TargetRefusedError(f"cannot resolve {host!r}: {error}") from None
    addresses = [ipaddress.ip_address(str(info[4][0]).partition("%")[0]) for info in infos]
    if not addresses:
        raise TargetRefusedError(f"{host!r} resolves to no address")
    if not allow_private:
        refused = [str(a) for a in addresses if not is_public(a)]
        if refused:
            raise TargetRefusedError(f"{host!r} resolves to non-public {', '.join(refused)}")
    return addresses[0]


def check_resolved(url: str, *, allow_private: bool) -> None:
    """`check_url`, then, if the host resolves now, its addresses too (a name that does not
    resolve yet is checked again at every delivery)."""
    check_url(url, allow_private=allow_private)
    parts = urlsplit(url)
    try:
        resolve(parts.hostname or "", parts.port or 443, allow_private=allow_private)
    except TargetRefusedError as error:
        if "cannot resolve" not in str(error):
            raise


class PinnedTransport(httpx.BaseTransport):
    """An httpx transport that checks the URL and connects to the address it resolved and
    checked, keeping the Host header and the TLS server name (SNI and certificate check)
    of the original host. No redirect is followed (the client's `follow_redirects=False`)."""

    def __init__(self, *, allow_private: bool, inner: httpx.BaseTransport | None = None) -> None:
        self._allow_private = allow_private
        self._inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url
        check_url(str(url), allow_private=self._allow_private)
        port = url.port or (443 if url.scheme == "https" else 80)
        address = resolve(url.host, port, allow_private=self._allow_private)
        request.url = url.copy_with(host=str(address))
        request.extensions = {**request.extensions, "sni_hostname": url.host}
        # httpx set the Host header from the original URL when the request was built.
        return self._inner.handle_request(request)

    def close(self) -> None:
        self._inner.close()
