-- wrk script: one random, block-aligned single Range request per request.
--
--   wrk -t1 -c32 -d10s -s bench/random_ranges.lua URL -- FILE_SIZE [BLOCK_SIZE]
--
-- Every response must be a 206 whose body is exactly BLOCK_SIZE bytes; anything
-- else is counted (bad_status, bad_length).  done() prints one machine-readable
-- line starting with "BENCH " that bench/serve_bench.py parses.

local threads = {}

-- Globals, so that done() can read them from each thread with thread:get().
file_size = 0
block = 65536
blocks = 1
req_headers = {}
ok = 0
bad_status = 0
bad_length = 0

function setup(thread)
   thread:set("thread_index", #threads + 1)
   table.insert(threads, thread)
end

function init(args)
   file_size = tonumber(args[1]) or error("usage: ... -- FILE_SIZE [BLOCK_SIZE]")
   block = tonumber(args[2]) or 65536
   blocks = math.floor(file_size / block)
   if blocks < 1 then
      error("the file is smaller than one block")
   end
   -- wrk.format() replaces wrk.headers with the table it is given: copy the -H ones.
   for name, value in pairs(wrk.headers) do
      req_headers[name] = value
   end
   math.randomseed(os.time() * 1000 + (thread_index or 0))
end

function request()
   local start = math.random(0, blocks - 1) * block
   req_headers["Range"] = string.format("bytes=%d-%d", start, start + block - 1)
   return wrk.format(nil, nil, req_headers)
end

function response(status, headers, body)
   if status ~= 206 then
      bad_status = bad_status + 1
   elseif #body ~= block then
      bad_length = bad_length + 1
   else
      ok = ok + 1
   end
end

function done(summary, latency, requests)
   local n_ok, n_status, n_length = 0, 0, 0
   for _, thread in ipairs(threads) do
      n_ok = n_ok + thread:get("ok")
      n_status = n_status + thread:get("bad_status")
      n_length = n_length + thread:get("bad_length")
   end
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d ok=%d bad_status=%d bad_length=%d "
         .. "connect=%d read=%d write=%d status=%d timeout=%d "
         .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
      summary.requests, summary.duration, summary.bytes, n_ok, n_status, n_length,
      e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
