-- wrk script of the Clarion bench (bench/load.py writes the variants file).
-- args: <variants file> <method> <path> <expected status> <mode: status|batch>
-- Each variants line is "<Authorization value>\t<body>" (either may be empty);
-- requests are pre-formatted once per thread and sent round-robin.
local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
  table.insert(threads, thread)
end

function init(args)
  local path, method, target = args[1], args[2], args[3]
  expected_status = tonumber(args[4])
  count_mode = args[5]
  reqs = {}
  for line in io.lines(path) do
    local auth, body = string.match(line, "^([^\t]*)\t(.*)$")
    local headers = {}
    if auth ~= nil and auth ~= "" then headers["Authorization"] = auth end
    if body == nil or body == "" then
      body = nil
    else
      headers["Content-Type"] = "application/json"
    end
    reqs[#reqs + 1] = wrk.format(method, target, headers, body)
  end
  idx = ((tid or 1) * 7919) % #reqs
  ok, bad, items = 0, 0, 0
  shown = 0
end

function request()
  idx = idx + 1
  if idx > #reqs then idx = 1 end
  return reqs[idx]
end

function response(status, headers, body)
  if status == expected_status then
    ok = ok + 1
    if count_mode == "batch" then
      local _, n = string.gsub(body, '"status":"accepted"', "")
      items = items + n
    else
      items = items + 1
    end
  else
    bad = bad + 1
    if shown < 3 then
      shown = shown + 1
      io.stderr:write("unexpected status " .. status .. ": " .. string.sub(body or "", 1, 300) .. "\n")
    end
  end
end

function done(summary, latency, requests)
  local t_ok, t_bad, t_items = 0, 0, 0
  for _, t in ipairs(threads) do
    t_ok = t_ok + (t:get("ok") or 0)
    t_bad = t_bad + (t:get("bad") or 0)
    t_items = t_items + (t:get("items") or 0)
  end
  local e = summary.errors
  io.write(string.format(
    'BENCHJSON {"requests":%d,"duration_us":%d,"bytes":%d,"ok":%d,"bad":%d,"items":%d,' ..
    '"err_connect":%d,"err_read":%d,"err_write":%d,"err_status":%d,"err_timeout":%d,' ..
    '"lat_min_us":%d,"lat_max_us":%d,"lat_mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p95_us":%d,"p99_us":%d,"p999_us":%d}\n',
    summary.requests, summary.duration, summary.bytes, t_ok, t_bad, t_items,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.max, latency.mean,
    latency:percentile(50), latency:percentile(90), latency:percentile(95),
    latency:percentile(99), latency:percentile(99.9)))
end
