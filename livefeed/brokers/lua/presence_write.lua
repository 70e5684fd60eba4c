#!lua
-- Set or remove one process's presence entries, each with a deadline.
-- ARGV: prefix, process id, deadline (ms), key ttl (ms), then per tool: tool, entry
--       (entry "" removes it). Per tool, hash "pres:<tool>" holds process -> entry and
-- sorted set "presx:<tool>" process -> deadline; readers skip and purge expired ones.
local prefix, process, deadline, ttl = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
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
