"""The benchmark's side-by-side plumbing (bench/run.py, bench/peer.py): how the figures of both sides
are paired, judged and measured. Speed itself is shown by `make bench`, never by a test."""

import pytest

from bench import peer
from bench.harness import CLOCK_TICKS, cpu_per_message
from bench.run import Receipts, judge, phone, phone_range


def _row(rows, label):
    return next(row for row in rows if row["figure"] == label)


def test_a_ratio_target_is_judged_on_smsgate_over_jasmin_and_needs_the_peer():
    # 650 answered a second, 600 of them accepted (the rest refused by admission control): 600 counts.
    results = {"acceptance": {"endpoint_c8": {"requests_per_second": 650.0, "accepted_per_second": 600.0,
                                              "latency_p99_ms": 30.0}},
               "peer": {"acceptance": {"c8": {"req_s": 500.0, "p99_ms": 20.0}}}}
    rows = judge(results)
    rate = _row(rows, "accepted req/s, 8 connections")
    assert (rate["smsgate"], rate["jasmin"], rate["ratio"], rate["target"], rate["pass"]) == (
        600.0, 500.0, 1.2, "ratio >= 1", True)
    p99 = _row(rows, "accepted p99 ms, 8 connections")
    assert (p99["ratio"], p99["target"], p99["pass"]) == (1.5, "ratio <= 1", False)

    alone = _row(judge({"acceptance": results["acceptance"], "peer": {"skipped": "--no-peer"}}),
                 "accepted req/s, 8 connections")
    assert (alone["smsgate"], alone["jasmin"], alone["ratio"], alone["pass"]) == (600.0, None, None, None)


@pytest.mark.parametrize("refused, p99, verdict", [(0, None, True), (12, 20.0, True), (12, 2800.0, False)])
def test_refused_answered_within_50_ms_passes_when_none_was_refused(refused, p99, verdict):
    row = _row(judge({"overload": {"refused": refused, "refused_p99_ms": p99}}), "overload: refused, answered p99 ms")
    assert (row["target"], row["pass"]) == ("<= 50", verdict)


def test_own_targets_hold_without_the_peer():
    rows = judge({"overload": {"accepted_share_of_capacity": 0.93, "e2e_from_client_p99_ms": 2500.0},
                  "dispatch": {"e2e_p99_ms": 450.0}})
    assert _row(rows, "overload: accepted / capacity")["pass"] is True
    assert _row(rows, "overload: accepted, e2e from the client p99 ms")["pass"] is False
    assert _row(rows, "bulk, 100 ms provider: e2e p99 ms")["pass"] is True


def _window(samples, *, until_exit=False):
    window = peer.LoadWindow({}, parent=0, until_exit=until_exit)
    window.samples = samples
    return window.result()


SAMPLES = [  # (time, generator running, pid -> (role, CPU ticks, resident kB))
    (0.0, False, {1: ("jasmind", 100, 2048)}),
    (0.1, True, {1: ("jasmind", 110, 2048), 50: ("loadgen", 5, 512)}),
    (0.2, True, {1: ("jasmind", 130, 4096), 50: ("loadgen", 9, 512)}),
    (0.3, False, {1: ("jasmind", 150, 4096)}),  # the generator has exited
    (0.4, False, {1: ("jasmind", 160, 4096)}),  # bench.sh still waits for the last delivery
]


def test_the_peer_window_is_the_generator_life_and_counts_an_exited_generator():
    result = _window(SAMPLES)
    assert result["seconds"] == pytest.approx(0.3)
    assert result["cpu_seconds_by_role"] == {"jasmind": round(50 / CLOCK_TICKS, 3), "loadgen": round(9 / CLOCK_TICKS, 3)}
    assert result["peak_rss_mb"] == {"jasmind": 4.0}


def test_an_e2e_window_runs_to_the_end_of_bench_sh():
    result = _window(SAMPLES, until_exit=True)
    assert result["seconds"] == pytest.approx(0.4)
    assert result["cpu_seconds_by_role"]["jasmind"] == round(60 / CLOCK_TICKS, 3)


def test_no_generator_seen_gives_no_window():
    assert _window([(0.0, False, {1: ("jasmind", 1, 1)})]) == {}


def test_capacity_is_what_was_accepted_over_the_load_and_its_drain():
    run = {"requests": 1000, "errors": 10, "drain_s": 4.0, "req_s": 200.0, "delivered_during_per_s": 20.0,
           "drain_timeout": False}
    capacity = peer.capacity(run, seconds=5)
    assert (capacity["accepted"], capacity["seconds_to_last_delivery"], capacity["per_second"]) == (990, 9.0, 110.0)


def test_cpu_per_message_counts_the_system_and_shows_the_rest_beside_it():
    cpu = {"web-worker": 0.5, "web-master": 0.1, "postgres-backends": 0.2, "loadgen": 0.3}
    out = cpu_per_message(cpu, 100, counted={"web": ("web-master", "web-worker"), "postgresql": ("postgres-backends",)},
                          apart={"loadgen": ("loadgen",)})
    assert out == {"messages": 100, "per_role_ms": {"web": 6.0, "postgresql": 2.0}, "total_ms": 8.0,
                   "apart_ms": {"loadgen": 3.0}}
    assert cpu_per_message(cpu, 0, counted={}, apart={}) is None


def test_receipts_read_each_complete_line_once(tmp_path):
    path = tmp_path / "received.jsonl"
    path.write_text('{"recipient": "+79125000001", "received_at": 1.5}\n'
                    '{"recipient": "+79125000002", "received_at": 2.5}\n{"recipient": "+7912')
    receipts = Receipts(path)
    assert dict(receipts.load()) == {"79125000001": [1.5], "79125000002": [2.5]}
    with open(path, "a") as handle:
        handle.write('5000001", "received_at": 3.5}\n')
    assert dict(receipts.load()) == {"79125000001": [1.5, 3.5], "79125000002": [2.5]}


def test_capacity_and_overload_phones_never_meet():
    assert phone_range("overload")[1] < phone_range("capacity")[0]
    assert phone("capacity", 0) == "+79127500000"
    with pytest.raises(ValueError):
        phone("overload", 500_000)
