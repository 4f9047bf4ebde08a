-- wrk script for bench/http_bench.py: one cookie jar per connection, and every /incr counter checked.
--
--   wrk -t 8 -c 8 -d 10s -s bench/counter.lua http://127.0.0.1:PORT -- incr|hello
--
-- wrk gives each thread its own Lua state but does not say which connection a response came on,
-- so run ONE connection per thread (-t N -c N): a thread's state is then its connection's state.
--
-- incr:  every request is GET /incr. The first response on a connection (no cookie yet) must be 1,
--        and each later one exactly the previous + 1; anything else is a wrong counter.
-- hello: the first request is GET /incr (to get a session cookie, checked as above), then every
--        request is GET /hello with that cookie; a body other than "hello" is a wrong answer.
-- bare:  every request is GET /hello with no cookie: the app's own cost, with no session work.
-- A non-2xx answer to /incr is not counted as wrong (wrk counts it as an error) and leaves the
-- expected counter where it was: a failed request must not have saved anything.

-- Main state: the threads, for done().
local threads = {}

function setup(thread)
   table.insert(threads, thread)
end

-- Thread (= connection) state. Globals, so that done() can read them with thread:get().
mode = "incr"
jar = {}            -- cookie name -> value
jar_size = 0
last = -1           -- the last counter seen; -1: none yet
pending = nil       -- the path of the request in flight
wrong = 0           -- /incr counters that were not previous + 1, /hello bodies that were not "hello"
incr_ok = 0         -- /incr responses checked and right
hello_ok = 0        -- /hello responses checked and right
bad_status = 0      -- non-2xx responses seen by this script
incr_n = 0          -- /incr responses, whatever their status
hello_n = 0         -- /hello responses, whatever their status
first_wrong = ""    -- what the first wrong answer looked like

function init(args)
   mode = args[1] or "incr"
end

local function cookie_header()
   local parts = {}
   for name, value in pairs(jar) do
      table.insert(parts, name .. "=" .. value)
   end
   if #parts == 0 then return nil end
   return table.concat(parts, "; ")
end

local function remember(set_cookie)
   local pair = string.match(set_cookie, "^%s*([^;]*)")
   local name, value = string.match(pair or "", "^([^=]+)=(.*)$")
   if not name then return end
   if value == "" or string.find(string.lower(set_cookie), "max%-age=0") then
      if jar[name] then jar_size = jar_size - 1 end
      jar[name] = nil  -- a cleared cookie
   else
      if not jar[name] then jar_size = jar_size + 1 end
      jar[name] = value
   end
end

function request()
   if mode == "bare" then
      pending = "/hello"
      return wrk.format("GET", pending, {})
   end
   if mode == "hello" and last >= 0 then
      pending = "/hello"
   else
      pending = "/incr"
   end
   local headers = {}
   local cookie = cookie_header()
   if cookie then headers["Cookie"] = cookie end
   return wrk.format("GET", pending, headers)
end

local function note_wrong(what)
   wrong = wrong + 1
   if first_wrong == "" then first_wrong = string.gsub(what, "[^%w %.,:/%-]", "?") end
end

function response(status, headers, body)
   for name, value in pairs(headers) do
      if string.lower(name) == "set-cookie" then remember(value) end
   end
   if pending == "/incr" then incr_n = incr_n + 1 else hello_n = hello_n + 1 end
   if status < 200 or status > 299 then
      bad_status = bad_status + 1
      return
   end
   if pending == "/incr" then
      local n = tonumber(body)
      local expected = (last < 0) and 1 or last + 1
      if n == nil then
         note_wrong("/incr body " .. string.sub(body or "", 1, 40))
      elseif n ~= expected then
         note_wrong("/incr gave " .. n .. ", expected " .. expected)
         last = n
      else
         incr_ok = incr_ok + 1
         last = n
      end
   else
      if body == "hello" then
         hello_ok = hello_ok + 1
      else
         note_wrong("/hello body " .. string.sub(body or "", 1, 40))
      end
   end
end

function done(summary, latency, requests)
   local totals = {wrong = 0, incr_ok = 0, hello_ok = 0, bad_status = 0, incr_n = 0, hello_n = 0}
   local first = ""
   for _, thread in ipairs(threads) do
      for key, _ in pairs(totals) do
         totals[key] = totals[key] + (thread:get(key) or 0)
      end
      local fw = thread:get("first_wrong")
      if first == "" and fw and fw ~= "" then first = fw end
   end
   local e = summary.errors
   io.write(string.format(
      "HTTP_BENCH_RESULT {\"duration_us\": %d, \"requests\": %d, \"connect_errors\": %d, \"read_errors\": %d, "
      .. "\"write_errors\": %d, \"timeouts\": %d, \"non_2xx_3xx\": %d, \"wrong\": %d, \"incr_ok\": %d, "
      .. "\"hello_ok\": %d, \"bad_status\": %d, \"incr_n\": %d, \"hello_n\": %d, \"p50_us\": %d, \"p99_us\": %d, \"first_wrong\": \"%s\"}\n",
      summary.duration, summary.requests, e.connect, e.read, e.write, e.timeout, e.status,
      totals.wrong, totals.incr_ok, totals.hello_ok, totals.bad_status, totals.incr_n, totals.hello_n,
      latency:percentile(50), latency:percentile(99), first))
end
