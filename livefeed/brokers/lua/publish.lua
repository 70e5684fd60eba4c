#!lua
-- Store and publish a whole batch, atomically (one script runs alone in Redis).
-- The shebang makes Redis refuse the script up front when it is out of memory,
-- instead of failing half way through the writes.
--
-- ARGV: prefix, live prefix (of the pub/sub channels), history size, idempotency
--       ttl (s), operation id, operation ttl (s), event count, then per event:
--       idempotency key ("" for none), envelope tail, tool count, tools...
-- Keys are derived from the prefix, so this script needs a single Redis (no Cluster).
-- Pub/sub is not scoped by database, so the live prefix also names the database.
-- Returns, per event, "tool id tool id ..." (a repeated key returns the first ids),
-- and keeps that answer, "\n"-joined, under "op:<operation id>" for the operation
-- ttl: a publisher whose reply was lost reads it back with settle.lua.
local prefix, live, size, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4]
local op, op_ttl = prefix .. "op:" .. ARGV[5], ARGV[6]
local count = tonumber(ARGV[7])
local first = 8

-- An operation runs at most once. If settle.lua got there first (the publisher
-- gave up on this call and was told it stored nothing), a late run does nothing.
if redis.call("EXISTS", op) == 1 then
  return redis.error_reply("LIVEFEED_SETTLED this publish was already settled; nothing was done")
end

-- Check every key the batch touches before writing any: Redis does not undo a
-- script's writes when it fails part-way, so a failure must come before them.
local checked = {}
local function misfit(key, wanted)
  if checked[key] then
    return nil
  end
  checked[key] = true
  local found = redis.call("TYPE", key)["ok"]
  if found ~= "none" and found ~= wanted then
    return redis.error_reply(
      "LIVEFEED_KEYTYPE Redis key " .. key .. " holds a " .. found .. " where livefeed keeps a "
        .. wanted .. "; nothing of the batch was stored"
    )
  end
  return nil
end

-- Likewise every write the batch needs must be one Redis's ACL lets this user run: a
-- command refused part-way (PUBLISH to a channel the user was not granted; Redis 7
-- gives a new user no channels) would leave the writes before it in place.
local function denied(command, target, ...)
  if redis.acl_check_cmd(command, target, ...) then
    return nil
  end
  return redis.error_reply(
    "LIVEFEED_NOPERM the Redis user may not run " .. command .. " " .. target
      .. "; nothing of the batch was stored"
  )
end

local ready = {}
local function unfit(channel)
  if ready[channel] then
    return nil
  end
  ready[channel] = true
  local stream = prefix .. "s:" .. channel
  return misfit(stream, "stream")
    or denied("XADD", stream, "MAXLEN", "1", "*", "d", "x")
    or denied("XRANGE", stream, "-", "+", "COUNT", "1")
    or denied("SET", prefix .. "t:" .. channel, "x")
    or denied("PUBLISH", live .. channel, "x")
end

local bad = unfit("*") or denied("SET", op, "x", "EX", "1")
if bad then
  return bad
end
local i = first
for _ = 1, count do
  local idem, ntools = ARGV[i], tonumber(ARGV[i + 2])
  if idem ~= "" then
    local key = prefix .. "idem:" .. idem
    bad = misfit(key, "string") or denied("SET", key, "x", "EX", "1")
    if bad then
      return bad
    end
  end
  for t = 0, ntools - 1 do
    bad = unfit(ARGV[i + 3 + t])
    if bad then
      return bad
    end
  end
  i = i + 3 + ntools
end

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
i = first
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
      redis.call("PUBLISH", live .. tool, id .. " " .. tool .. " " .. tail)
      local fid = append("*", "o", tool, "d", tail)
      redis.call("PUBLISH", live .. "*", fid .. " " .. tool .. " " .. tail)
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
redis.call("SET", op, table.concat(results, "\n"), "EX", op_ttl)
return results
