-- bench/wrk_report.lua — loaded by the other bench/*.lua wrk scripts (dofile). Keeps every
-- thread, lets a thread count answers by status (count_status), and at the end writes wrk's
-- summary as one JSON object to the file named by BENCH_WRK_JSON (see bench_wrk in bench/lib.sh).

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("thread_id", #threads)
end

-- Called from a thread's response(): counts one answer under its status.
function count_status(status)
  statuses = statuses or {}
  local k = tostring(status)
  statuses[k] = (statuses[k] or 0) + 1
end

local function num(x)
  if x ~= x or x == math.huge or x == -math.huge then return "0" end
  return string.format("%.3f", x)
end

function done(summary, latency, requests)
  local path = os.getenv("BENCH_WRK_JSON")
  if not path then return end
  local merged, counted = {}, false
  for _, t in ipairs(threads) do
    local s = t:get("statuses")
    if s then
      counted = true
      for k, v in pairs(s) do merged[k] = (merged[k] or 0) + v end
    end
  end
  local parts = {}
  for k, v in pairs(merged) do table.insert(parts, string.format('"%s":%d', k, v)) end
  local secs = summary.duration / 1e6
  local e = summary.errors
  local out = string.format(
    '{"requests":%d,"duration_s":%s,"rps":%s,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%s,"p50":%s,"p90":%s,"p99":%s,"max":%s}%s}\n',
    summary.requests, num(secs), num(summary.requests / secs), summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    num(latency.mean), num(latency:percentile(50)), num(latency:percentile(90)),
    num(latency:percentile(99)), num(latency.max),
    counted and (',"statuses":{' .. table.concat(parts, ",") .. '}') or "")
  local f = assert(io.open(path, "w"))
  f:write(out)
  f:close()
end
