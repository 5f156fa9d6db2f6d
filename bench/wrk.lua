-- wrk driver for bench/run.py: one endpoint per run.
-- Arguments after "--": METHOD BODIES_FILE|- THREADS [HEADER ...] (each header as "Name: value").
-- With a bodies file every request takes the next unused line, split between threads, and a thread stops
-- when its share is used up (token requests need a fresh assertion each). done() prints one JSON line.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = args[1]
  local bodies_file, thread_count = args[2], tonumber(args[3])
  for i = 4, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
  statuses = {}
  bodies, next_body = nil, 1
  if bodies_file ~= "-" then
    bodies = {}
    local line_number = 0
    for line in io.lines(bodies_file) do
      if line_number % thread_count == thread_index then
        table.insert(bodies, line)
      end
      line_number = line_number + 1
    end
  end
  plain_request = wrk.format()
end

function request()
  if bodies == nil then
    return plain_request
  end
  if next_body > #bodies then
    -- Share used up: stop; the request returned here is never read back, so it is not counted.
    wrk.thread:stop()
    next_body = 1
  end
  local body = bodies[next_body]
  next_body = next_body + 1
  return wrk.format(nil, nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local counts = {}
  for _, thread in ipairs(threads) do
    for status, count in pairs(thread:get("statuses") or {}) do
      counts[status] = (counts[status] or 0) + count
    end
  end
  local parts = {}
  for status, count in pairs(counts) do
    table.insert(parts, string.format('"%d": %d', status, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_RESULT {"requests": %d, "duration_us": %d, "p50_us": %d, "p99_us": %d, "mean_us": %.1f, '
      .. '"socket_errors": %d, "statuses": {%s}}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99), latency.mean,
    errors.connect + errors.read + errors.write + errors.timeout, table.concat(parts, ", ")))
end
