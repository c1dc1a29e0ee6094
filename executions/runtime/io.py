"""IO operations that `invoke.call` expressions reach through `io(op, *args, **kwargs)`.

Operations are registered by name in settings.DATA_MACHINES["IO_OPERATIONS"]. Each gets the
call's arguments plus `idempotency_key` (execution id + seq of the work), which HTTP
operations send as the `Idempotency-Key` header so a re-run after a crash can be
deduplicated downstream. Failures raise IOFailure (-> the `error` branch) with a type:
`timeout`, `network_error`, `destination_refused`, `response_too_large`, `http_status`,
`invalid_json`, `bad_request`; a status code alone never does (machines decide with `ok_if`).

Every HTTP call is bounded (docs/runtime.md "IO operations"):

- **time**: one total deadline per call (its `timeout`, at most MAX_HTTP_TIMEOUT, and never
  past the deadline of the work it belongs to, `deadline()`): every socket operation —
  name resolution, connect, TLS, each read and write — gets only what is left of it, and a
  watchdog closes a socket still open past it (a TLS handshake dripping byte by byte);
- **size**: the body is streamed and the call fails with `response_too_large` past
  IO_MAX_RESPONSE_BYTES (a compressed body is capped after decompression too);
- **destinations**: the host is resolved once, each address checked against the policy
  (`Policy`), and the connection made to a checked address (no second resolution for the
  server to answer differently); redirects are not followed unless asked, and then every
  hop's connection is checked the same way;
- **environment**: no proxy or netrc from the environment unless IO_TRUST_ENV says so.
"""
from __future__ import annotations

import contextlib
import contextvars
import ipaddress
import json
import socket
import threading
import time
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx
from django.conf import settings
from django.utils.module_loading import import_string

DEFAULT_HTTP_TIMEOUT = 10.0
MAX_HTTP_TIMEOUT = 300.0
MAX_REDIRECTS = 5
READ_CHUNK = 64 * 1024

Address = ipaddress.IPv4Address | ipaddress.IPv6Address
Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class IOFailure(Exception):
    """An operation failed; `error` is the JSON the `error` branch sees."""

    def __init__(self, error_type: str, message: str, **extra):
        super().__init__(message)
        self.error = {"type": error_type, "message": message, **extra}


class DestinationRefused(Exception):
    """The destination policy refused every address of a host (raised while connecting)."""


# The call's deadline ---------------------------------------------------------------------
# The monotonic time the current call (or the work it belongs to) must be over by; set by
# `deadline()` and by each HTTP call, read by the network layer below.
_DEADLINE: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "io_deadline", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[float]:
    """Bound every IO operation run inside to `seconds` from now (nested bounds only
    shorten it). The performer of a call wraps the call's expression in it, so an
    expression making several calls cannot outlast the work's bound either."""
    outer = _DEADLINE.get()
    until = time.monotonic() + seconds
    if outer is not None:
        until = min(until, outer)
    token = _DEADLINE.set(until)
    try:
        yield until
    finally:
        _DEADLINE.reset(token)


def _remaining(timeout: float | None = None) -> float:
    """What is left of the current deadline (capped at `timeout`); ReadTimeout when
    nothing is (httpx turns it into a TimeoutException)."""
    until = _DEADLINE.get()
    if until is None:
        return timeout if timeout is not None else MAX_HTTP_TIMEOUT
    left = until - time.monotonic()
    if left <= 0:
        raise httpcore.ReadTimeout("the call's deadline has passed")
    return left if timeout is None else min(timeout, left)


