"""Open-loop load for the steady and overload runs (bench/run.py starts locust with it).

Each user posts one pre-made form body per task (a distinct token each time, read from
BENCH_BODIES) and paces itself with `constant_throughput`, so the offered rate is
users x BENCH_USER_RATE requests per second whatever the answers take (up to the users' count
in flight at once).
"""

import itertools
import os

from locust import FastHttpUser, constant_throughput, task

with open(os.environ["BENCH_BODIES"], "rb") as handle:
    _BODIES = itertools.cycle(handle.read().splitlines())
_HEADERS = {"Content-Type": "application/x-www-form-urlencoded"}


class AmoCrm(FastHttpUser):
    wait_time = constant_throughput(float(os.environ.get("BENCH_USER_RATE", "1")))

    @task
    def system_sms(self):
        self.client.post("/amocrm/sms", data=next(_BODIES), headers=_HEADERS, name="/amocrm/sms")
