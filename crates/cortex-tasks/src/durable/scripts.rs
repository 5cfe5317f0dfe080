//! Lua scripts: each runs atomically, so a task's status and its stream entry never
//! disagree in a way that could run an acknowledged task again.

use redis::Script;

/// Starts one attempt, shared by [`start_script`] and [`take_script`]: `start_one(id, prefix, now, max,
/// stats, ttl)` returns `{code, attempts}`: 1 run it (attempts now counts this one), 0 no
/// record, 2 cancelled (a cancel was requested while a dead worker ran it), 3 already
/// final, 4 attempts exhausted (a worker died during the last one).
const START_ONE: &str = r"
local function start_one(id, prefix, now, max, stats, ttl)
  local key = prefix .. id
  local v = redis.call('HMGET', key, 'status', 'attempts', 'cancel')
  local status = v[1]
  local attempts = tonumber(v[2] or '0') or 0
  if not status then
    return {0, 0}
  elseif status == 'completed' or status == 'failed' or status == 'cancelled' then
    return {3, attempts}
  elseif v[3] then
    redis.call('HSET', key, 'status', 'cancelled', 'finished_at', now)
    redis.call('PEXPIRE', key, ttl)
    redis.call('HINCRBY', stats, 'cancelled', 1)
    return {2, attempts}
  elseif attempts >= max then
    return {4, attempts}
  end
  attempts = attempts + 1
  redis.call('HSET', key, 'status', 'running', 'started_at', now, 'attempts', attempts)
  return {1, attempts}
end
";

/// Starts a batch of attempts of entries already delivered.
///
/// `ARGV`: task key prefix, now (ms), max attempts, stats key, result ttl (ms), then ids.
/// Returns `{code, attempts}` per id, as `start_one`.
pub(crate) fn start_script() -> String {
    format!(
        "{START_ONE}
local out = {{}}
local max = tonumber(ARGV[3])
for i = 6, #ARGV do
  out[#out + 1] = start_one(ARGV[i], ARGV[1], ARGV[2], max, ARGV[4], ARGV[5])
end
return out
"
    )
}

/// Reads up to `count` new entries, highest priority first, and starts them, in one
/// round trip. Unlike one `XREADGROUP` over three streams (whose `COUNT` is per stream),
/// this never takes more entries than there are free slots.
///
/// `KEYS`: the three streams, highest first. `ARGV`: group, consumer, count, task key
/// prefix, now (ms), max attempts, stats key, result ttl (ms). Returns per entry
/// `{stream index (0-based), entry id, task id, handler, payload, code, attempts}`.
pub(crate) fn take_script() -> String {
    format!(
        "{START_ONE}
local n = tonumber(ARGV[3])
local max = tonumber(ARGV[6])
local out = {{}}
for s = 1, #KEYS do
  if n <= 0 then break end
  local r = redis.call('XREADGROUP', 'GROUP', ARGV[1], ARGV[2], 'COUNT', n, 'STREAMS', KEYS[s], '>')
  if r then
    for _, e in ipairs(r[1][2]) do
      local f = e[2]
      local id, handler, payload = '', '', ''
      for i = 1, #f, 2 do
        if f[i] == 'id' then id = f[i + 1]
        elseif f[i] == 'handler' then handler = f[i + 1]
        elseif f[i] == 'payload' then payload = f[i + 1] end
      end
      local st = start_one(id, ARGV[4], ARGV[5], max, ARGV[7], ARGV[8])
      out[#out + 1] = {{s - 1, e[1], id, handler, payload, st[1], st[2]}}
      n = n - 1
    end
  end
end
return out
"
    )
}

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

/// The compiled scripts (their SHA1 is computed once).
#[derive(Debug)]
pub(crate) struct Scripts {
    pub(crate) start: Script,
    pub(crate) take: Script,
    pub(crate) cancel: Script,
    pub(crate) counts: Script,
    pub(crate) release: Script,
}

impl Scripts {
    pub(crate) fn new() -> Self {
        Self {
            start: Script::new(&start_script()),
            take: Script::new(&take_script()),
            cancel: Script::new(CANCEL),
            counts: Script::new(COUNTS),
            release: Script::new(RELEASE),
        }
    }
}

/// Hands back tasks a shutting-down worker aborted: an attempt cut short by shutdown is
/// not the task's fault, so it does not count. `ARGV`: task key prefix, then ids.
pub(crate) const RELEASE: &str = r"
for i = 2, #ARGV do
  local key = ARGV[1] .. ARGV[i]
  if redis.call('HGET', key, 'status') == 'running' then
    redis.call('HSET', key, 'status', 'queued')
    if tonumber(redis.call('HGET', key, 'attempts') or '0') > 0 then
      redis.call('HINCRBY', key, 'attempts', -1)
    end
  end
end
return 0
";
