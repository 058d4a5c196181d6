"""Fixed-rate (open-loop) HTTP load: request i leaves at start + i/rate, whatever earlier answers take.

    python bench/loadgen/openloop.py --url http://127.0.0.1:8000/amocrm/sms --bodies FILE --rate 50 --seconds 30

Each line of FILE is one urlencoded form body (a fresh amoCRM token each), posted once, on its own
connection (`Connection: close`), as independent amoCRM servers would. Nothing waits for an answer
before sending the next request, so a slow server gets more requests in flight, never fewer
requests: latency is counted from each request's *scheduled* time (no coordinated omission), per
outcome too (`latency_by_outcome`: a 200, a 503, a TimeoutError...). `--sends FILE` writes the
wall-clock time each request left (line: index epoch), so end-to-end latency can start at the client.
One asyncio process on the standard library (and bench/harness.py); prints one JSON object.

Why not locust: its users pace themselves (`constant_throughput`), so the offered rate falls
when answers slow down, and on this 2-core machine 50 users at 1/s each arrived in bursts (client
p50 220 ms while the server answered a lone request in 12 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from collections import Counter
from pathlib import Path
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from bench.harness import percentile  # standard library only, like this script


async def post(host: str, port: int, request_head: bytes, body: bytes, timeout: float) -> int:
    reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), timeout)
    try:
        writer.write(request_head + str(len(body)).encode() + b"\r\n\r\n" + body)
        status_line = await asyncio.wait_for(reader.readline(), timeout)
        await asyncio.wait_for(reader.read(), timeout)  # the rest, until the server closes
        return int(status_line.split()[1])
    finally:
        writer.close()


def summary(values: list[float]) -> dict:
    return {"count": len(values), "p50_ms": round(percentile(values, 50) or 0, 1),
            "p99_ms": round(percentile(values, 99) or 0, 1), "max_ms": round(max(values, default=0), 1)}


async def run(url: str, bodies: list[bytes], rate: float, seconds: float, timeout: float,
              sends: list[tuple[int, float]]) -> dict:
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or 80
    head = (f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: close\r\n"
            "Content-Type: application/x-www-form-urlencoded\r\nContent-Length: ").encode()
    total = min(int(rate * seconds), len(bodies))
    if total < int(rate * seconds):
        raise SystemExit(f"only {len(bodies)} bodies for {int(rate * seconds)} requests")
    loop = asyncio.get_running_loop()
    statuses: Counter = Counter()
    latencies: list[float] = []
    by_outcome: dict[str, list[float]] = {}
    # From the moment the request actually left, not its schedule: what the server took, with the
    # generator's own lateness (it shares the machine's cores) left out. Shown beside, never instead.
    from_send_by_outcome: dict[str, list[float]] = {}
    late: list[float] = []
    in_flight = peak_in_flight = 0

    async def one(index: int, scheduled: float, body: bytes):
        nonlocal in_flight, peak_in_flight
        in_flight += 1
        peak_in_flight = max(peak_in_flight, in_flight)
        sends.append((index, time.time()))
        left = loop.time()
        try:
            outcome = str(await post(host, port, head, body, timeout))
            latencies.append((loop.time() - scheduled) * 1000)
        except (OSError, TimeoutError, ValueError, IndexError) as exc:
            outcome = type(exc).__name__
        finally:
            in_flight -= 1
        statuses[outcome] += 1
        by_outcome.setdefault(outcome, []).append((loop.time() - scheduled) * 1000)
        from_send_by_outcome.setdefault(outcome, []).append((loop.time() - left) * 1000)

    tasks = []
    started_epoch = time.time()
    started = loop.time()
    for i in range(total):
        scheduled = started + i / rate
        delay = scheduled - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        late.append(max(0.0, loop.time() - scheduled) * 1000)
        tasks.append(asyncio.create_task(one(i, scheduled, bodies[i])))
    sent_seconds = loop.time() - started
    await asyncio.gather(*tasks)
    finished = loop.time() - started
    ok = sum(n for code, n in statuses.items() if code.isdigit() and 200 <= int(code) < 300)
    return {
        "generator": "bench/loadgen/openloop.py (asyncio, fixed schedule, one connection per request)",
        "offered_per_second_target": rate,
        "requests": total,
        "started_at_epoch": round(started_epoch, 3),
        "sending_seconds": round(sent_seconds, 2),
        "sent_per_second": round(total / sent_seconds, 1) if sent_seconds else None,
        "schedule_late_p99_ms": round(percentile(late, 99) or 0, 1),
        "answered_2xx": ok,
        "failures": total - ok,
        "statuses": dict(statuses),
        "latency_by_outcome": {outcome: summary(values) for outcome, values in sorted(by_outcome.items())},
        "latency_not_2xx": summary([value for outcome, values in by_outcome.items()
                                    if not (outcome.isdigit() and 200 <= int(outcome) < 300) for value in values]),
        "latency_from_send_by_outcome": {outcome: summary(values)
                                         for outcome, values in sorted(from_send_by_outcome.items())},
        "latency_not_2xx_from_send": summary([value for outcome, values in from_send_by_outcome.items()
                                              if not (outcome.isdigit() and 200 <= int(outcome) < 300)
                                              for value in values]),
        "peak_in_flight": peak_in_flight,
        "client_p50_ms": round(percentile(latencies, 50) or 0, 1),
        "client_p99_ms": round(percentile(latencies, 99) or 0, 1),
        "client_max_ms": round(max(latencies, default=0), 1),
        "wall_seconds": round(finished, 1),
    }


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--bodies", required=True, help="one urlencoded body per line, each sent once")
    parser.add_argument("--rate", type=float, required=True, help="requests per second")
    parser.add_argument("--seconds", type=float, required=True)
    parser.add_argument("--timeout", type=float, default=30.0, help="per request, seconds")
    parser.add_argument("--sends", help="write 'index epoch' per request: when it left (before connecting)")
    args = parser.parse_args()
    with open(args.bodies, "rb") as handle:
        bodies = handle.read().splitlines()
    sends: list[tuple[int, float]] = []
    result = asyncio.run(run(args.url, bodies, args.rate, args.seconds, args.timeout, sends))
    if args.sends:
        with open(args.sends, "w") as handle:
            handle.writelines(f"{index} {epoch:.6f}\n" for index, epoch in sends)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