# The destination policy ------------------------------------------------------------------
# Never reached unless allowed by name: link-local (cloud metadata lives there), and the
# metadata addresses that are not link-local; "this host", multicast, reserved, broadcast.
ALWAYS_REFUSED = tuple(ipaddress.ip_network(n) for n in (
    "169.254.0.0/16", "fe80::/10",  # link-local
    "fd00:ec2::254/128",  # AWS metadata over IPv6
    "100.100.100.200/32",  # Alibaba Cloud metadata
    "168.63.129.16/32",  # Azure wire server
    "0.0.0.0/8", "::/128",  # "this host": connecting reaches local services
    "224.0.0.0/4", "ff00::/8", "240.0.0.0/4", "255.255.255.255/32",
))
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.internal",
})
# Refused when IO_ALLOW_PRIVATE is false (production): loopback and private ranges.
PRIVATE = tuple(ipaddress.ip_network(n) for n in (
    "127.0.0.0/8", "::1/128", "10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16",
    "100.64.0.0/10",  # carrier-grade NAT, shared address space
    "192.0.0.0/24", "198.18.0.0/15", "fc00::/7", "fec0::/10",
))
NAT64 = ipaddress.ip_network("64:ff9b::/96")


@dataclass(frozen=True)
class Policy:
    allow_private: bool
    allowed_names: frozenset[str]
    allowed_networks: tuple[Network, ...]

    @classmethod
    def from_settings(cls) -> Policy:
        names, networks = set(), []
        for entry in settings.DATA_MACHINES.get("IO_ALLOWED_HOSTS", ()):
            try:
                networks.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                names.add(_host_name(entry))
        return cls(bool(settings.DATA_MACHINES.get("IO_ALLOW_PRIVATE", True)),
                   frozenset(names), tuple(networks))

    def name_refusal(self, host: str) -> str | None:
        """Why `host` may not be reached whatever its addresses (None: look at them)."""
        name = _host_name(host)
        if name in METADATA_NAMES and name not in self.allowed_names:
            return "a cloud metadata service"
        return None

    def refusal(self, host: str, address: Address) -> str | None:
        """Why this address of `host` may not be reached (None: it may)."""
        if _host_name(host) in self.allowed_names:
            return None
        if _within(address, self.allowed_networks):
            return None
        for candidate in _embedded(address):
            if _within(candidate, ALWAYS_REFUSED):
                return "a link-local, metadata or reserved address"
            if not self.allow_private and _within(candidate, PRIVATE):
                return "a loopback or private address (IO_ALLOW_PRIVATE is off)"
        return None


def _host_name(host: str) -> str:
    return host.strip().strip("[]").rstrip(".").lower()


def _within(address: Address, networks: tuple[Network, ...]) -> bool:
    return any(address in network for network in networks if network.version == address.version)


def _embedded(address: Address) -> list[Address]:
    """The address and the IPv4 address an IPv6 one carries (mapped, 6to4, NAT64): each is
    checked, so `::ffff:169.254.169.254` is refused like `169.254.169.254`."""
    found: list[Address] = [address]
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            found.append(address.ipv4_mapped)
        if address.sixtofour is not None:
            found.append(address.sixtofour)
        if address in NAT64:
            found.append(ipaddress.IPv4Address(int(address) & 0xFFFFFFFF))
    return found


def _resolve(host: str, port: int, timeout: float) -> list[tuple[Address, tuple]]:
    """The host's addresses (an address given as such is not looked up), within `timeout`:
    getaddrinfo cannot be interrupted, so it runs in a thread that is left behind when the
    time is up (it ends when the resolver gives up)."""
    with contextlib.suppress(ValueError):
        literal = ipaddress.ip_address(_host_name(host))
        return [(literal, (str(literal), port))]
    answer: dict[str, Any] = {}

    def lookup() -> None:
        try:
            answer["found"] = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            answer["error"] = exc

    thread = threading.Thread(target=lookup, daemon=True, name=f"resolve {host}")
    thread.start()
    thread.join(timeout)
    if thread.is_alive():
        raise httpcore.ConnectTimeout(f"resolving {host} took longer than the call's deadline")
    if "error" in answer:
        raise httpcore.ConnectError(f"cannot resolve {host}: {answer['error']}")
    addresses: list[tuple[Address, tuple]] = []
    for _family, _type, _proto, _name, sockaddr in answer["found"]:
        address = ipaddress.ip_address(sockaddr[0].split("%")[0])
        if all(address != seen for seen, _ in addresses):
            addresses.append((address, sockaddr))
    return addresses


