//! The Lua scripts that make writes replay-safe, and set each key's value and TTL in one
//! atomic step. The keys of one call always share a hash slot (most scripts touch one
//! key), so each works unchanged on Redis Cluster.
//!
//! They are invoked with EVALSHA inside the batch pipeline; after a Redis restart the
//! script cache is empty, and the writer loads them again on NOSCRIPT and retries.

use std::sync::LazyLock;

use redis::{Cmd, Script};

/// The argument that makes a script keep a key's TTL when the key already lives longer
/// than the one given (an aggregate whose members expire with their events, with
/// `cache.ttl_from = "event"`); `""` sets the TTL given in every case.
pub(crate) const KEEP_LONGER: &str = "keep_longer";

/// `expire(key, ttl, keep)`: `EXPIRE key ttl`, unless `keep` is [`KEEP_LONGER`] and the
/// key already lives longer. `TTL` is -1 for a key without one, which is always set.
macro_rules! expire_lua {
    () => {
        r#"
local function expire(key, ttl, keep)
  if keep == '' or redis.call('TTL', key) < tonumber(ttl) then
    redis.call('EXPIRE', key, ttl)
  end
end
"#
    };
}

/// `SET key json EX ttl` for each of its keys, unless the stored JSON is newer.
///
/// KEYS: the keys, all on one hash slot. ARGV[1]: the name of the top-level string field
/// that orders versions; ARGV[2]: the ceiling, the latest canonical value taken as true;
/// then, key by key, the new JSON, the new version (a prefix of that field's canonical,
/// fixed-width, string-comparable value, or '' to write unconditionally) and the key's
/// TTL in seconds. The stored value's field is compared on the same prefix, so a version
/// may be coarser than the field (a trend's `window_end` to the second). A stored version
/// past the ceiling (from a clock in the future) never counts as newer.
///
/// The stored value is written by this service with serde_json, which escapes every quote
/// inside strings, so the first `"field":"` is the top-level field: no JSON decode needed.
///
/// One call writes many keys (a batch's trend details, per hash slot) rather than one call
/// each. So that a key Redis refuses (another writer's hash, say) stops none of the
/// others, every command goes through `pcall`, and the reply is the keys not written: a
/// flat array of (position in KEYS from 1, Redis's error), empty when all were handled.
/// Whether an error is about the key or about Redis's state (OOM, READONLY) is the
/// caller's to say, as for a command's own error (`conn::sort_replies`).
pub(crate) static SET_IF_NOT_OLDER: LazyLock<Script> =
    LazyLock::new(|| Script::new(SET_IF_NOT_OLDER_SRC));
