"""The one HTTP seam: pooled httpx clients with explicit timeouts.

Transport failures become ProviderTemporaryError; whether the request may have reached the
provider (`ambiguous`) decides whether a retry could send the SMS twice.
"""

import os
import threading

import httpx

from .base import ErrorClass, ProviderTemporaryError

DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=10.0, write=5.0, pool=5.0)
# A client belongs to one thread, which makes one request at a time: a connection per provider host.
DEFAULT_LIMITS = httpx.Limits(max_connections=16, max_keepalive_connections=8, keepalive_expiry=30)
USER_AGENT = "smsgate/1.0"
# httpx's default verification (certifi's CA bundle, or SSL_CERT_FILE / SSL_CERT_DIR), built once:
# every client building its own costs ~0.85 MB (64 sending threads: +54 MB per worker process).
TLS_CONTEXT = httpx.create_ssl_context()


class HttpClient:
    def __init__(self, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT, limits: httpx.Limits = DEFAULT_LIMITS):
        self._client = httpx.Client(timeout=timeout, limits=limits, headers={"User-Agent": USER_AGENT},
                                    follow_redirects=False, verify=TLS_CONTEXT)

    def request(self, method: str, url: str, **kwargs) -> httpx.Response:
        try:
            return self._client.request(method, url, **kwargs)
        except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
            # Nothing was sent: safe to try again.
            raise ProviderTemporaryError(f"cannot connect: {type(exc).__name__}", code="connect",
                                         error_class=ErrorClass.TRANSPORT) from None
        except (httpx.TimeoutException, httpx.RemoteProtocolError, httpx.ReadError, httpx.WriteError) as exc:
            # The request may have been received and acted on.
            raise ProviderTemporaryError(f"no complete answer: {type(exc).__name__}", code="timeout",
                                         error_class=ErrorClass.TIMEOUT, ambiguous=True) from None
        except httpx.HTTPError as exc:
            raise ProviderTemporaryError(f"HTTP error: {type(exc).__name__}", code="http_error",
                                         error_class=ErrorClass.TIMEOUT, ambiguous=True) from None

    def close(self):
        self._client.close()


_local = threading.local()


def default_client(read_timeout: float | None = None) -> HttpClient:
    """One pooled client per thread and read timeout. Not one per process: httpcore looks through
    every connection and waiting request of a pool on each request and each response closed, which
    with 64 sending threads on one pool was a third of a bulk worker's CPU (bench/README.md).
    Re-created after a fork: sockets must not be shared between processes."""
    clients = getattr(_local, "clients", None)
    if clients is None or _local.pid != os.getpid():
        clients = _local.clients = {}
        _local.pid = os.getpid()
    client = clients.get(read_timeout)
    if client is None:
        timeout = DEFAULT_TIMEOUT if read_timeout is None else httpx.Timeout(
            connect=min(3.0, read_timeout), read=read_timeout, write=min(5.0, read_timeout), pool=5.0)
        client = clients[read_timeout] = HttpClient(timeout=timeout)
    return client


def json_or_none(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None
