-- One broker cycle per wrk connection, as a state machine: `npm run bench -- --only=cycles`
-- (bench/cycles.ts) runs `wrk -t P -c P` so each thread owns one connection and one node/client
-- pair. API v1: requests -> servers/poll -> responses -> responses/retrieve; legacy: /faucet ->
-- /sink -> /source -> /retrieve. Each answer is checked (status, and the work or answer really
-- came back) before the next step is sent.
--
-- wrk's own latency figures mix the four steps, so each step is timed here with the monotonic
-- clock: wrk calls request() just before writing and response() once the answer is parsed.
-- Latencies go into 10 µs buckets below 100 ms (1 ms above), merged in done(). The histogram is
-- one flat table keyed step * 1e6 + bucket: wrk's thread:get() crashes copying nested tables.
--
-- Input: WRK_CYCLE_FILE, one line per thread: protocol, then the four step paths and bodies,
-- tab-separated; "@ID@" in a body is replaced by the cycle's request id. WRK_NODE_TOKEN is the
-- registration token (X-Relay-Server-Token) node steps send.

local ffi = require("ffi")
ffi.cdef [[
  typedef struct { long tv_sec; long tv_nsec; } bench_timespec;
  int clock_gettime(int clk_id, bench_timespec *tp);
]]
local CLOCK_MONOTONIC = 1
local ts = ffi.new("bench_timespec")
local function now_us()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) * 1e6 + tonumber(ts.tv_nsec) / 1e3
end

-- main state: hands each thread its line number
local threads = {}
function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

-- thread state
hist = {}
cycles = 0
errors = 0
first_error = ""

local spec = nil
local step = 1
local cycle_no = 0
local started = 0

local function load_spec()
  local id = tid or 1
  local f = assert(io.open(os.getenv("WRK_CYCLE_FILE"), "r"))
  local n = 0
  for line in f:lines() do
    n = n + 1
    if n == id then
      local parts = {}
      for p in string.gmatch(line, "[^\t]+") do table.insert(parts, p) end
      f:close()
      local s = { protocol = parts[1], steps = {} }
      for k = 1, 4 do
        local path, body = parts[2 * k], parts[2 * k + 1]
        local at = string.find(body, "@ID@", 1, true)
        s.steps[k] = { path = path, pre = at and string.sub(body, 1, at - 1) or body, post = at and string.sub(body, at + 4) or nil }
      end
      return s
    end
  end
  f:close()
  error("WRK_CYCLE_FILE has no line " .. id)
end

local json_headers = { ["Content-Type"] = "application/json" }
local node_headers = { ["Content-Type"] = "application/json", ["X-Relay-Server-Token"] = os.getenv("WRK_NODE_TOKEN") or "" }

local function request_id()
  return "bench-" .. (tid or 0) .. "-" .. cycle_no
end

function request()
  -- wrk also calls this once before setup() to check the request; it must not change state.
  if spec == nil or spec.tid ~= tid then
    spec = load_spec()
    spec.tid = tid
  end
  local s = spec.steps[step]
  local body = s.post and (s.pre .. request_id() .. s.post) or s.pre
  -- steps 2 and 3 are the node's (poll / sink, responses / source)
  local headers = (step == 2 or step == 3) and node_headers or json_headers
  started = now_us()
  return wrk.format("POST", s.path, headers, body)
end

local function fail(why)
  errors = errors + 1
  if first_error == "" then first_error = why end
  step = 1
  cycle_no = cycle_no + 1
end

function response(status, headers, body)
  local us = now_us() - started
  local b = us < 100000 and math.floor(us / 10) or 10000 + math.floor(us / 1000)
  local key = step * 1000000 + b
  hist[key] = (hist[key] or 0) + 1
  if status ~= 200 then
    return fail("step " .. step .. " (" .. spec.steps[step].path .. ") answered " .. status .. ": " .. string.sub(body or "", 1, 160))
  end
  local ok = true
  if spec.protocol == "v1" then
    if step == 2 or step == 4 then ok = string.find(body, request_id(), 1, true) ~= nil end
  else
    if step == 2 or step == 4 then ok = string.find(body, "chat_history", 1, true) ~= nil end
  end
  if not ok then
    return fail("step " .. step .. " (" .. spec.steps[step].path .. ") did not carry the cycle's work: " .. string.sub(body or "", 1, 160))
  end
  if step == 4 then
    cycles = cycles + 1
    cycle_no = cycle_no + 1
    step = 1
  else
    step = step + 1
  end
end

function done(summary, latency, requests)
  local total, errs, first = 0, 0, ""
  local merged = { {}, {}, {}, {} }
  for _, t in ipairs(threads) do
    total = total + (t:get("cycles") or 0)
    errs = errs + (t:get("errors") or 0)
    local fe = t:get("first_error")
    if first == "" and fe and fe ~= "" then first = fe end
    for key, n in pairs(t:get("hist") or {}) do
      local k, b = math.floor(key / 1000000), key % 1000000
      merged[k][b] = (merged[k][b] or 0) + n
    end
  end
  local parts = {}
  for k = 1, 4 do
    local cells = {}
    for b, n in pairs(merged[k]) do table.insert(cells, b .. ":" .. n) end
    table.insert(parts, '"' .. table.concat(cells, ",") .. '"')
  end
  first = string.gsub(first, '[%c"\\]', " ")
  io.write(string.format('WRK_CYCLES {"cycles":%d,"errors":%d,"durationUs":%d,"socketErrors":%d,"firstError":"%s","hist":[%s]}\n',
    total, errs, summary.duration,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    first, table.concat(parts, ",")))
end
