#!lua
-- Read the live presence entries of several tools, purging expired ones on the way.
-- ARGV: prefix, now (ms), tools...  Returns per tool a flat list process, entry, ...
local prefix, now = ARGV[1], ARGV[2]
local result = {}
for i = 3, #ARGV do
  local entries, deadlines = prefix .. "pres:" .. ARGV[i], prefix .. "presx:" .. ARGV[i]
  local expired = redis.call("ZRANGEBYSCORE", deadlines, "-inf", now)
  if #expired > 0 then
    redis.call("ZREMRANGEBYSCORE", deadlines, "-inf", now)
    redis.call("HDEL", entries, unpack(expired))
  end
  result[#result + 1] = redis.call("HGETALL", entries)
end
return result