# The network layer: checked addresses, every operation within the deadline ---------------
class _Watchdog:
    """Closes sockets still open past their call's deadline (plus a grace second): a
    backstop for operations made of many socket calls, such as a TLS handshake."""

    GRACE = 1.0

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.watched: dict[int, tuple[float, socket.socket]] = {}
        self.thread: threading.Thread | None = None

    def watch(self, sock: socket.socket, until: float | None) -> None:
        if until is None:
            return
        with self.lock:
            self.watched[id(sock)] = (until + self.GRACE, sock)
            if self.thread is None or not self.thread.is_alive():
                self.thread = threading.Thread(target=self._run, daemon=True,
                                               name="io watchdog")
                self.thread.start()

    def forget(self, sock: socket.socket) -> None:
        with self.lock:
            self.watched.pop(id(sock), None)

    def _run(self) -> None:
        while True:
            time.sleep(0.2)
            now = time.monotonic()
            with self.lock:
                late = [(key, sock) for key, (until, sock) in self.watched.items()
                        if until <= now]
                for key, _ in late:
                    del self.watched[key]
            for _, sock in late:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)


WATCHDOG = _Watchdog()


class _BoundedStream(httpcore.NetworkStream):
    """A connection whose every operation gets at most what is left of the deadline of the
    call using it (a pooled connection serves several calls, each with its own)."""

    def __init__(self, inner: httpcore.NetworkStream) -> None:
        self.inner = inner

    def _socket(self) -> socket.socket | None:
        return self.inner.get_extra_info("socket")

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        return self._bounded(self.inner.read, max_bytes, timeout=_remaining(timeout))

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        self._bounded(self.inner.write, buffer, timeout=_remaining(timeout))

    def _bounded(self, operation, *args, timeout: float) -> Any:
        sock = self._socket()
        if sock is not None:
            WATCHDOG.watch(sock, _DEADLINE.get())
        try:
            return operation(*args, timeout=timeout)
        finally:
            if sock is not None:
                WATCHDOG.forget(sock)

    def close(self) -> None:
        self.inner.close()

    def start_tls(self, ssl_context, server_hostname=None, timeout=None):
        return _BoundedStream(self._bounded(self.inner.start_tls, ssl_context, server_hostname,
                                            timeout=_remaining(timeout)))

    def get_extra_info(self, info: str) -> Any:
        return self.inner.get_extra_info(info)


class _CheckedBackend(httpcore.NetworkBackend):
    """Resolves the host once, checks every address against the policy, and connects to a
    checked one: the address connected to is the address checked."""

    def __init__(self, policy: Policy) -> None:
        self.inner = httpcore.SyncBackend()
        self.policy = policy

    def connect_tcp(self, host, port, timeout=None, local_address=None, socket_options=None):
        policy = self.policy
        why = policy.name_refusal(host)
        if why is not None:
            raise DestinationRefused(f"{host} is {why}")
        refusals = []
        last_error: Exception | None = None
        for address, _ in _resolve(host, port, _remaining(timeout)):
            why = policy.refusal(host, address)
            if why is not None:
                refusals.append(f"{address} is {why}")
                continue
            try:
                return _BoundedStream(self.inner.connect_tcp(
                    str(address), port, timeout=_remaining(timeout),
                    local_address=local_address, socket_options=socket_options))
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                last_error = exc
        if last_error is not None:
            raise last_error
        raise DestinationRefused(f"{host} is not allowed: " + "; ".join(refusals))

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


_CLIENTS: dict[tuple[bool, Policy], httpx.Client] = {}
_CLIENTS_LOCK = threading.Lock()


