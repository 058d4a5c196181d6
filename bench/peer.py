"""The performance peer in the same `make bench` run: Jasmin 0.11.1 (HTTP API -> RabbitMQ -> SMPP to
a local fake SMSC), set up and measured by its own scripts in ../shared/peers/jasmin (setup.sh,
bench.sh, stop.sh: shared with other projects, run as they are, never edited from here).

bench.sh measures throughput and latency. What it does not measure, the CPU of every role per
message and its load generator's, is read from outside with the same /proc sampling as smsgate's
(bench/harness.py): while bench.sh runs, a thread samples jasmind, the fake SMSC, RabbitMQ, Redis
and bench.sh's own wrk / openloop.py every 0.1 s, and the window is the load generator's life.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import threading
import time
from pathlib import Path

from bench.harness import cmdline, cpu_per_message, cpu_seconds_by_role, descendants, is_rabbitmq_server, \
    pids_where, proc_stat

# What counts as Jasmin's CPU per message, and what is shown beside it (the fake upstream, the load).
COUNTED = {"jasmind": ("jasmind",), "rabbitmq": ("rabbitmq",), "redis": ("redis",)}
APART = {"fake-smsc": ("fake-smsc",), "loadgen": ("loadgen",)}


class PeerError(RuntimeError):
    pass


def default_folder(root: Path) -> Path:
    return Path(os.environ.get("BENCH_PEER_DIR") or root.parent / "shared" / "peers" / "jasmin")


def present(folder: Path) -> bool:
    return all((folder / name).is_file() for name in ("setup.sh", "bench.sh", "stop.sh"))


class LoadWindow:
    """CPU of the peer's roles while its load generator runs: samples every `interval` s; the window
    runs from the last sample before the generator appeared to the first one after it ended."""

    def __init__(self, roles: dict[int, str], parent: int, *, until_exit: bool = False, interval: float = 0.1):
        self.roles = roles
        self.parent = parent
        self.until_exit = until_exit  # to the end of bench.sh (its wait for the last delivery), not the generator's
        self.interval = interval
        self.samples: list[tuple[float, bool, dict]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()

    def _loop(self):
        while not self._stop.is_set():
            now = time.monotonic()
            loads = [pid for pid in descendants(self.parent)
                     if re.search(r"(^|/)wrk |openloop\.py", cmdline(pid))]
            ticks = {}
            for pid, role in [*self.roles.items(), *((pid, "loadgen") for pid in loads)]:
                stat = proc_stat(pid)
                if stat:
                    ticks[pid] = (role, stat[1], stat[2])
            self.samples.append((now, bool(loads), ticks))
            self._stop.wait(self.interval)

    def result(self) -> dict:
        """{"seconds", "cpu_seconds_by_role", "cpu_cores_by_role", "peak_rss_mb"} of the one load
        window, or {} when no generator was seen."""
        loaded = [i for i, (_t, load, _ticks) in enumerate(self.samples) if load]
        if not loaded:
            return {}
        first = max(loaded[0] - 1, 0)
        last = len(self.samples) - 1 if self.until_exit else min(loaded[-1] + 1, len(self.samples) - 1)
        before, after = self.samples[first][2], dict(self.samples[last][2])
        for _t, _load, ticks in self.samples[first:last]:
            for pid, value in ticks.items():  # a generator that exited: its last sample counts
                if value[0] == "loadgen" and pid not in self.samples[last][2]:
                    after[pid] = value
        seconds = self.samples[last][0] - self.samples[first][0]
        used = cpu_seconds_by_role(before, after)
        peak: dict[str, int] = {}
        for _t, _load, ticks in self.samples:
            for role, _ticks, rss in ticks.values():
                peak[role] = max(peak.get(role, 0), rss)
        return {"seconds": round(seconds, 2), "cpu_seconds_by_role": {k: round(v, 3) for k, v in used.items()},
                "cpu_cores_by_role": {k: round(v / seconds, 2) for k, v in used.items()},
                "peak_rss_mb": {k: round(v / 1024, 1) for k, v in sorted(peak.items()) if k != "loadgen"}}


class Jasmin:
    """setup.sh / bench.sh / stop.sh of ../shared/peers/jasmin, with the CPU of its roles measured."""

    def __init__(self, folder: Path, log_dir: Path, *, drain_timeout: int = 120):
        self.folder = folder
        self.log_dir = log_dir
        self.drain_timeout = drain_timeout
        self.state_dir = Path(os.environ.get("JB_STATE", "/tmp/jasmin-bench"))
        self.running: tuple[bool, int] | None = None  # (tuned, delay_ms) as this run set it up
        self.found = self._found_running()  # what ran before this run: restored at the end
        self.setups: list[dict] = []
        self.peak_rss_mb: dict[str, float] = {}  # jasmind's, over every measured run

    # --- the peer's state -------------------------------------------------------------------------------
    def state(self) -> dict[str, str]:
        values = {}
        path = self.state_dir / "state.env"
        if path.exists():
            for line in path.read_text().splitlines():
                key, sep, value = line.partition("=")
                if sep:
                    values[key] = value
        return values

    def _found_running(self) -> tuple[bool, int] | None:
        st = self.state()
        pid = st.get("JASMIND_PID")
        if pid and "jasmind" in cmdline(int(pid)) and st.get("CONFIGURED") == "1":
            return st.get("TUNED") == "1", int(float(st.get("DELAY_MS") or 0))
        return None

    def roles(self) -> dict[int, str]:
        st = self.state()
        roles = {}
        for key, role in (("JASMIND_PID", "jasmind"), ("FAKESMSC_PID", "fake-smsc")):
            if st.get(key):
                leader = int(st[key])
                roles.update({pid: role for pid in (leader, *descendants(leader))})
        roles.update({pid: "rabbitmq" for pid in pids_where(is_rabbitmq_server)})
        roles.update({pid: "redis" for pid in pids_where(lambda cmd: cmd.startswith("redis-server")
                                                           and ":6379" in cmd)})
        return roles

    # --- the scripts ------------------------------------------------------------------------------------
    def setup(self, *, tuned: bool = False, delay_ms: int = 0):
        """setup.sh (idempotent; other settings restart jasmind and the fake SMSC)."""
        if self.running == (tuned, delay_ms):
            return
        env = {**os.environ, "JASMIN_TUNED": "1" if tuned else "0"}
        env.pop("DELAY_MS", None)
        started = time.monotonic()
        out = self._script(["setup.sh", "--delay-ms", str(delay_ms)], env, "setup", timeout=1200)
        ready = [line for line in out.stdout.splitlines() if line.startswith("ready:")]
        self.setups.append({"tuned": tuned, "smsc_delay_ms": delay_ms, "seconds": round(time.monotonic() - started, 1),
                            "ready": ready[0] if ready else out.stdout.strip()[-300:]})
        self.running = (tuned, delay_ms)

    def restore(self):
        """Leave the peer as found: stopped if it was not running, else with its earlier settings."""
        if self.running is None:
            return
        if self.found is None:
            self._script(["stop.sh"], dict(os.environ), "stop", timeout=300)
        elif self.found != self.running:
            self.running = None
            self.setup(tuned=self.found[0], delay_ms=self.found[1])

    def accept(self, *, connections: int, seconds: int) -> dict:
        """bench.sh accept at one connection count: wrk closed loop on POST /send, then the drain. The
        CPU window is wrk's run (the acceptance; what jasmind delivers meanwhile is in it too)."""
        raw, window = self._bench("accept", {"CONNS": str(connections), "ACCEPT_DURATION": str(seconds)})
        run = raw["accept"][f"c{connections}"]
        if "error" in run:
            raise PeerError(f"bench.sh accept c{connections}: {run['error']}")
        requests = run["requests"] - run["errors"]
        run["capacity"] = capacity(run, seconds=raw["accept"]["duration_s"])
        return {**run, **window, "cpu_ms_per_request": self.per_message(window, requests)}

    def e2e(self, *, rate: float, seconds: int) -> dict:
        """bench.sh e2e: open loop at `rate` for `seconds`, POST -> fake SMSC latency. The CPU window
        runs from the generator's start to bench.sh's end, after its wait for the last delivery.
        Above 100/s its generator gets one keep-alive connection per request a second instead of 32:
        a connection waiting for its answer holds the next request back (bench.sh's
        `backlog_events`), and a saturated jasmind answers in hundreds of milliseconds."""
        conns = 32 if rate <= 100 else int(rate)
        raw, window = self._bench("e2e", {"E2E_RATE": f"{rate:g}", "E2E_DURATION": str(seconds),
                                          "E2E_CONNS": str(conns)}, until_exit=True)
        run = raw["e2e"]
        if "error" in run:
            raise PeerError(f"bench.sh e2e at {rate:g}/s: {run['error']}")
        if run.get("wait_timeout"):
            # bench.sh stopped waiting with a backlog left: it must not drain into smsgate's next scenario.
            run["backlog_settled_seconds"] = self._settle()
        accepted = run["sent"] - run["http_errors"]
        # achieved_rate = sent / the generator's run (to its last answer): the rate really offered.
        run["accepted_per_second"] = round(run["achieved_rate"] * accepted / run["sent"], 1) if run["sent"] else 0
        return {"tuned": raw["tuned"], "prefetch": raw["prefetch"], "smsc_delay_ms": raw["smsc_delay_ms"], **run,
                **window, "cpu_ms_per_sms": self.per_message(window, accepted)}

    def _settle(self, quiet: float = 2.0) -> float:
        """Wait until the fake SMSC's record (recv.log, only read here) stops growing for `quiet` s,
        at most the drain timeout; seconds waited."""
        record, started = self.state_dir / "recv.log", time.monotonic()
        size, changed = -1, started
        while time.monotonic() - started < self.drain_timeout:
            now_size = record.stat().st_size if record.exists() else 0
            if now_size != size:
                size, changed = now_size, time.monotonic()
            elif time.monotonic() - changed >= quiet:
                break
            time.sleep(0.5)
        return round(time.monotonic() - started, 1)

    @staticmethod
    def per_message(window: dict, messages: int) -> dict | None:
        if not window:
            return None
        return cpu_per_message(window["cpu_seconds_by_role"], messages, counted=COUNTED, apart=APART)

    def _bench(self, part: str, extra: dict, *, until_exit: bool = False) -> tuple[dict, dict]:
        env = {**os.environ, **extra, "DRAIN_TIMEOUT": str(self.drain_timeout)}
        log = open(self.log_dir / "jasmin-bench.log", "a")
        log.write(f"\n--- bench.sh {part} {extra}\n")
        log.flush()
        popen = subprocess.Popen([str(self.folder / "bench.sh"), part], cwd=self.folder, env=env,
                                 stdout=subprocess.PIPE, stderr=log, text=True)
        started = time.monotonic()
        with LoadWindow(self.roles(), popen.pid, until_exit=until_exit) as watch:
            stdout, _ = popen.communicate(timeout=3600)
        log.write(stdout)
        log.close()
        lines = [line for line in stdout.splitlines() if line.startswith("{")]
        if popen.returncode != 0 or not lines:
            raise PeerError(f"bench.sh {part} failed (exit {popen.returncode}); see {self.log_dir / 'jasmin-bench.log'}")
        window = watch.result()
        for role in ("jasmind",):
            if role in window.get("peak_rss_mb", {}):
                self.peak_rss_mb[role] = max(self.peak_rss_mb.get(role, 0.0), window["peak_rss_mb"][role])
        if window:
            window["redis_attribution"] = self._redis_attribution(window, time.monotonic() - started)
        return json.loads(lines[-1]), window

    def _redis_attribution(self, window: dict, since: float) -> str:
        """Jasmin shares the machine's Redis (its own database): its CPU there counts only when
        jasmind's connections sent a command during the run. Without DLRs Jasmin sends none per
        message, and the Redis CPU measured is then other users' of the machine."""
        database = self.state().get("REDIS_DB") or "12"
        try:
            listing = subprocess.run(["redis-cli", "client", "list"], capture_output=True, text=True,
                                     timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return "counted (could not ask Redis whether Jasmin used it)"
        idle = [int(m.group(1)) for line in listing.splitlines() if f" db={database} " in line
                for m in [re.search(r" idle=(\d+) ", line)] if m]
        if idle and min(idle) >= since:
            measured = window["cpu_seconds_by_role"].pop("redis", 0.0)
            window["cpu_cores_by_role"].pop("redis", None)
            window["redis_machine_cpu_seconds_not_counted"] = measured
            return f"not counted: jasmind sent Redis no command during the run (idle {min(idle)} s)"
        return "counted: jasmind used Redis during the run (the machine's Redis: other users' CPU included)"

    def _script(self, args: list[str], env: dict, name: str, *, timeout: int) -> subprocess.CompletedProcess:
        out = subprocess.run([str(self.folder / args[0]), *args[1:]], cwd=self.folder, env=env,
                             capture_output=True, text=True, timeout=timeout)
        with open(self.log_dir / f"jasmin-{name}.log", "a") as log:
            log.write(f"--- {' '.join(args)}\n{out.stdout}\n{out.stderr}\n")
        if out.returncode != 0:
            raise PeerError(f"{args[0]} failed (exit {out.returncode}): {out.stderr.strip()[-500:]}")
        return out


def capacity(run: dict, *, seconds: float) -> dict:
    """Accepted and delivered per second of a closed-loop accept run: what it accepted, over the time
    from the start until the last of it reached the SMSC (the load plus its drain)."""
    accepted = run["requests"] - run["errors"]
    span = seconds + run["drain_s"]
    return {"accepted": accepted, "seconds_to_last_delivery": round(span, 1),
            "per_second": round(accepted / span, 1),
            "accepted_per_second": run["req_s"], "delivered_per_second_during_load": run["delivered_during_per_s"],
            "drain_timeout": run["drain_timeout"]}
