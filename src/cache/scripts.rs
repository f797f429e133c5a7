//! The Lua scripts that make writes replay-safe, and set each key's value and TTL in one
//! atomic step. Each touches exactly one key, so each runs on a single hash slot and works
//! unchanged on Redis Cluster.
//!
//! They are invoked with EVALSHA inside the batch pipeline; after a Redis restart the
//! script cache is empty, and the writer loads them again on NOSCRIPT and retries.

use std::sync::LazyLock;

use redis::Script;

/// `SET key json EX ttl` unless the stored JSON is newer.
///
/// KEYS[1]: the key. ARGV[1]: the new JSON; ARGV[2]: TTL in seconds; ARGV[3]: the name of
/// the top-level string field that orders versions; ARGV[4]: the new version, a prefix of
/// that field's canonical (fixed-width, string-comparable) value, or '' to write
/// unconditionally. The stored value's field is compared on the same prefix, so a
/// version may be coarser than the field (a trend's `window_end` to the second).
///
/// The stored value is written by this service with serde_json, which escapes every quote
/// inside strings, so the first `"field":"` is the top-level field: no JSON decode needed.
pub static SET_IF_NOT_OLDER: LazyLock<Script> = LazyLock::new(|| Script::new(SET_IF_NOT_OLDER_SRC));
const SET_IF_NOT_OLDER_SRC: &str = r#"
local order = ARGV[4]
if order ~= '' then
  local old = redis.call('GET', KEYS[1])
  if old then
    local stored = string.match(old, '"' .. ARGV[3] .. '":"([^"]*)"')
    if stored and string.sub(stored, 1, #order) > order then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"#;

/// Adds keywords to `trends:current` unless the member already sits in a newer window,
/// then refreshes the TTL. The window is decoded from the score as in
/// `schema::window_of_score`.
///
/// KEYS[1]: `trends:current`. ARGV[1]: TTL in seconds; then (score, member) pairs.
/// Returns how many members were written.
pub static ZADD_IF_NOT_OLDER: LazyLock<Script> =
    LazyLock::new(|| Script::new(ZADD_IF_NOT_OLDER_SRC));
const ZADD_IF_NOT_OLDER_SRC: &str = r#"
local written = 0
for i = 2, #ARGV, 2 do
  local score = tonumber(ARGV[i])
  local member = ARGV[i + 1]
  local old = redis.call('ZSCORE', KEYS[1], member)
  local stale = false
  if old then
    local old_window = math.floor((999999 - tonumber(old)) / 1000000)
    local new_window = math.floor((999999 - score) / 1000000)
    stale = old_window > new_window
  end
  if not stale then
    redis.call('ZADD', KEYS[1], score, member)
    written = written + 1
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return written
"#;

/// `HSET` and `EXPIRE` of one hash, atomically, so that no reader (and no sweep) ever
/// sees the hash without its TTL.
///
/// KEYS[1]: the hash. ARGV[1]: TTL in seconds; then (field, value) pairs.
pub static HSET_EXPIRE: LazyLock<Script> = LazyLock::new(|| Script::new(HSET_EXPIRE_SRC));
const HSET_EXPIRE_SRC: &str = r#"
for i = 2, #ARGV, 1000 do
  redis.call('HSET', KEYS[1], unpack(ARGV, i, math.min(i + 999, #ARGV)))
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// `ZADD` (optionally `GT`) and `EXPIRE` of one sorted set, atomically.
///
/// KEYS[1]: the sorted set. ARGV[1]: TTL in seconds; ARGV[2]: `GT` or ``; then
/// (score, member) pairs. Chunked, because Lua's `unpack` takes a bounded number of values.
pub static ZADD_EXPIRE: LazyLock<Script> = LazyLock::new(|| Script::new(ZADD_EXPIRE_SRC));
const ZADD_EXPIRE_SRC: &str = r#"
for i = 3, #ARGV, 1000 do
  local last = math.min(i + 999, #ARGV)
  if ARGV[2] == 'GT' then
    redis.call('ZADD', KEYS[1], 'GT', unpack(ARGV, i, last))
  else
    redis.call('ZADD', KEYS[1], unpack(ARGV, i, last))
  end
end
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"#;

/// The source of every script the writer uses, for `SCRIPT LOAD` on every master (at
/// start-up, and again after a NOSCRIPT).
pub fn sources() -> [&'static str; 4] {
    [
        SET_IF_NOT_OLDER_SRC,
        ZADD_IF_NOT_OLDER_SRC,
        HSET_EXPIRE_SRC,
        ZADD_EXPIRE_SRC,
    ]
}
