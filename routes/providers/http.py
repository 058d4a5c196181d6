"""The one HTTP seam of the providers: pooled keep-alive connections with explicit timeouts.

Transport failures become ProviderTemporaryError; whether the request may have reached the
provider (`ambiguous`) decides whether a retry could send the SMS twice.

Built on urllib3: a provider call is every SMS's one network round trip, and urllib3 spends about
half the CPU of httpx on it (0.5 ms less per call, measured in bench/README.md), which is what a
bulk worker's throughput is made of. `HttpResponse` is what the adapters read of an answer.
"""

from __future__ import annotations

import json as jsonlib
import os
import threading
from base64 import b64encode
from dataclasses import dataclass
from email.message import Message
from urllib.parse import urlencode

import httpx
import urllib3
from urllib3.exceptions import (
    ConnectTimeoutError,
    HTTPError,
    NewConnectionError,
    ProtocolError,
    ReadTimeoutError,
    SSLError,
)

from .errors import ErrorClass, ProviderTemporaryError


@dataclass(frozen=True)
class Timeout:
    connect: float = 3.0
    read: float = 10.0  # also bounds each send on the socket


DEFAULT_TIMEOUT = Timeout()
USER_AGENT = "smsgate/1.0"
# The default verification (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), built once:
# every client building its own costs ~0.85 MB (64 sending threads: +54 MB per worker process).
TLS_CONTEXT = httpx.create_ssl_context()


class HttpResponse:
    """An HTTP answer, read whole: status, headers (case-insensitive), body."""

    __slots__ = ("content", "headers", "status_code")

    def __init__(self, status_code: int, headers, content: bytes):
        self.status_code, self.headers, self.content = status_code, headers, content

    @property
    def text(self) -> str:
        message = Message()
        message["Content-Type"] = self.headers.get("Content-Type", "")
        return self.content.decode(message.get_content_charset() or "utf-8", errors="replace")

    def json(self):
        """The body as JSON; ValueError if it is not."""
        return jsonlib.loads(self.content)


class HttpClient:
    """Keep-alive connections of one thread (one per provider host), no retries, no redirects."""

    def __init__(self, *, timeout: Timeout = DEFAULT_TIMEOUT):
        self._pool = urllib3.PoolManager(
            num_pools=16, maxsize=1, retries=False, ssl_context=TLS_CONTEXT,
            timeout=urllib3.Timeout(connect=timeout.connect, read=timeout.read), headers={"User-Agent": USER_AGENT})

    def request(self, method: str, url: str, *, params: dict | None = None, data: dict | None = None,
                json=None, auth: tuple[str, str] | None = None) -> HttpResponse:
        headers = {"User-Agent": USER_AGENT}
        body = None
        if params:
            url = f"{url}{'&' if '?' in url else '?'}{urlencode(params)}"
        if json is not None:
            body, headers["Content-Type"] = jsonlib.dumps(json).encode(), "application/json"
        elif data is not None:
            body, headers["Content-Type"] = urlencode(data).encode(), "application/x-www-form-urlencoded"
        if auth is not None:
            headers["Authorization"] = "Basic " + b64encode(f"{auth[0]}:{auth[1]}".encode()).decode("ascii")
        try:
            response = self._pool.request(method, url, body=body, headers=headers, redirect=False, retries=False)
        except (NewConnectionError, ConnectTimeoutError, SSLError) as exc:
            # Nothing was sent: safe to try again. (NewConnectionError covers refused and unresolved;
            # SSLError a certificate that does not verify, before any byte of the request.)
            raise ProviderTemporaryError(f"cannot connect: {type(exc).__name__}", code="connect",
                                         error_class=ErrorClass.TRANSPORT) from None
        except (ReadTimeoutError, ProtocolError) as exc:
            # The request may have been received and acted on.
            raise ProviderTemporaryError(f"no complete answer: {type(exc).__name__}", code="timeout",
                                         error_class=ErrorClass.TIMEOUT, ambiguous=True) from None
        except HTTPError as exc:
            raise ProviderTemporaryError(f"HTTP error: {type(exc).__name__}", code="http_error",
                                         error_class=ErrorClass.TIMEOUT, ambiguous=True) from None
        return HttpResponse(response.status, response.headers, response.data)

    def close(self):
        self._pool.clear()


_local = threading.local()


def default_client(read_timeout: float | None = None) -> HttpClient:
    """One client per thread and read timeout. Not one per process: a pool shared by 64 sending
    threads costs each request a walk through every connection and waiting request (httpx showed a
    third of a bulk worker's CPU there, bench/README.md), and a thread makes one call at a time.
    Re-created after a fork: sockets must not be shared between processes."""
    clients = getattr(_local, "clients", None)
    if clients is None or _local.pid != os.getpid():
        clients = _local.clients = {}
        _local.pid = os.getpid()
    client = clients.get(read_timeout)
    if client is None:
        timeout = DEFAULT_TIMEOUT if read_timeout is None else Timeout(connect=min(3.0, read_timeout),
                                                                       read=read_timeout)
        client = clients[read_timeout] = HttpClient(timeout=timeout)
    return client


def json_or_none(response: HttpResponse):
    try:
        return response.json()
    except ValueError:
        return None
