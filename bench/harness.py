"""The benchmark's plumbing: a private Redis, the Procfile's own processes, a fake provider,
machine facts, and CPU and memory of every process by role (read from /proc)."""

from __future__ import annotations

import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PY = sys.executable
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_for(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


@dataclass
class Proc:
    role: str
    popen: subprocess.Popen
    log_path: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def alive(self) -> bool:
        return self.popen.poll() is None

    def stop(self, timeout: float = 20):
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(5)


@dataclass
class Stack:
    """Every process the benchmark started, so all of them stop at the end whatever happens."""

    tmp: Path
    env: dict
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, role: str, args: list[str], *, env: dict | None = None, shell: bool = False) -> Proc:
        log_path = self.tmp / f"{role}-{len(self.procs)}.log"
        handle = open(log_path, "wb")
        popen = subprocess.Popen(args, cwd=ROOT, env=env or self.env, stdout=handle, stderr=subprocess.STDOUT,
                                 start_new_session=True, shell=shell, executable="/bin/bash" if shell else None)
        proc = Proc(role, popen, log_path)
        self.procs.append(proc)
        return proc

    def running(self, role_prefix: str = "") -> list[Proc]:
        return [p for p in self.procs if p.alive() and p.role.startswith(role_prefix)]

    def stop(self, procs: list[Proc] | None = None):
        for proc in reversed(procs if procs is not None else self.procs):
            proc.stop()

    # --- the processes ------------------------------------------------------------------------------
    def start_redis(self) -> tuple[Proc, int]:
        port = free_port()
        folder = self.tmp / "redis"
        folder.mkdir(exist_ok=True)
        proc = self.spawn("redis", ["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                                    "--appendonly", "no", "--dir", str(folder), "--daemonize", "no"])
        wait_for(lambda: port_open(port), 10, "redis")
        return proc, port

    def procfile_command(self, name: str) -> str:
        """A Procfile line as it is, so the benchmark runs exactly the documented production processes."""
        for line in (ROOT / "Procfile").read_text().splitlines():
            key, sep, command = line.partition(":")
            if sep and key.strip() == name:
                return command.strip()
        raise KeyError(f"no {name!r} in the Procfile")

    def start_procfile(self, name: str, *, env: dict | None = None) -> Proc:
        # "worker-system-2" plays the role "worker-system": figures are per role, not per Procfile line.
        role = name[:-2] if name[-2:] == "-2" else name
        proc = self.spawn(role, ["/bin/bash", "-c", self.procfile_command(name)], env=env)
        return proc

    def start_web(self, port: int, *, proxy: bool = True) -> Proc:
        """The web tier on `port`: with `proxy`, the Procfile's HAProxy there and gunicorn behind it on a
        private port (as deployed, README "Deploy"); without, gunicorn itself."""
        web_port = free_port() if proxy else port
        env = {**self.env, "WEB_BIND": f"127.0.0.1:{web_port}", "WEB_BEHIND_PROXY": "1" if proxy else "0"}
        proc = self.start_procfile("web", env=env)
        wait_for(lambda: port_open(web_port) or not proc.alive(), 30, "gunicorn")
        if not proc.alive():
            raise RuntimeError(f"web did not start:\n{proc.log()}")
        if proxy:
            front = self.start_procfile("proxy", env={**env, "PROXY_BIND": f"127.0.0.1:{port}"})
            wait_for(lambda: port_open(port) or not front.alive(), 15, "haproxy")
            if not front.alive():
                raise RuntimeError(f"the proxy did not start:\n{front.log()}")
        return proc

    def start_worker(self, name: str) -> Proc:
        proc = self.start_procfile(name)
        wait_for(lambda: " ready." in proc.log() or not proc.alive(), 60, name)
        if not proc.alive():
            raise RuntimeError(f"{name} did not start:\n{proc.log()}")
        return proc

    def start_fake(self, port: int, *, latency: float, record: Path) -> Proc:
        proc = self.spawn("fake-provider", [PY, "-m", "tests.fakes.smsru", "--port", str(port), "--latency",
                                            str(latency), "--status-delays", "3600,3600", "--record", str(record)])
        wait_for(lambda: port_open(port) or not proc.alive(), 15, "the fake provider")
        return proc


# --- /proc: CPU and memory by role ----------------------------------------------------------------------
def descendants(pid: int) -> list[int]:
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        path = Path(f"/proc/{current}/task/{current}/children")
        try:
            kids = [int(x) for x in path.read_text().split()]
        except OSError:
            kids = []
        found.extend(kids)
        queue.extend(kids)
    return found


def proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(command name, CPU ticks, resident kB)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    name = raw[raw.index("(") + 1:raw.rindex(")")]
    fields = raw[raw.rindex(")") + 2:].split()
    return name, int(fields[11]) + int(fields[12]), int(fields[21]) * PAGE_KB


def is_rabbitmq_server(cmd: str) -> bool:
    """The RabbitMQ node itself, not a `rabbitmqctl` (also an Erlang VM) run beside it."""
    return "beam.smp" in cmd and "-s rabbit boot" in cmd


def pids_where(predicate) -> list[int]:
    """Every pid whose command line satisfies `predicate`."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and predicate(cmdline(int(entry.name))):
            found.append(int(entry.name))
    return found


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class ProcessTable:
    """Which pid plays which role: our processes (and their children, e.g. gunicorn workers), the
    load generators, PostgreSQL backends of the benchmark database, Redis, RabbitMQ."""

    def __init__(self, stack: Stack, database: str):
        self.stack = stack
        self.database = database

    def roles(self) -> dict[int, str]:
        roles: dict[int, str] = {}
        for proc in self.stack.procs:
            if not proc.alive():
                continue
            leader = proc.pid
            kids = descendants(leader)
            if proc.role == "web":
                # bash execs gunicorn: the leader is the master, its children the workers.
                roles[leader] = "web-master"
                for kid in kids:
                    roles[kid] = "web-worker"
            else:
                roles[leader] = proc.role
                for kid in kids:
                    roles[kid] = proc.role
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit() or int(entry.name) in roles:
                continue
            pid = int(entry.name)
            cmd = cmdline(pid)
            if cmd.startswith("postgres: ") and f" {self.database} " in cmd:
                roles[pid] = "postgres-backends"
            elif cmd.startswith("postgres: ") and any(w in cmd for w in ("walwriter", "checkpointer",
                                                                         "background writer", "autovacuum")):
                roles[pid] = "postgres-shared"
            elif cmd.startswith("wrk ") or "/wrk " in cmd:
                roles[pid] = "loadgen"
            elif "bench/loadgen" in cmd:
                roles[pid] = "loadgen"
            elif is_rabbitmq_server(cmd):
                # The machine's broker: its CPU goes to the side whose scenario runs (smsgate's and the
                # peer's never run at once); other users of the machine may add some.
                roles[pid] = "rabbitmq"
        return roles

    def snapshot(self) -> dict[int, tuple[str, int, int]]:
        """pid -> (role, CPU ticks, resident kB)."""
        result = {}
        for pid, role in self.roles().items():
            stat = proc_stat(pid)
            if stat:
                result[pid] = (role, stat[1], stat[2])
        return result


def cpu_seconds_by_role(before: dict, after: dict) -> dict[str, float]:
    """CPU seconds used per role between two snapshots (pid -> (role, ticks, ...)); a pid absent
    from `before` started in between."""
    used: dict[str, float] = {}
    for pid, (role, ticks, *_rest) in after.items():
        start = before[pid][1] if pid in before else 0
        used[role] = used.get(role, 0.0) + (ticks - start) / CLOCK_TICKS
    return dict(sorted(used.items()))


def cpu_by_role(before: dict, after: dict, seconds: float) -> dict[str, float]:
    """Cores used per role between two snapshots (1.0 = one core busy all the time)."""
    return {role: round(value / seconds, 2) for role, value in cpu_seconds_by_role(before, after).items()}


def cpu_per_message(cpu_seconds: dict[str, float], messages: int, *, counted: dict[str, tuple[str, ...]],
                    apart: dict[str, tuple[str, ...]]) -> dict | None:
    """Milliseconds of CPU per message, by role. `counted` roles make `total_ms` (the system under
    test); `apart` ones are shown beside it (the fake upstream, the load generator)."""
    if not messages:
        return None

    def ms(roles):
        return round(sum(cpu_seconds.get(role, 0.0) for role in roles) * 1000 / messages, 2)

    per_role = {name: ms(roles) for name, roles in counted.items()}
    return {"messages": messages, "per_role_ms": per_role, "total_ms": round(sum(per_role.values()), 2),
            "apart_ms": {name: ms(roles) for name, roles in apart.items()}}


def machine_cpu_ticks() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine."""
    fields = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + fields[4]
    return sum(fields) - idle, sum(fields)


class MemoryWatch:
    """Peak resident size per process of each role, sampled by the caller between steps."""

    def __init__(self, table: ProcessTable):
        self.table = table
        self.peak: dict[str, dict[int, int]] = {}

    def sample(self):
        for pid, (role, _ticks, rss) in self.table.snapshot().items():
            per_role = self.peak.setdefault(role, {})
            per_role[pid] = max(per_role.get(pid, 0), rss)

    def report(self, roles: tuple[str, ...]) -> dict:
        out = {}
        for role in roles:
            values = sorted(self.peak.get(role, {}).values())
            if values:
                out[role] = {"processes": len(values), "peak_rss_mb_each": [round(v / 1024, 1) for v in values],
                             "peak_rss_mb_max": round(values[-1] / 1024, 1)}
        return out


# --- facts ------------------------------------------------------------------------------------------
def _version(args: list[str], pattern: str = r"([0-9]+\.[0-9]+(?:\.[0-9]+)?)") -> str:
    try:
        out = subprocess.run(args, capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return "unavailable"
    text = (out.stdout + out.stderr).strip()
    match = re.search(pattern, text)
    return match.group(1) if match else text.splitlines()[0] if text else "unknown"


def machine_facts(redis_port: int, pg_version: str) -> dict:
    model = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            model = line.split(":", 1)[1].strip()
            break
    mem_kb = int(Path("/proc/meminfo").read_text().split()[1])
    redis_version = _version(["redis-cli", "-p", str(redis_port), "info", "server"], r"redis_version:(\S+)")
    return {
        "cpu_cores": os.cpu_count(),
        "cpu_model": model,
        "memory_gb": round(mem_kb / 1024 / 1024, 1),
        "kernel": platform.release(),
        "os": _os_name(),
        "python": platform.python_version(),
        "postgresql": pg_version,
        "redis": redis_version,
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }


def _os_name() -> str:
    try:
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                return line.split("=", 1)[1].strip('"')
    except OSError:
        pass
    return platform.system()


def tool_versions() -> dict:
    def package(name):
        from importlib.metadata import PackageNotFoundError, version
        try:
            return version(name)
        except PackageNotFoundError:
            return "not installed"

    return {
        "wrk": _version(["wrk", "-v"], r"wrk (\S+)"),
        "haproxy": _version(["haproxy", "-v"], r"version (\S+)"),
        "gunicorn": package("gunicorn"),
        "celery": package("celery"),
        "django": package("django"),
        "psycopg": package("psycopg"),
        "httpx": package("httpx"),
        "urllib3": package("urllib3"),
    }


def require_tools(*, proxy: bool = True):
    missing = [tool for tool in ("wrk", "redis-server", "redis-cli") if shutil.which(tool) is None]
    if proxy and shutil.which("haproxy") is None:
        missing.append("haproxy")
    if missing:
        raise SystemExit(f"make bench needs {', '.join(missing)} (Debian: apt-get install wrk redis-server "
                         "haproxy; --no-proxy measures gunicorn without the proxy)")


def percentile(values: list[float], p: float) -> float | None:
    """Nearest-rank percentile (p in 0..100)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, int(-(-p * len(ordered) // 100)))
    return ordered[min(rank, len(ordered)) - 1]


def write_json(path: Path, data: dict):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, ensure_ascii=False) + "\n")
