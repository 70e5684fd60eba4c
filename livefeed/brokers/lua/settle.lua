#!lua flags=allow-oom
-- Settle a publish whose reply was lost (a timeout, or the connection dropped
-- after the script was sent): did it run?
--
-- ARGV: the operation's key ("<prefix>op:<operation id>"), its ttl (s).
-- Returns what publish.lua stored ("tool id ..." per event, "\n"-joined), or ""
-- when it has not run; from then on it never will, because publish.lua does
-- nothing once the key exists. Asking again gives the same answer, so a settle
-- whose own reply is lost is simply asked again. allow-oom: the fence must hold
-- even when Redis is out of memory (it is one short string).
local stored = redis.call("GET", ARGV[1])
if stored then
  return stored
end
redis.call("SET", ARGV[1], "", "EX", ARGV[2])
return ""
