//! Coalescing validated messages into one set of writes, and appending those writes to a
//! Redis pipeline (or to the per-slot pipelines of a cluster: any [`CommandSink`]).
//!
//! Within one [`WriteSet`] the last value for a key wins (for trend alerts and user
//! metrics: the newest by window or timestamp, ties going to the later message, exactly
//! as the Redis-side scripts decide), and each index ZADD and each EXPIRE is issued once
//! per key, however many messages touched it. Every key gets its TTL in the same atomic
//! command or script as its value, so no key is ever seen without one.

use foldhash::{HashMap, HashMapExt, HashSet};

use chrono::{DateTime, Utc};
use redis::cluster_routing::Slot;
use redis::{Cmd, Pipeline};

use super::scripts::{
    invoke_on, HSET_EXPIRE, KEEP_LONGER, SET_IF_NOT_OLDER, ZADD_EXPIRE, ZADD_IF_NOT_OLDER,
};
use crate::config::{TtlFrom, Ttls};
use crate::models::{
    format_timestamp, DefaultWindowId, Message, Tombstone, TrendAlert, UserMetrics, WindowEntry,
    WindowTimes, WindowedKeywordCount,
};
use crate::schema::{trend_score, trend_version, Keys};

/// Where a [`WriteSet`] appends its commands, whose replies are not needed: a pipeline,
/// or the connection's own grouping of them (one pipeline per hash slot on a cluster).
pub trait CommandSink {
    /// Adds a command whose reply is ignored; its failure still fails the pipeline.
    fn add(&mut self, cmd: Cmd);
    /// How many commands it holds.
    fn count(&self) -> usize;
    /// The hash slot of `key` where keys of different slots cannot share a script (a
    /// cluster), `None` where any keys can (a single server).
    fn slot_of(&self, key: &str) -> Option<Slot>;
}

impl CommandSink for Pipeline {
    fn add(&mut self, cmd: Cmd) {
        self.add_command(cmd).ignore();
    }

    fn count(&self) -> usize {
        self.len()
    }

    fn slot_of(&self, _key: &str) -> Option<Slot> {
        None
    }
}

/// When a write happens, as the scripts need it.
struct Clock<'a> {
    /// The write time, from which TTLs count (or to which they are left, counted from
    /// the event), and the same as `*:last_update` stores it.
    at: DateTime<Utc>,
    now: &'a str,
    /// The latest event time taken as true: a stored value newer than this came from a
    /// clock in the future (stored before `batch.max_future_skew_secs` was checked), and
    /// is overwritten rather than kept as the newest.
    not_after: DateTime<Utc>,
}

/// The most keys one [`SET_IF_NOT_OLDER`] call writes, so that no call holds Redis for
/// long whatever the batch size: a few milliseconds of Redis's time.
const KEYS_PER_SCRIPT: usize = 500;

/// The keys that writing `message` touches: the data key of each item and its category's
/// shared keys (index, ranking, last update). When Redis refuses a write to one of these
/// for its data, the message is the one to set aside.
pub(crate) fn touched_keys(message: &Message, keys: &Keys) -> Vec<String> {
    match message {
        Message::Trends(alerts) => alerts
            .iter()
            .map(|a| keys.trend_normalized(&a.normalized_keyword()))
            .chain([keys.trends_current(), keys.trends_last_update()])
            .collect(),
        Message::UserMetrics(_) => vec![
            keys.users_metrics(),
            keys.users_active(),
            keys.users_last_update(),
        ],
        Message::Windows(counts) => counts
            .iter()
            .map(|c| keys.window(&c.window_id()))
            .chain([keys.windows_index()])
            .collect(),
    }
}

/// The coalesced writes of any number of messages, ready to become one pipeline.
#[derive(Debug, Default)]
pub struct WriteSet {
    /// Normalised keyword to the newest alert seen for it.
    trends: HashMap<String, TrendAlert>,
    /// The newest snapshot seen.
    user_metrics: Option<UserMetrics>,
    /// User id to the latest last-seen unix second.
    active_users: HashMap<String, i64>,
    /// Window id to (normalised keyword to the last count seen).
    windows: HashMap<String, HashMap<String, WindowEntry>>,
    /// Normalised keywords and window ids that a tombstone deleted. Written before the
    /// values above, which came after the tombstone in the stream: a value before it is
    /// dropped from the set when the tombstone is added.
    trend_deletes: HashSet<String>,
    window_deletes: HashSet<String>,
    /// How many items were added, before coalescing.
    items: usize,
}

