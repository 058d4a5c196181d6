"""gunicorn settings from the environment: gthread workers (measured best for sync Django here)."""

import os

from gunicorn.glogging import Logger

from smsgate.logs import MASK, MaskSecretsFilter, mask_secrets

bind = os.environ.get("WEB_BIND", "127.0.0.1:8000")
worker_class = "gthread"
# 4 processes on 2 cores (gunicorn's 2 x cores): the SMS endpoint is Python-bound, and one process
# with more threads loses to the interpreter lock (bench/README.md: 0.58 -> 0.74 of the baseline).
workers = int(os.environ.get("WEB_WORKERS", "4"))
threads = int(os.environ.get("WEB_THREADS", "4"))
timeout = 30
graceful_timeout = 10
keepalive = 5
# Behind the Procfile's proxy (deploy/haproxy.cfg), which opens a connection per request and keeps the
# requests it lets in to WEB_WORKERS x WEB_THREADS: a process holds at most as many connections as it has
# threads, so one whose threads are all busy stops accepting and a free one takes the request, instead of
# queueing it behind its own (bench/README.md: the web tier's own refusals went from ~140 a run to 0).
if os.environ.get("WEB_BEHIND_PROXY", "").lower() in ("1", "true", "yes", "on"):
    worker_connections = threads
    keepalive = 0
accesslog = os.environ.get("WEB_ACCESS_LOG") or None

# Request headers that are credentials, should an access_log_format name them ({x-auth-token}i).
_SECRET_HEADERS = {"authorization", "cookie", "x-auth-token", "x-twilio-signature", "proxy-authorization"}


class MaskingLogger(Logger):
    """gunicorn's logs without callback tokens or OAuth codes (smsgate.logs.mask_secrets): the access
    log's request line, path, query string, referer and environ atoms, and every error log line."""

    def setup(self, cfg):
        super().setup(cfg)
        for log in (self.error_log, self.access_log):
            if not any(isinstance(f, MaskSecretsFilter) for f in log.filters):
                log.addFilter(MaskSecretsFilter())

    def atoms(self, resp, req, environ, request_time):
        atoms = super().atoms(resp, req, environ, request_time)
        for key, value in atoms.items():
            if key.endswith("}i") and key[1:-2] in _SECRET_HEADERS:
                atoms[key] = MASK
            elif isinstance(value, str):
                atoms[key] = mask_secrets(value)
        return atoms


logger_class = MaskingLogger


def child_exit(server, worker):
    # Prometheus multiprocess mode: forget the metrics files of a worker that exited.
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def pre_request(worker, req):
    # A body refused for its size must close the connection, so gunicorn does not read the rest of it;
    # gunicorn drops an application's Connection header, so the refusal closes it through the request.
    from smsgate.bodylimit import remember_server_request

    remember_server_request(req)


def post_worker_init(worker):
    # The SMS endpoint sheds requests that waited too long for a thread (smsgate/webqueue.py).
    from smsgate import webqueue

    webqueue.install(worker)
