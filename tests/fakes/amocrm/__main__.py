"""`python -m tests.fakes.amocrm --port 9100 [--seed-demo [--install-into http://127.0.0.1:8000]]`: the fake
amoCRM on its own (point AMO_BASE_URL at it). The client id, secret and redirect URI default to AMO_CLIENT_ID,
AMO_CLIENT_SECRET and AMO_REDIRECT_URI from the environment; without a client id any client is accepted.
`--install-into` installs the widget for the demo account into that smsgate, as amoCRM does (`make
fake-amocrm` for `make run`)."""

import argparse
import json
import logging
import os
import signal
import threading

from .demo import DEMO_ACCOUNT_ID, DEMO_SUBDOMAIN, install_into, seed_demo
from .server import FakeAmoCRM


def main():
    parser = argparse.ArgumentParser(description="Run the fake amoCRM (OAuth and API v4)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before each answer")
    parser.add_argument("--error-rate", type=float, default=0.0, help="fraction of requests answered with a 5xx")
    parser.add_argument("--drop-rate", type=float, default=0.0,
                        help="fraction of requests processed, then dropped without an answer")
    parser.add_argument("--seed", type=int, default=None, help="random seed for the faults")
    parser.add_argument("--client-id", default=os.environ.get("AMO_CLIENT_ID", ""))
    parser.add_argument("--client-secret", default=os.environ.get("AMO_CLIENT_SECRET", ""))
    parser.add_argument("--redirect-uri", default=os.environ.get("AMO_REDIRECT_URI", ""))
    parser.add_argument("--limit-rps", type=int, default=7, help="requests per second per account (0: no limit)")
    parser.add_argument("--seed-demo", action="store_true",
                        help=f"create account {DEMO_ACCOUNT_ID} ({DEMO_SUBDOMAIN}) with users, contacts and leads")
    parser.add_argument("--install-into", metavar="SMSGATE_URL", default="",
                        help="with --seed-demo: install the widget for the demo account into the smsgate at this URL "
                             "(waits for it to start) and give the account a console route")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO)
    fake = FakeAmoCRM(args.host, args.port, latency=args.latency, error_rate=args.error_rate,
                      drop_rate=args.drop_rate, seed=args.seed, client_id=args.client_id,
                      client_secret=args.client_secret, redirect_uri=args.redirect_uri)
    fake.start()
    print(f"fake amocrm listening on {fake.url}", flush=True)
    print(f"base URL {fake.base_url} credentials {json.dumps({'client_id': args.client_id})}", flush=True)
    if args.seed_demo:
        ids = seed_demo(fake)
        fake.account(DEMO_ACCOUNT_ID).limit_rps = args.limit_rps
        pair = fake.issue_token_pair(DEMO_ACCOUNT_ID, subdomain=DEMO_SUBDOMAIN)
        print(f"demo account {DEMO_ACCOUNT_ID} ({DEMO_SUBDOMAIN}) leads {json.dumps(ids['leads'])}", flush=True)
        print(f"demo tokens {json.dumps({k: pair[k] for k in ('access_token', 'refresh_token')})}", flush=True)
        if args.install_into:
            def install():
                if install_into(fake, args.install_into, client_id=args.client_id, client_secret=args.client_secret,
                                redirect_uri=args.redirect_uri, log=lambda line: print(line, flush=True)):
                    print(f"open {args.install_into.rstrip('/')}/dev/amocrm/ : a lead's card with the smsgate panel",
                          flush=True)

            threading.Thread(target=install, daemon=True).start()
    stopped = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stopped.set())
    try:
        while not stopped.wait(0.5):
            pass
    except KeyboardInterrupt:
        pass
    fake.stop()


if __name__ == "__main__":
    main()