impl WriteSet {
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty set whose maps start at the sizes this one's reached, for the next batch:
    /// its maps do not grow again by rehashing, table after table. Not each window's own
    /// map: sized by the last batch's largest window, a batch of many small windows after
    /// one of a large window would hold a large table for every one of them.
    pub(crate) fn sized_like(&self) -> Self {
        Self {
            trends: HashMap::with_capacity(self.trends.len()),
            active_users: HashMap::with_capacity(self.active_users.len()),
            windows: HashMap::with_capacity(self.windows.len()),
            ..Self::default()
        }
    }

    /// Items added so far, before coalescing.
    pub fn items(&self) -> usize {
        self.items
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.trends.is_empty()
            && self.user_metrics.is_none()
            && self.windows.is_empty()
            && self.trend_deletes.is_empty()
            && self.window_deletes.is_empty()
    }

    /// Adds a tombstone: what it names is deleted, and what the set held of it before is
    /// dropped.
    pub fn add_tombstone(&mut self, tombstone: Tombstone) {
        self.items += 1;
        match tombstone {
            Tombstone::Trend(keyword) => {
                self.trends.remove(&keyword);
                self.trend_deletes.insert(keyword);
            }
            Tombstone::Window(id) => {
                self.windows.remove(&id);
                self.window_deletes.insert(id);
            }
        }
    }

    /// Adds every item of a decoded message. `seen_at` is the last-seen time of users
    /// whose snapshot carries no timestamp (the daemon passes the Kafka message time).
    pub fn add_message(&mut self, message: Message, seen_at: DateTime<Utc>) {
        match message {
            Message::Trends(alerts) => alerts.into_iter().for_each(|a| self.add_trend(a)),
            Message::UserMetrics(all) => all
                .into_iter()
                .for_each(|m| self.add_user_metrics(m, seen_at)),
            Message::Windows(counts) => counts.into_iter().for_each(|c| self.add_window_count(c)),
        }
    }

    pub fn add_trend(&mut self, alert: TrendAlert) {
        self.items += 1;
        let key = alert.normalized_keyword();
        match self.trends.get(&key) {
            // The ordering of `schema::trend_version`: to the second, the later one wins.
            Some(kept) if kept.window_end.timestamp() > alert.window_end.timestamp() => {}
            _ => {
                self.trends.insert(key, alert);
            }
        }
    }

    pub fn add_user_metrics(&mut self, metrics: UserMetrics, seen_at: DateTime<Utc>) {
        self.items += 1;
        let seen = metrics.timestamp.unwrap_or(seen_at).timestamp();
        for id in metrics.seen_user_ids() {
            let last = self.active_users.entry(id.to_owned()).or_insert(seen);
            *last = (*last).max(seen);
        }
        let newer = match (&self.user_metrics, metrics.timestamp) {
            (Some(kept), Some(new)) => kept.timestamp.is_none_or(|old| old <= new),
            _ => true,
        };
        if newer {
            self.user_metrics = Some(metrics);
        }
    }

    /// Adds a validated count. Its window is looked up by its id, which is copied only
    /// into a window the set did not hold yet.
    pub fn add_window_count(&mut self, count: WindowedKeywordCount) {
        self.items += 1;
        let (window_id, keyword, entry) = count.into_entry();
        let window = match window_id {
            Some(id) => self.windows.entry(id).or_default(),
            None => {
                let default = DefaultWindowId::of(&entry.window_start);
                let id = default.as_str();
                if !self.windows.contains_key(id) {
                    self.windows.insert(id.to_owned(), HashMap::new());
                }
                self.windows.get_mut(id).expect("inserted above")
            }
        };
        window.insert(keyword, entry);
    }