const SET_IF_NOT_OLDER_SRC: &str = r#"
local field, ceiling = '"' .. ARGV[1] .. '":"', ARGV[2]
local refused = {}
local function failed(i, reply)
  if type(reply) == 'table' and reply.err then
    refused[#refused + 1] = i
    refused[#refused + 1] = reply.err
    return true
  end
  return false
end
for i, key in ipairs(KEYS) do
  local json, order, ttl = ARGV[3 * i], ARGV[3 * i + 1], ARGV[3 * i + 2]
  local old = false
  if order ~= '' then
    old = redis.pcall('GET', key)
  end
  if not failed(i, old) then
    local newer = false
    if old then
      local _, last = string.find(old, field, 1, true)
      local stop = last and string.find(old, '"', last + 1, true)
      local stored = stop and string.sub(old, last + 1, math.min(stop - 1, last + #order))
      newer = stored and stored > order and stored <= string.sub(ceiling, 1, #order)
    end
    if not newer then
      failed(i, redis.pcall('SET', key, json, 'EX', ttl))
    end
  end
end
return refused
"#;

/// Adds keywords to `trends:current` unless the member already sits in a newer window
/// (one no later than the ceiling: a window from a clock in the future is replaced),
/// then refreshes the TTL. The window is decoded from the score as in
/// `schema::window_of_score`.
///
/// KEYS[1]: `trends:current`. ARGV[1]: TTL in seconds; ARGV[2]: [`KEEP_LONGER`] or '';
/// ARGV[3]: the ceiling, the latest `window_end` taken as true, in unix seconds; then
/// (score, member) pairs, each
/// member once (a `WriteSet` holds one alert per keyword): every member is compared with
/// the score it had before the call. Returns how many members were written. One ZMSCORE
/// and one ZADD per chunk of members rather than two commands per member.
pub(crate) static ZADD_IF_NOT_OLDER: LazyLock<Script> =
    LazyLock::new(|| Script::new(ZADD_IF_NOT_OLDER_SRC));
const ZADD_IF_NOT_OLDER_SRC: &str = concat!(
    expire_lua!(),
    r#"
local count = (#ARGV - 3) / 2
local ceiling = tonumber(ARGV[3])
local written = 0
for first = 1, count, 500 do
  local members = {}
  for i = first, math.min(first + 499, count) do
    members[#members + 1] = ARGV[2 * i + 3]
  end
  local olds = redis.call('ZMSCORE', KEYS[1], unpack(members))
  local fresh = {}
  for j, member in ipairs(members) do
    local score = ARGV[2 * (first + j - 1) + 2]
    local old = olds[j] and tonumber(olds[j])
    local old_window = old and math.floor((999999 - old) / 1000000)
    if not old or old_window > ceiling or old_window <= math.floor((999999 - tonumber(score)) / 1000000) then
      fresh[#fresh + 1] = score
      fresh[#fresh + 1] = member
    end
  end
  if #fresh > 0 then
    redis.call('ZADD', KEYS[1], unpack(fresh))
    written = written + #fresh / 2
  end
end
expire(KEYS[1], ARGV[1], ARGV[2])
return written
"#
);

/// `HSET` and `EXPIRE` of one hash, atomically, so that no reader (and no sweep) ever
/// sees the hash without its TTL.
///
/// KEYS[1]: the hash. ARGV[1]: TTL in seconds; ARGV[2]: [`KEEP_LONGER`] or ''; then
/// (field, value) pairs.
pub(crate) static HSET_EXPIRE: LazyLock<Script> = LazyLock::new(|| Script::new(HSET_EXPIRE_SRC));
const HSET_EXPIRE_SRC: &str = concat!(
    expire_lua!(),
    r#"
for i = 3, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
expire(KEYS[1], ARGV[1], ARGV[2])
return 1
"#
);

/// `ZADD` (optionally `GT`) and `EXPIRE` of one sorted set, atomically.
///
/// KEYS[1]: the sorted set. ARGV[1]: TTL in seconds; ARGV[2]: `GT` or ''; ARGV[3]:
/// [`KEEP_LONGER`] or ''; then (score, member) pairs. Chunked, because Lua's `unpack`
/// takes a bounded number of values.
pub(crate) static ZADD_EXPIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ZADD_EXPIRE_SRC));
const ZADD_EXPIRE_SRC: &str = concat!(
    expire_lua!(),
    r#"
for i = 4, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  if ARGV[2] == 'GT' then
    redis.call('ZADD', KEYS[1], 'GT', unpack(ARGV, i, last))
  else
    redis.call('ZADD', KEYS[1], unpack(ARGV, i, last))
  end
end
expire(KEYS[1], ARGV[1], ARGV[3])
return 1
"#
);

/// `EVALSHA` of `script` on one key, for the caller to append the arguments to. They go
/// straight into the command: a `ScriptInvocation` keeps each argument in a vector of its
/// own, then copies them all into the command, two allocations and two copies for every
/// field of a window.
pub(crate) fn invoke_on(script: &Script, key: &str) -> Cmd {
    let mut cmd = redis::cmd("EVALSHA");
    cmd.arg(script.get_hash()).arg(1).arg(key);
    cmd
}

/// The source of every script the writer uses, for `SCRIPT LOAD` on every master (at
/// start-up, and again after a NOSCRIPT).
pub(super) fn sources() -> [&'static str; 4] {
    [
        SET_IF_NOT_OLDER_SRC,
        ZADD_IF_NOT_OLDER_SRC,
        HSET_EXPIRE_SRC,
        ZADD_EXPIRE_SRC,
    ]
}
