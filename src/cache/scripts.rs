//! The Lua scripts that make writes replay-safe. Each touches exactly one key, so each
//! runs on a single hash slot and works unchanged on Redis Cluster.
//!
//! They are invoked with EVALSHA inside the batch pipeline; after a Redis restart the
//! script cache is empty, and the writer loads them again on NOSCRIPT and retries.

use std::sync::LazyLock;

use redis::Script;

/// `SET key json EX ttl` unless the stored JSON is newer.
///
/// KEYS[1]: the key. ARGV[1]: the new JSON; ARGV[2]: TTL in seconds; ARGV[3]: the name of
/// the top-level string field that orders versions; ARGV[4]: its canonical (fixed-width,
/// string-comparable) value in the new JSON, or '' to write unconditionally.
///
/// The stored value is written by this service with serde_json, which escapes every quote
/// inside strings, so the first `"field":"` is the top-level field: no JSON decode needed.
pub static SET_IF_NOT_OLDER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
local order = ARGV[4]
if order ~= '' then
  local old = redis.call('GET', KEYS[1])
  if old then
    local stored = string.match(old, '"' .. ARGV[3] .. '":"([^"]*)"')
    if stored and stored > order then
      return 0
    end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"#,
    )
});

/// Adds keywords to `trends:current` unless the member already sits in a newer window,
/// then refreshes the TTL. The window is decoded from the score as in
/// `schema::window_of_score`.
///
/// KEYS[1]: `trends:current`. ARGV[1]: TTL in seconds; then (score, member) pairs.
/// Returns how many members were written.
pub static ZADD_IF_NOT_OLDER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r#"
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
"#,
    )
});

/// Every script the writer uses, for loading after NOSCRIPT.
pub fn all() -> [&'static Script; 2] {
    [&SET_IF_NOT_OLDER, &ZADD_IF_NOT_OLDER]
}