    /// Appends every write to `pipe`. Returns how many commands were appended.
    pub fn append_to(
        &self,
        pipe: &mut impl CommandSink,
        keys: &Keys,
        ttls: &Ttls,
        now: DateTime<Utc>,
        not_after: DateTime<Utc>,
    ) -> usize {
        let before = pipe.count();
        self.append_deletes(pipe, keys);
        let now_text = format_timestamp(&now);
        let clock = Clock {
            at: now,
            now: &now_text,
            not_after,
        };
        if !self.trends.is_empty() {
            self.append_trends(pipe, keys, ttls, &clock);
        }
        if self.user_metrics.is_some() {
            self.append_users(pipe, keys, ttls, &clock);
        }
        if !self.windows.is_empty() {
            self.append_windows(pipe, keys, ttls, &clock);
        }
        pipe.count() - before
    }

    /// The tombstones' deletes, before any value written after them.
    fn append_deletes(&self, pipe: &mut impl CommandSink, keys: &Keys) {
        for keyword in &self.trend_deletes {
            pipe.add(
                redis::cmd("DEL")
                    .arg(keys.trend_normalized(keyword))
                    .clone(),
            );
            pipe.add(
                redis::cmd("ZREM")
                    .arg(keys.trends_current())
                    .arg(keyword)
                    .clone(),
            );
        }
        for id in &self.window_deletes {
            pipe.add(redis::cmd("DEL").arg(keys.window(id)).clone());
            pipe.add(redis::cmd("ZREM").arg(keys.windows_index()).arg(id).clone());
        }
    }

    fn append_trends(&self, pipe: &mut impl CommandSink, keys: &Keys, ttls: &Ttls, clock: &Clock) {
        let ttl_of =
            |alert: &TrendAlert| ttls.seconds(ttls.trends, Some(alert.window_end), clock.at);
        // The ranking lives as long as its longest-lived member.
        let ranking_ttl = self.trends.values().map(ttl_of).max().unwrap_or_default();
        let mut ranking = invoke_on(&ZADD_IF_NOT_OLDER, &keys.trends_current());
        ranking
            .arg(ranking_ttl)
            .arg(keep(ttls))
            .arg(clock.not_after.timestamp());
        let ceiling = format_timestamp(&clock.not_after);
        // The details in as few scripts as the slots allow: one call for them all on a
        // single server.
        let mut details: HashMap<Option<Slot>, Vec<(String, &TrendAlert)>> = HashMap::new();
        for (keyword, alert) in &self.trends {
            let key = keys.trend_normalized(keyword);
            details
                .entry(pipe.slot_of(&key))
                .or_default()
                .push((key, alert));
            ranking
                .arg(trend_score(&alert.window_end, alert.rank))
                .arg(keyword);
        }
        for slot in details.into_values() {
            for chunk in slot.chunks(KEYS_PER_SCRIPT) {
                let mut script = SET_IF_NOT_OLDER.prepare_invoke();
                script.arg("window_end").arg(&ceiling);
                for (key, alert) in chunk {
                    let json = serde_json::to_string(alert).expect("a validated alert serializes");
                    script
                        .key(key)
                        .arg(json)
                        .arg(trend_version(&alert.window_end))
                        .arg(ttl_of(alert));
                }
                pipe.add(Cmd::invoke_script(&script));
            }
        }
        pipe.add(ranking);
        pipe.add(Cmd::set_ex(
            keys.trends_last_update(),
            clock.now,
            ttls.trends.as_secs(),
        ));
    }

