#!lua
-- Read the live presence entries of several tools, purging expired ones on the way.
-- ARGV: prefix, tools...  Returns per tool a flat list process, entry, ...
-- "Now" is Redis's clock, as the deadlines presence_write.lua set.
local prefix = ARGV[1]
local time = redis.call("TIME")
local now = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local result = {}
for i = 2, #ARGV do
  local entries, deadlines = prefix .. "pres:" .. ARGV[i], prefix .. "presx:" .. ARGV[i]
  local expired = redis.call("ZRANGEBYSCORE", deadlines, "-inf", now)
  if #expired > 0 then
    redis.call("ZREMRANGEBYSCORE", deadlines, "-inf", now)
    redis.call("HDEL", entries, unpack(expired))
  end
  result[#result + 1] = redis.call("HGETALL", entries)
end
return result
