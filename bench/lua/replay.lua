-- Replays pre-built raw HTTP requests in a loop, and prints the run's figures as JSON.
--
--   wrk -t THREADS ... -s bench/lua/replay.lua -- REQUESTS_FILE GROUP_SIZE THREADS
--
-- REQUESTS_FILE holds complete requests separated by NUL bytes (bench/run.py
-- writes it). Requests come in groups of GROUP_SIZE that stay together on one
-- wrk thread, in order (pairs: a POST as s then the GET as its recipient r);
-- group g goes to thread g % threads, so threads never share an inbox.

local counter = 0

function setup(thread)
   thread:set("tid", counter)
   counter = counter + 1
end

function init(args)
   local file = assert(io.open(args[1], "rb"))
   local data = file:read("*a")
   file:close()
   local group_size = tonumber(args[2])
   local threads = tonumber(args[3])
   local all = {}
   for request in data:gmatch("([^%z]+)") do
      table.insert(all, request)
   end
   mine = {}
   for i = 0, #all - 1 do
      if math.floor(i / group_size) % threads == tid then
         table.insert(mine, all[i + 1])
      end
   end
   assert(#mine > 0, "no requests for this thread")
   position = 0
end

function request()
   position = position % #mine + 1
   return mine[position]
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "status": %d, "timeout": %d}, ' ..
      '"latency_us": {"p50": %d, "p90": %d, "p99": %d, "max": %d, "mean": %.1f}}\n',
      summary.requests, summary.duration, summary.bytes,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
