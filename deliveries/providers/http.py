"""The one HTTP seam: a pooled httpx client with explicit timeouts.

Transport failures become ProviderTemporaryError; whether the request may have reached the
provider (`ambiguous`) decides whether a retry could send the SMS twice.
"""

import os
import threading

import httpx

from .base import ErrorClass, ProviderTemporaryError

DEFAULT_TIMEOUT = httpx.Timeout(connect=3.0, read=10.0, write=5.0, pool=5.0)
DEFAULT_LIMITS = httpx.Limits(max_connections=256, max_keepalive_connections=64, keepalive_expiry=30)
USER_AGENT = "smsgate/1.0"


class HttpClient:
    def __init__(self, *, timeout: httpx.Timeout = DEFAULT_TIMEOUT, limits: httpx.Limits = DEFAULT_LIMITS):
        self._client = httpx.Client(timeout=timeout, limits=limits, headers={"User-Agent": USER_AGENT},
                                    follow_redirects=False)

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


_lock = threading.Lock()
_clients: dict[float | None, HttpClient] = {}
_clients_pid: int | None = None


def default_client(read_timeout: float | None = None) -> HttpClient:
    """One pooled client per process and read timeout (re-created after a fork: sockets must not
    be shared between processes)."""
    global _clients_pid
    client = _clients.get(read_timeout) if _clients_pid == os.getpid() else None
    if client is None:
        with _lock:
            if _clients_pid != os.getpid():
                _clients.clear()
                _clients_pid = os.getpid()
            client = _clients.get(read_timeout)
            if client is None:
                timeout = DEFAULT_TIMEOUT if read_timeout is None else httpx.Timeout(
                    connect=min(3.0, read_timeout), read=read_timeout, write=min(5.0, read_timeout), pool=5.0)
                client = _clients[read_timeout] = HttpClient(timeout=timeout)
    return client


def json_or_none(response: httpx.Response):
    try:
        return response.json()
    except ValueError:
        return None
