//! Lua scripts: each runs atomically, so a task's status, its stream entry and the
//! counters never disagree in a way that could lose a task or run an acknowledged one.
//!
//! Every key a script touches belongs to one queue, so all of them share the queue's
//! hash tag (`cortex:tasks:{name}:…`) and hash slot, as Redis Cluster requires. Each
//! script is handed its keys in `KEYS`, with one exception that cannot know them in
//! advance: `take` learns its task ids from the entries it reads, and builds their
//! record keys from the queue's task key prefix; it checks first that the prefix
//! carries the same hash tag as its streams, so those keys are in their slot too (a
//! cluster node lets a script touch undeclared keys of the slot it was sent for).
//!
//! Every script that writes follows two rules:
//!
//! * Its reads come first, and its first write is one that Redis refuses when it cannot
//!   take writes (out of memory with `noeviction`, `MISCONF`, a read-only replica).
//!   Redis only refuses a script's write before the script wrote anything (it lets a
//!   script that has written finish), so a refused script changed nothing and is
//!   simply sent again later.
//! * An error that belongs to one entry (its task record is not a hash, its id is not a
//!   task id) is caught and reported for that entry alone, so that the worker parks it
//!   in the dead-letter stream; it cannot fail the batch it came in, again and again.

use redis::Script;

/// Helpers every script shares.
const PRELUDE: &str = r"
local function errtext(e)
  if type(e) == 'table' then return tostring(e.err) end
  return tostring(e)
end

-- An error raised by a command on one entry's own key: the entry is parked. Anything
-- else (out of memory, read-only, a bug here) fails the script, which is retried.
local function entry_error(msg)
  return string.sub(msg, 1, 10) == 'WRONGTYPE ' or string.sub(msg, 1, 4) == 'ERR '
end

-- Task ids are written as 16 lowercase hex digits; anything else is a foreign entry.
local function valid_id(id)
  return type(id) == 'string' and #id == 16 and not string.find(id, '[^0-9a-f]')
end
";

/// Starts one attempt.
///
/// `try_start(id, key, token, now, max, stats, ttl)` (`key` is the task record's key)
/// returns `{code, attempts, error}`
/// or `nil, message` for an error that must fail the script. Codes: 1 run it (attempts
/// counts this one), 0 no record, 2 cancelled (a cancel was requested while a dead
/// worker ran it), 3 already final, 4 attempts exhausted (a worker died during the last
/// one), 5 bad entry (`error` says why: park it).
///
/// `token` names the start request: consumer, entry id and the worker's count of starts
/// for that entry. The same request twice (its reply was lost and it was sent again)
/// starts one attempt: the second finds the task running under its token and counts
/// nothing.
const START_ONE: &str = r"
local function start_one(key, token, now, max, stats, ttl)
  local v = redis.call('HMGET', key, 'status', 'attempts', 'cancel', 'start')
  local status = v[1]
  local attempts = tonumber(v[2] or '0') or 0
  if not status then
    return {0, 0, ''}
  elseif status == 'completed' or status == 'failed' or status == 'cancelled' then
    return {3, attempts, ''}
  elseif v[3] then
    redis.call('HSET', key, 'status', 'cancelled', 'finished_at', now)
    redis.call('PEXPIRE', key, ttl)
    pcall(redis.call, 'HINCRBY', stats, 'cancelled', 1)
    return {2, attempts, ''}
  elseif status == 'running' and v[4] == token then
    return {1, attempts, ''}
  elseif attempts >= max then
    return {4, attempts, ''}
  end
  attempts = attempts + 1
  redis.call('HSET', key, 'status', 'running', 'started_at', now, 'attempts', attempts,
    'start', token)
  return {1, attempts, ''}
end

local function try_start(id, key, token, now, max, stats, ttl)
  if not valid_id(id) then
    return {5, 0, 'malformed stream entry: its id field ' .. string.format('%q', tostring(id))
      .. ' is not a task id'}
  end
  local ok, r = pcall(start_one, key, token, now, max, stats, ttl)
  if ok then return r end
  local msg = errtext(r)
  if entry_error(msg) then
    return {5, 0, 'task record ' .. key .. ' is unusable: ' .. msg}
  end
  return nil, msg
end
";

