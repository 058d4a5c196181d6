-- wrk script: POST one pre-made form body per request (a distinct token each time).
-- BENCH_BODIES names a file with one urlencoded body per line; thread i of n sends lines
-- i, i+n, i+2n ... and counts a wrap-around (a repeated token) in `reused`. BENCH_SKIP lines at the
-- start are left out (used by an earlier run on the same file).
-- At the end it prints one JSON line with the figures bench/run.py reads.

local counter = 0
local threads = {}

function setup(thread)
  thread:set("id", counter)
  counter = counter + 1
  table.insert(threads, thread)
end

function init(args)

  local total = tonumber(os.getenv("BENCH_THREADS") or "1")
  local skip = tonumber(os.getenv("BENCH_SKIP") or "0")
  bodies = {}
  local i = 0
  for line in io.lines(os.getenv("BENCH_BODIES")) do
    if i >= skip and (i - skip) % total == id then
      bodies[#bodies + 1] = line
    end
    i = i + 1
  end
  position = 0
  reused = 0
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

function request()
  position = position + 1
  if position > #bodies then
    position = 1
    reused = reused + 1
  end
  return wrk.format(nil, nil, nil, bodies[position])
end

function done(summary, latency, requests)
  local wraps = 0
  for _, thread in ipairs(threads) do
    wraps = wraps + (thread:get("reused") or 0)
  end
  io.write(string.format(
    '{"requests": %d, "duration_us": %d, "connect_errors": %d, "read_errors": %d, "write_errors": %d, ' ..
    '"timeouts": %d, "non_2xx": %d, "p50_us": %d, "p90_us": %d, "p99_us": %d, "max_us": %d, "mean_us": %.1f, ' ..
    '"body_wraps": %d}\n',
    summary.requests, summary.duration, summary.errors.connect, summary.errors.read, summary.errors.write,
    summary.errors.timeout, summary.errors.status, latency:percentile(50), latency:percentile(90),
    latency:percentile(99), latency.max, latency.mean, wraps))
end
