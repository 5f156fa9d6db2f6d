-- wrk driver for bench/run.py: one endpoint per run.
-- Arguments after "--": METHOD REQUESTS_FILE THREADS once|cycle [HEADER ...] (each header as "Name: value").
-- Each line of the requests file is "PATH<TAB>BODY" (BODY may be empty). The lines are split between the
-- threads; a thread sends its share in turn, over and over ("cycle": a pool of show codes, or one request),
-- or each line once and then stops ("once": token requests need a fresh assertion each). done() prints one
-- JSON line.

local threads = {}

function setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
end

function init(args)
  wrk.method = args[1]
  local requests_file, thread_count = args[2], tonumber(args[3])
  once = args[4] == "once"
  for i = 5, #args do
    local name, value = args[i]:match("^([^:]+):%s*(.*)$")
    wrk.headers[name] = value
  end
  statuses = {}
  -- Formatted up front, so the load generator spends nothing per request but sending.
  requests, next_request = {}, 1
  local line_number = 0
  for line in io.lines(requests_file) do
    if line_number % thread_count == thread_index then
      local path, body = line:match("^([^\t]*)\t(.*)$")
      table.insert(requests, wrk.format(nil, path, nil, body ~= "" and body or nil))
    end
    line_number = line_number + 1
  end
  if #requests == 0 then
    -- Fewer lines than threads: a cycling thread repeats the first one, a "once" thread has nothing to send.
    local path, body = io.lines(requests_file)():match("^([^\t]*)\t(.*)$")
    table.insert(requests, wrk.format(nil, path, nil, body ~= "" and body or nil))
    if once then
      empty = true
    end
  end
end

function request()
  if next_request > #requests or empty then
    if once then
      -- Share used up: stop; the request returned here is never read back, so it is not counted.
      wrk.thread:stop()
    end
    next_request = 1
  end
  local request = requests[next_request]
  next_request = next_request + 1
  return request
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
