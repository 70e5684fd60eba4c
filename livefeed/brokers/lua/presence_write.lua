#!lua
-- Set or remove one process's presence entries, each with a deadline.
-- ARGV: prefix, process id, lifetime (ms), key ttl (ms), then per tool: tool, entry
--       (entry "" removes it). Per tool, hash "pres:<tool>" holds process -> entry and
-- sorted set "presx:<tool>" process -> deadline; readers skip and purge expired ones.
-- Deadlines are on Redis's clock, not the writer's: processes on hosts whose clocks
-- disagree must not expire each other's entries (presence_read.lua reads the same).
local prefix, process, lifetime, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
local time = redis.call("TIME")
local deadline = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000) + lifetime
for i = 5, #ARGV, 2 do
  local entries, deadlines = prefix .. "pres:" .. ARGV[i], prefix .. "presx:" .. ARGV[i]
  if ARGV[i + 1] == "" then
    redis.call("HDEL", entries, process)
    redis.call("ZREM", deadlines, process)
  else
    redis.call("HSET", entries, process, ARGV[i + 1])
    redis.call("ZADD", deadlines, deadline, process)
    -- Keys outlive the newest deadline a little, so a tool nobody watches any more
    -- leaves nothing behind.
    redis.call("PEXPIRE", entries, ttl)
    redis.call("PEXPIRE", deadlines, ttl)
  end
end
return #ARGV
