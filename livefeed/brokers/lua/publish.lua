#!lua
-- Store and publish a whole batch, atomically (one script runs alone in Redis).
-- The shebang makes Redis refuse the script up front when it is out of memory,
-- instead of failing half way through the writes.
--
-- ARGV: prefix, history size, idempotency ttl (s), event count, then per event:
--       idempotency key ("" for none), envelope tail, tool count, tools...
-- Keys are derived from the prefix, so this script needs a single Redis (no Cluster).
-- Returns, per event, "tool id tool id ..." (a repeated key returns the first ids).
local prefix, size, ttl = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local count = tonumber(ARGV[4])

-- Append to a channel's stream, trimming it to `size`, and remember the newest
-- trimmed id under "t:<channel>": Redis 7.0 does not count trims in
-- max-deleted-entry-id, and resume needs it to tell a covered cursor from a lost one.
local function append(channel, ...)
  local stream = prefix .. "s:" .. channel
  local over = redis.call("XLEN", stream) + 1 - size
  if over > 0 then
    local doomed = redis.call("XRANGE", stream, "-", "+", "COUNT", over)
    redis.call("SET", prefix .. "t:" .. channel, doomed[#doomed][1])
  end
  return redis.call("XADD", stream, "MAXLEN", size, "*", ...)
end

local results = {}
local i = 5
for e = 1, count do
  local idem, tail, ntools = ARGV[i], ARGV[i + 1], tonumber(ARGV[i + 2])
  i = i + 3
  local done = false
  if idem ~= "" then
    done = redis.call("GET", prefix .. "idem:" .. idem)
  end
  if not done then
    local ids = {}
    for t = 0, ntools - 1 do
      local tool = ARGV[i + t]
      local id = append(tool, "d", tail)
      redis.call("PUBLISH", prefix .. "c:" .. tool, id .. " " .. tool .. " " .. tail)
      local fid = append("*", "o", tool, "d", tail)
      redis.call("PUBLISH", prefix .. "c:*", fid .. " " .. tool .. " " .. tail)
      ids[#ids + 1] = tool .. " " .. id
    end
    done = table.concat(ids, " ")
    if idem ~= "" then
      redis.call("SET", prefix .. "idem:" .. idem, done, "EX", ttl)
    end
  end
  results[e] = done
  i = i + ntools
end
return results