    fn append_users(&self, pipe: &mut impl CommandSink, keys: &Keys, ttls: &Ttls, clock: &Clock) {
        let Some(metrics) = &self.user_metrics else {
            return;
        };
        let ttl = ttls.seconds(ttls.users, metrics.timestamp, clock.at);
        let json = serde_json::to_string(metrics).expect("validated metrics serialize");
        let order = metrics
            .timestamp
            .as_ref()
            .map(format_timestamp)
            .unwrap_or_default();
        pipe.add(Cmd::invoke_script(
            SET_IF_NOT_OLDER
                .key(keys.users_metrics())
                .arg("timestamp")
                .arg(format_timestamp(&clock.not_after))
                .arg(json)
                .arg(order)
                .arg(ttl),
        ));
        if !self.active_users.is_empty() {
            // GT: a replayed, older sighting never moves a user back in time.
            let mut zadd = invoke_on(&ZADD_EXPIRE, &keys.users_active());
            zadd.arg(ttl).arg("GT").arg(keep(ttls));
            for (id, seen) in &self.active_users {
                zadd.arg(*seen).arg(id);
            }
            pipe.add(zadd);
        }
        pipe.add(Cmd::set_ex(
            keys.users_last_update(),
            clock.now,
            ttls.users.as_secs(),
        ));
    }

    fn append_windows(&self, pipe: &mut impl CommandSink, keys: &Keys, ttls: &Ttls, clock: &Clock) {
        let window_ends: Vec<_> = self
            .windows
            .values()
            .map(|counts| counts.values().map(|entry| entry.window_end).max())
            .collect();
        let ttl_of = |end| ttls.seconds(ttls.windows, end, clock.at);
        // The index lives as long as its longest-lived window.
        let index_ttl = window_ends.iter().map(|end| ttl_of(*end)).max();
        let mut index = invoke_on(&ZADD_EXPIRE, &keys.windows_index());
        index
            .arg(index_ttl.unwrap_or_default())
            .arg("")
            .arg(keep(ttls));
        // One buffer for every entry's JSON, copied into the command.
        let mut json = Vec::with_capacity(256);
        for ((window_id, counts), window_end) in self.windows.iter().zip(window_ends) {
            let mut hset = invoke_on(&HSET_EXPIRE, &keys.window(window_id));
            hset.arg(ttl_of(window_end)).arg(keep(ttls));
            let mut times = WindowTimes::default();
            for (keyword, entry) in counts {
                json.clear();
                entry.write_json(&mut json, &mut times);
                hset.arg(keyword).arg(&json[..]);
            }
            pipe.add(hset);
            index
                .arg(window_end.map_or(0, |end| end.timestamp()))
                .arg(window_id);
        }
        pipe.add(index);
    }
}

/// Whether an aggregate key (a ranking, an index, a window) keeps a TTL longer than the
/// one its write gives: with TTLs that count from the event, a late write of an old
/// member must not cut the life of the newer ones.
fn keep(ttls: &Ttls) -> &'static str {
    match ttls.from {
        TtlFrom::Event => KEEP_LONGER,
        TtlFrom::Write => "",
    }
}

#[cfg(test)]
mod tests {
    use cache_layer_testkit::fixtures::trend_alert_json;

    use super::*;
    use crate::models::{decode, MessageKind};

    fn alert(keyword: &str, window_end: &str, rank: i64) -> TrendAlert {
        let json = trend_alert_json(keyword, window_end, rank);
        match decode(MessageKind::Trends, json.as_bytes()).unwrap() {
            Message::Trends(mut v) => v.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn many_alerts_for_one_keyword_coalesce_to_the_newest() {
        let mut set = WriteSet::new();
        set.add_trend(alert("Rust", "2024-01-01T12:02:00Z", 5));
        set.add_trend(alert("rust", "2024-01-01T12:01:00Z", 1));
        set.add_trend(alert(" RUST ", "2024-01-01T12:02:00Z", 2));
        assert_eq!(set.items(), 3);
        assert_eq!(set.trends.len(), 1);
        assert_eq!(set.trends["rust"].rank, 2);
    }

    #[test]
    fn one_pipeline_has_one_index_write_per_key() {
        let mut set = WriteSet::new();
        for i in 0..100 {
            set.add_trend(alert(
                &format!("kw{}", i % 10),
                "2024-01-01T12:02:00Z",
                1 + i,
            ));
        }
        let mut pipe = redis::pipe();
        let n = set.append_to(
            &mut pipe,
            &Keys::new(""),
            &Ttls::uniform(std::time::Duration::from_secs(60)),
            Utc::now(),
            Utc::now(),
        );
        // 1 script for the 10 details + 1 ranking script + 1 last_update.
        assert_eq!(n, 3);
    }
}