/// Starts a batch of attempts of entries already delivered.
///
/// `KEYS`: the stats hash, then the task record of each entry. `ARGV`: now (ms), max
/// attempts, result ttl (ms), then `id, token` per entry, in the order of the records.
/// Returns `{code, attempts, error}` per entry, as `try_start`.
pub(crate) fn start_script() -> String {
    format!(
        "{PRELUDE}{START_ONE}
local out = {{}}
local max = tonumber(ARGV[2])
for i = 4, #ARGV, 2 do
  local key = KEYS[(i - 4) / 2 + 2]
  local r, fatal = try_start(ARGV[i], key, ARGV[i + 1], ARGV[1], max, KEYS[1], ARGV[3])
  if not r then return redis.error_reply(fatal) end
  out[#out + 1] = r
end
return out
"
    )
}

/// Reads up to `count` new entries, highest priority first, and starts them, in one
/// round trip. Unlike one `XREADGROUP` over three streams (whose `COUNT` is per stream),
/// this never takes more entries than there are free slots.
///
/// `KEYS`: the three streams, highest first, the stats hash. `ARGV`: group, consumer,
/// count, task key prefix (a record's key is the prefix and the entry's id field; the
/// prefix must carry the streams' hash tag), now (ms), max attempts, result ttl (ms).
/// Each start's token is
/// `{consumer} {entry id} 0`. Returns per entry `{stream index (0-based), entry id, task
/// id, handler, payload, code, attempts, error, traceparent}` (an entry without a
/// traceparent, such as one enqueued by an earlier release, gives an empty one).
///
/// If it fails after reading (only an error that is no entry's fault can do that), the
/// entries read stay pending for this consumer; the worker recovers them.
pub(crate) fn take_script() -> String {
    format!(
        "{PRELUDE}{START_ONE}
local n = tonumber(ARGV[3])
local max = tonumber(ARGV[6])
local prefix = ARGV[4]
-- The records are not in KEYS (their ids come from the entries read): they must share
-- the streams' hash tag, hence their slot, or a cluster node would refuse them.
local tag = string.match(KEYS[1], '^[^{{]*{{[^}}]+}}')
if not tag or string.sub(prefix, 1, #tag) ~= tag then
  return redis.error_reply('ERR task key prefix ' .. prefix .. ' is not in the hash slot of ' .. KEYS[1])
end
local out = {{}}
for s = 1, 3 do
  if n <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[s], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      local f = e[2] or {{}}
      local id, handler, payload, tp = '', '', '', ''
      for i = 1, #f, 2 do
        if f[i] == 'id' then id = f[i + 1]
        elseif f[i] == 'handler' then handler = f[i + 1]
        elseif f[i] == 'payload' then payload = f[i + 1]
        elseif f[i] == 'traceparent' then tp = f[i + 1] end
      end
      local token = ARGV[2] .. ' ' .. e[1] .. ' 0'
      local st, fatal = try_start(id, prefix .. id, token, ARGV[5], max, KEYS[4], ARGV[7])
      if not st then return redis.error_reply(fatal) end
      out[#out + 1] = {{s - 1, e[1], id, handler, payload, st[1], st[2], st[3], tp}}
      n = n - 1
    end
  end
end
return out
"
    )
}

/// Fields per entry in the finish script's `ARGV`.
pub(crate) const FINISH_FIELDS: usize = 8;

/// Records the outcomes of a batch and acknowledges their entries, all or nothing.
///
/// `KEYS`: the three streams, the dead-letter stream, the stats hash, then the task
/// record of each entry (in the order of the entries). `ARGV`: group, now (ms), result
/// ttl (ms), dead-letter cap (0: none), then per entry [`FINISH_FIELDS`] fields: stream index, entry id, task id, kind (`c`
/// completed, `d` dead, `p` parked: dead letter only, the record is unusable or there is
/// none, `x` cancelled, `s` acknowledge only), text (result JSON or error), attempts,
/// handler, payload (the last two for dead letters only).
///
/// Only entries still pending in the group are finished: one that is not was finished
/// already, by another worker that reclaimed it or by this very batch when its reply
/// was lost, so a batch sent twice counts once and a task gets one final outcome (the
/// first worker to finish it records it). Returns `{dead letters trimmed, code per
/// entry}`: 0 not pending (nothing written), 1 recorded, 2 parked (the record could not
/// be written; the dead letter says why).
pub(crate) fn finish_script() -> String {
    format!(
        "{PRELUDE}
local group, now, ttl = ARGV[1], ARGV[2], ARGV[3]
local cap = tonumber(ARGV[4])
local W, FIRST = {FINISH_FIELDS}, 5
local n = (#ARGV - FIRST + 1) / W
-- Checked before anything is written: a dead-letter key of another type (someone else's
-- data) fails the batch as a whole.
for j = 1, n do
  local kind = ARGV[FIRST + (j - 1) * W + 3]
  if kind == 'd' or kind == 'p' then
    local t = redis.call('TYPE', KEYS[4])
    if type(t) == 'table' then t = t.ok end
    if t ~= 'stream' and t ~= 'none' then
      return redis.error_reply('ERR dead-letter key ' .. KEYS[4] .. ' holds a ' .. tostring(t)
        .. ', not a stream')
    end
    break
  end
end
-- The first write, one Redis refuses when it cannot take writes: then nothing at all is
-- written (Redis only refuses a script's writes until its first one).
local ok, e = pcall(redis.call, 'HINCRBY', KEYS[5], 'completed', 0)
if not ok and not entry_error(errtext(e)) then return redis.error_reply(errtext(e)) end
local out, ids = {{}}, {{{{}}, {{}}, {{}}}}
for j = 1, n do
  local i = FIRST + (j - 1) * W
  local a = ids[tonumber(ARGV[i]) + 1]
  a[#a + 1] = ARGV[i + 1]
  out[j] = 1
  -- A parked entry may have no record to tell by: ask the group, before the XACK below.
  if ARGV[i + 3] == 'p' and #redis.call('XPENDING', KEYS[tonumber(ARGV[i]) + 1], group,
      ARGV[i + 1], ARGV[i + 1], 1) == 0 then
    out[j] = 0
  end
end
-- Acknowledge every entry at once. When XACK counts them all, all were pending (the
-- usual case); when it counts fewer, some were finished before (by another worker, or
-- by this batch when its reply was lost), and their records say which: their status is
-- final, or gone with the record.
for s = 1, 3 do
  local a = ids[s]
  if #a > 0 and redis.call('XACK', KEYS[s], group, unpack(a)) < #a then
    for j = 1, n do
      local i = FIRST + (j - 1) * W
      if tonumber(ARGV[i]) + 1 == s and ARGV[i + 3] ~= 'p' and ARGV[i + 3] ~= 's' then
        local ok, st = pcall(redis.call, 'HGET', KEYS[5 + j], 'status')
        if ok and (not st or st == 'completed' or st == 'failed' or st == 'cancelled') then
          out[j] = 0
        end
      end
    end
  end
  if #a > 0 then
    -- Acknowledged entries are deleted, so a stream only holds live tasks.
    redis.call('XDEL', KEYS[s], unpack(a))
  end
end
local completed, failed, cancelled, dead = 0, 0, 0, 0
for j = 1, n do
  local i = FIRST + (j - 1) * W
  if out[j] == 1 and ARGV[i + 3] ~= 's' then
    local key = KEYS[5 + j]
    local kind, text = ARGV[i + 3], ARGV[i + 4]
    local ok, e = true, nil
    if kind == 'c' then
      ok, e = pcall(redis.call, 'HSET', key, 'status', 'completed', 'result', text, 'finished_at', now)
    elseif kind == 'd' then
      ok, e = pcall(redis.call, 'HSET', key, 'status', 'failed', 'error', text,
        'attempts', ARGV[i + 5], 'finished_at', now)
    elseif kind == 'x' then
      ok, e = pcall(redis.call, 'HSET', key, 'status', 'cancelled', 'finished_at', now)
    end
    if not ok then
      -- Past the first write nothing may fail the script (the entries are acknowledged
      -- already): whatever the error, the outcome goes to the dead-letter stream.
      local msg = errtext(e)
      if kind == 'c' then text = 'completed, but ' .. key .. ' could not record it: ' .. msg
      else text = text .. ' (and ' .. key .. ' could not record it: ' .. msg .. ')' end
      kind = 'p'
      out[j] = 2
    elseif kind == 'c' or kind == 'd' or kind == 'x' then
      redis.call('PEXPIRE', key, ttl)
    end
    if kind == 'd' or kind == 'p' then
      redis.call('XADD', KEYS[4], '*', 'id', ARGV[i + 2], 'handler', ARGV[i + 6],
        'payload', ARGV[i + 7], 'error', text, 'attempts', ARGV[i + 5])
      dead = dead + 1
      failed = failed + 1
    elseif kind == 'c' then
      completed = completed + 1
    elseif kind == 'x' then
      cancelled = cancelled + 1
    end
  end
end
local trimmed = 0
if dead > 0 and cap > 0 then
  trimmed = redis.call('XTRIM', KEYS[4], 'MAXLEN', cap)
end
for field, c in pairs({{completed = completed, failed = failed, cancelled = cancelled}}) do
  if c > 0 then pcall(redis.call, 'HINCRBY', KEYS[5], field, c) end
end
table.insert(out, 1, trimmed)
return out
"
    )
}

/// Resets the idle time of the entries a worker holds, but only of those still pending
/// for it: an entry another worker reclaimed stays with that worker.
///
/// `KEYS`: the three streams, the workers sorted set. `ARGV`: group, consumer, idle to
/// set (ms), heartbeat score (unix ms, or empty for none), then `stream index, entry id`
/// per entry. Returns `stream index, entry id` of every entry no longer this
/// consumer's.
pub(crate) fn refresh_script() -> String {
    format!(
        "{PRELUDE}
local group, me = ARGV[1], ARGV[2]
local mine, lost = {{{{}}, {{}}, {{}}}}, {{}}
for i = 5, #ARGV, 2 do
  local s = tonumber(ARGV[i]) + 1
  local p = redis.call('XPENDING', KEYS[s], group, ARGV[i + 1], ARGV[i + 1], 1)
  if p[1] and p[1][2] == me then
    local m = mine[s]
    m[#m + 1] = ARGV[i + 1]
  else
    lost[#lost + 1] = ARGV[i]
    lost[#lost + 1] = ARGV[i + 1]
  end
end
for s = 1, 3 do
  local m = mine[s]
  for c = 1, #m, 1000 do
    local args = {{'XCLAIM', KEYS[s], group, me, 0}}
    for k = c, math.min(c + 999, #m) do args[#args + 1] = m[k] end
    args[#args + 1] = 'IDLE'
    args[#args + 1] = ARGV[3]
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
  end
end
if ARGV[4] ~= '' then
  -- Best effort: refused when Redis is out of memory and nothing was claimed.
  pcall(redis.call, 'ZADD', KEYS[4], ARGV[4], me)
end
return lost
"
    )
}

/// Forgets consumers of dead workers: removes from the group every consumer, other than
/// the caller, that has no pending entry and has been idle longer than `max idle`, and
/// from the workers set every worker whose heartbeat is older than `cutoff`. Atomic, so a
/// consumer cannot read an entry between the check and its removal (which would drop
/// that entry from the group's pending list).
///
/// `KEYS`: the three streams, the workers sorted set. `ARGV`: group, consumer, max idle
/// (ms), cutoff (unix ms). Returns how many consumers were removed.
pub(crate) const PRUNE: &str = r"
local removed = 0
for s = 1, 3 do
  local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[s], ARGV[1])
  if ok then
    for _, c in ipairs(consumers) do
      local name, pending, idle
      for i = 1, #c, 2 do
        if c[i] == 'name' then name = c[i + 1]
        elseif c[i] == 'pending' then pending = c[i + 1]
        elseif c[i] == 'idle' then idle = c[i + 1] end
      end
      if name and name ~= ARGV[2] and pending == 0 and idle and idle > tonumber(ARGV[3]) then
        redis.call('XGROUP', 'DELCONSUMER', KEYS[s], ARGV[1], name)
        removed = removed + 1
      end
    end
  end
end
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', '(' .. ARGV[4])
return removed
";

/// Enqueues tasks: a record and a stream entry each, and the counter, all or nothing.
///
/// `KEYS`: the stream, the stats hash, then the record of each task. `ARGV`: handler,
/// priority, now (ms), traceparent (empty: none, and the entry gets no such field, as
/// before there was one), the request token, then `id, payload` per task, in the order
/// of the records. If a record already exists under one of the ids, nothing is written
/// and the 0-based positions of the taken ids are returned (the caller draws new ones);
/// else returns an empty array.
///
/// The token names the request (random per `enqueue_many` call) and is kept in each
/// record (`enq`). The same request sent again after its reply was lost (a cluster
/// client resends a command whose connection broke, and the first may have run) finds
/// its first record under its own token: the tasks are already enqueued, so it writes
/// nothing and returns an empty array, instead of reporting the ids taken and having
/// them enqueued a second time under new ids.
pub(crate) const ENQUEUE: &str = r"
local keys = {}
for k = 3, #KEYS do keys[#keys + 1] = KEYS[k] end
-- One EXISTS per thousand ids; one per id only when some id is taken.
for c = 1, #keys, 1000 do
  if redis.call('EXISTS', unpack(keys, c, math.min(c + 999, #keys))) > 0 then
    -- All or nothing: a record of this very request means all of it was written.
    if redis.call('TYPE', keys[1]).ok == 'hash'
      and redis.call('HGET', keys[1], 'enq') == ARGV[5] then
      return {}
    end
    local taken = {}
    for k = 1, #keys do
      if redis.call('EXISTS', keys[k]) == 1 then taken[#taken + 1] = k - 1 end
    end
    return taken
  end
end
for i = 6, #ARGV, 2 do
  if ARGV[4] == '' then
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'handler', ARGV[1], 'payload', ARGV[i + 1])
  else
    redis.call('XADD', KEYS[1], '*', 'id', ARGV[i], 'handler', ARGV[1], 'payload', ARGV[i + 1],
      'traceparent', ARGV[4])
  end
  redis.call('HSET', keys[(i - 4) / 2], 'status', 'queued', 'handler', ARGV[1],
    'priority', ARGV[2], 'queued_at', ARGV[3], 'enq', ARGV[5])
end
pcall(redis.call, 'HINCRBY', KEYS[2], 'enqueued', #keys)
return {}
";

/// Cancels one task. `KEYS`: task hash, stats hash; `ARGV`: now (ms), result ttl (ms).
pub(crate) const CANCEL: &str = r"
local s = redis.call('HGET', KEYS[1], 'status')
if not s then return 'unknown' end
if s == 'completed' or s == 'failed' or s == 'cancelled' then return 'finished' end
if s == 'running' then
  redis.call('HSET', KEYS[1], 'cancel', '1')
  return 'requested'
end
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'finished_at', ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], 'cancelled', 1)
return 'cancelled'
";

/// Counts waiting and delivered entries. `KEYS`: the three streams; `ARGV`: group.
/// Returns `{stream entries, pending}`; a missing stream or group counts as empty.
pub(crate) const COUNTS: &str = r"
local len, pending = 0, 0
for i = 1, #KEYS do
  len = len + redis.call('XLEN', KEYS[i])
  local ok, p = pcall(redis.call, 'XPENDING', KEYS[i], ARGV[1])
  if ok and type(p) == 'table' then pending = pending + (tonumber(p[1]) or 0) end
end
return {len, pending}
";

/// Hands back tasks a shutting-down worker aborted: an attempt cut short by shutdown is
/// not the task's fault, so it does not count. `KEYS`: the tasks' records.
pub(crate) const RELEASE: &str = r"
for i = 1, #KEYS do
  local key = KEYS[i]
  if redis.call('HGET', key, 'status') == 'running' then
    redis.call('HSET', key, 'status', 'queued')
    redis.call('HDEL', key, 'start')
    if tonumber(redis.call('HGET', key, 'attempts') or '0') > 0 then
      redis.call('HINCRBY', key, 'attempts', -1)
    end
  end
end
return 0
";

/// The compiled scripts (their SHA1 is computed once).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) start: Script,
    pub(crate) take: Script,
    pub(crate) finish: Script,
    pub(crate) refresh: Script,
    pub(crate) prune: Script,
    pub(crate) enqueue: Script,
    pub(crate) cancel: Script,
    pub(crate) counts: Script,
    pub(crate) release: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            start: Script::new(&start_script()),
            take: Script::new(&take_script()),
            finish: Script::new(&finish_script()),
            refresh: Script::new(&refresh_script()),
            prune: Script::new(PRUNE),
            enqueue: Script::new(ENQUEUE),
            cancel: Script::new(CANCEL),
            counts: Script::new(COUNTS),
            release: Script::new(RELEASE),
        }
    }
}