def _client(trust_env: bool, policy: Policy) -> httpx.Client:
    """One client per process and policy: pooled connections matter when a machine calls a
    service often, and a connection kept open was checked by the policy it was opened
    under. Its connections go through the checked backend; with trust_env, the proxies the
    environment names are used (the proxy connects: the host is checked before, below)."""
    with _CLIENTS_LOCK:
        client = _CLIENTS.get((trust_env, policy))
        if client is None:
            client = _CLIENTS[trust_env, policy] = _new_client(trust_env, policy)
        return client


def _new_client(trust_env: bool, policy: Policy) -> httpx.Client:
    transport = httpx.HTTPTransport(trust_env=trust_env)
    transport._pool = httpcore.ConnectionPool(
        ssl_context=httpx.create_ssl_context(trust_env=trust_env),
        max_connections=100, max_keepalive_connections=20, keepalive_expiry=5.0,
        network_backend=_CheckedBackend(policy))
    mounts: dict[str, httpx.BaseTransport | None] = {}
    if trust_env:
        from httpx._utils import get_environment_proxies
        mounts = {pattern: None if proxy is None else httpx.HTTPTransport(proxy=proxy)
                  for pattern, proxy in get_environment_proxies().items()}
    return httpx.Client(transport=transport, mounts=mounts, trust_env=trust_env,
                        follow_redirects=False, max_redirects=MAX_REDIRECTS)


def reset_clients() -> None:
    """Forget the pooled clients (tests, after changing settings)."""
    with _CLIENTS_LOCK:
        clients = list(_CLIENTS.values())
        _CLIENTS.clear()
    for client in clients:
        with contextlib.suppress(Exception):
            client.close()


# http.request ----------------------------------------------------------------------------
def http_request(method, url, *, json=None, data=None, headers=None, params=None,
                 timeout=DEFAULT_HTTP_TIMEOUT, follow_redirects=False, idempotency_key=None):
    """Send an HTTP request; returns {"status", "headers", "body"} with a text body, all
    within `timeout` seconds in total and IO_MAX_RESPONSE_BYTES."""
    if not isinstance(method, str) or not method.isalpha() or not isinstance(url, str):
        raise IOFailure("bad_request", "http.request needs a method and a URL as strings")
    method = method.upper()
    try:
        timeout = min(float(timeout), MAX_HTTP_TIMEOUT)
    except (TypeError, ValueError) as exc:
        raise IOFailure(
            "bad_request", f"timeout must be a number of seconds, not {timeout!r}") from exc
    if not timeout > 0:
        raise IOFailure("bad_request", f"timeout must be more than 0 seconds, not {timeout!r}")
    try:
        target = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError) as exc:
        raise IOFailure("bad_request", f"{url!r} is not a URL: {exc}") from exc
    if target.scheme not in ("http", "https") or not target.host:
        raise IOFailure("bad_request", f"{url!r} is not an http or https URL")
    headers = {str(k): str(v) for k, v in (headers or {}).items()}
    if idempotency_key:
        headers.setdefault("Idempotency-Key", idempotency_key)
    # Compressed bodies are decompressed here, within the cap; ask for none by default.
    if not any(name.lower() == "accept-encoding" for name in headers):
        headers["Accept-Encoding"] = "identity"
    config = settings.DATA_MACHINES
    cap = int(config.get("IO_MAX_RESPONSE_BYTES", 1024 * 1024))
    trust_env = bool(config.get("IO_TRUST_ENV", False))
    what = f"{method} {url}"
    with deadline(timeout) as until:
        try:
            policy = Policy.from_settings()
            if trust_env:  # a proxy may do the connecting: check the host first
                _check_host(target, policy)
            return _send(_client(trust_env, policy), method, url, cap, what, until,
                         json=json, data=data, headers=headers, params=params,
                         follow_redirects=bool(follow_redirects))
        except DestinationRefused as exc:
            raise IOFailure("destination_refused", f"{what} refused: {exc}") from None
        except (httpx.TimeoutException, httpcore.TimeoutException) as exc:
            raise IOFailure("timeout", f"{what} timed out after {timeout:g} s") from exc
        except httpx.TooManyRedirects as exc:
            raise IOFailure("network_error", f"{what}: more than {MAX_REDIRECTS} redirects"
                            ) from exc
        except (httpx.HTTPError, httpcore.NetworkError, ValueError) as exc:
            if time.monotonic() >= until:  # the watchdog closed it
                raise IOFailure("timeout", f"{what} timed out after {timeout:g} s") from exc
            raise IOFailure("network_error", f"{what} failed: {exc}") from exc


