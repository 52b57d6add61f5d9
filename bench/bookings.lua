-- bench/bookings.lua — wrk script for b1-bookings: POST /api/bookings, free trial, a phone number
-- never used before on every request: +1555, a run number (2 digits: BENCH_RUN_ID, else the clock),
-- the wrk thread's number (1 digit, set by setup in wrk_report.lua) and a per-thread counter
-- (8 digits), 15 digits in all as E.164 allows. Each wrk thread has its own Lua state, so the
-- thread number keeps two threads' counters apart, and the run number two runs on one database.
-- Counts answers by status (201 expected).
dofile(os.getenv("BENCH_DIR") .. "/wrk_report.lua")

local counter = 0
local run = tonumber(os.getenv("BENCH_RUN_ID") or "") or (os.time() % 100)
local headers = {["Content-Type"] = "application/json"}

function request()
  counter = counter + 1
  local body = string.format('{"name":"Bench Client","phone":"+1555%02d%d%08d","plan":"free_trial"}',
                             run % 100, (thread_id or 0) % 10, counter)
  return wrk.format("POST", "/api/bookings", headers, body)
end

function response(status, hdrs, body)
  count_status(status)
end
