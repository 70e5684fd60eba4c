#!lua flags=no-writes
-- Read a stream after a cursor, with what it takes to tell whether the cursor is
-- still covered (see livefeed.history.is_recoverable), in one consistent snapshot.
-- ARGV: stream key, trimmed-id key, cursor id, count.
-- Returns {} when the stream does not exist, else
--   {last-generated-id, newest trimmed id, first kept id or "", entries after cursor}.
local stream, trimmed, since, count = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if redis.call("EXISTS", stream) == 0 then
  return {}
end
local info = redis.call("XINFO", "STREAM", stream)
local last, first = "", ""
for i = 1, #info, 2 do
  local name = info[i]
  if name == "last-generated-id" then
    last = info[i + 1]
  elseif name == "first-entry" and info[i + 1] then
    first = info[i + 1][1]
  end
end
local after = redis.call("XRANGE", stream, "(" .. since, "+", "COUNT", count)
return {last, redis.call("GET", trimmed) or "0-0", first, after}