def _check_host(target: httpx.URL, policy: Policy) -> None:
    why = policy.name_refusal(target.host)
    if why is not None:
        raise DestinationRefused(f"{target.host} is {why}")
    port = target.port or (443 if target.scheme == "https" else 80)
    for address, _ in _resolve(target.host, port, _remaining()):
        why = policy.refusal(target.host, address)
        if why is not None:
            raise DestinationRefused(f"{target.host}: {address} is {why}")


def _send(client: httpx.Client, method: str, url: str, cap: int, what: str, until: float,
          **kwargs) -> dict:
    with client.stream(method, url, timeout=_remaining(), **kwargs) as response:
        declared = response.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > cap:
            raise _too_large(what, cap, response.status_code)
        raw = bytearray()
        for chunk in response.iter_raw(READ_CHUNK):
            raw += chunk
            if len(raw) > cap:
                raise _too_large(what, cap, response.status_code)
        body = _decoded(bytes(raw), response.headers.get("content-encoding", ""), cap, what,
                        response.status_code)
        return {
            "status": response.status_code,
            "headers": dict(response.headers),
            "body": body.decode(response.charset_encoding or "utf-8", errors="replace"),
        }


def _decoded(raw: bytes, encoding: str, cap: int, what: str, status: int) -> bytes:
    """The body without its content encoding, never more than `cap` bytes of it."""
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return raw
    if encoding not in ("gzip", "x-gzip", "deflate"):
        raise IOFailure("network_error", f"{what}: unsupported content encoding {encoding!r}",
                        status=status)
    decoder = zlib.decompressobj(47 if encoding != "deflate" else 15)
    try:
        body = decoder.decompress(raw, cap + 1)
    except zlib.error:
        if encoding != "deflate":
            raise IOFailure("network_error", f"{what}: a corrupt {encoding} body",
                            status=status) from None
        decoder = zlib.decompressobj(-15)  # raw deflate, as some servers send it
        try:
            body = decoder.decompress(raw, cap + 1)
        except zlib.error:
            raise IOFailure("network_error", f"{what}: a corrupt deflate body",
                            status=status) from None
    if len(body) > cap or decoder.unconsumed_tail:
        raise _too_large(what, cap, status)
    return body


def _too_large(what: str, cap: int, status: int) -> IOFailure:
    return IOFailure("response_too_large",
                     f"the response to {what} is larger than {cap} bytes (IO_MAX_RESPONSE_BYTES)",
                     limit=cap, status=status)


def http_request_json(method, url, **kwargs):
    """Like http_request, with the body parsed as JSON (an empty body is null). A body that
    is not JSON fails with `http_status` when the status is an error (>= 400), else
    `invalid_json`."""
    response = http_request(method, url, **kwargs)
    body = response["body"]
    try:
        response["body"] = json.loads(body) if body.strip() else None
    except ValueError as exc:
        status = response["status"]
        if status >= 400:
            raise IOFailure("http_status", f"{method} {url} answered {status}: {body[:200]!r}",
                            status=status) from exc
        raise IOFailure(
            "invalid_json", f"the response of {url} is not JSON: {body[:200]!r}",
            status=status,
        ) from exc
    return response


def operation(name: str):
    """The callable registered under `name`, or IOFailure naming the known ones."""
    registry = settings.DATA_MACHINES["IO_OPERATIONS"]
    if name not in registry:
        known = ", ".join(sorted(registry))
        raise IOFailure("unknown_operation", f"no IO operation named {name!r} (known: {known})")
    return import_string(registry[name])
