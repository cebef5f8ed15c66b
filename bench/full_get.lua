-- wrk script: plain GETs of a whole file, counted without keeping bodies.
--
--   wrk -t2 -c8 -d10s -s bench/full_get.lua URL
--
-- No response() callback, so wrk does not buffer the bodies; summary.bytes counts
-- what arrived and summary.errors.status the non-2xx/3xx answers. done() prints one
-- "BENCH " line in the same format as random_ranges.lua.

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      "BENCH requests=%d duration_us=%d bytes=%d ok=%d bad_status=%d bad_length=%d "
         .. "connect=%d read=%d write=%d status=%d timeout=%d "
         .. "p50_us=%d p90_us=%d p99_us=%d max_us=%d mean_us=%.1f\n",
      summary.requests, summary.duration, summary.bytes, summary.requests - e.status, e.status,
      0, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(90), latency:percentile(99),
      latency.max, latency.mean))
end
