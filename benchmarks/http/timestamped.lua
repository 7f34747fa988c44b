-- wrk script: POSTs 1 KiB CloudEvents in binary mode, each with a unique id and its send time in
-- milliseconds (extension `benchts`), paced by `delay_ms` per connection (set with WRK_DELAY_MS). The
-- webhook sink logs the arrival time beside it, which gives publish-to-webhook latency.
local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_usec; } bench_timeval;
  int gettimeofday(bench_timeval *tv, void *tz);
]]
local tv = ffi.new("bench_timeval")
local body = string.rep("x", 1024)
local counter = 0
local threads = 0
local delay_ms = tonumber(os.getenv("WRK_DELAY_MS") or "0")

local function now_ms()
  ffi.C.gettimeofday(tv, nil)
  return tonumber(tv.tv_sec) * 1000 + tonumber(tv.tv_usec) / 1000
end

-- Runs in the main state once per thread: numbers the threads, so that event ids are unique across them.
setup = function(thread)
  threads = threads + 1
  thread:set("thread_id", threads)
end

request = function()
  counter = counter + 1
  return wrk.format("POST", nil, {
    ["ce-specversion"] = "1.0",
    ["ce-id"] = tostring(thread_id) .. "-" .. counter,
    ["ce-source"] = "/bench/wrk",
    ["ce-type"] = "com.example.bench",
    ["ce-benchts"] = string.format("%.3f", now_ms()),
    ["Content-Type"] = "application/octet-stream",
  }, body)
end

if delay_ms > 0 then
  delay = function() return delay_ms end
end
