//! The consume loop: one loop owns the consumer and the batch being collected, hands
//! each batch to a write on a task of its own, and drains on shutdown; the module
//! header of `pipeline` tells how and why.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use chrono::{DateTime, Utc};
use futures::{FutureExt as _, StreamExt as _};
use rdkafka::consumer::{Consumer as _, MessageStream};
use rdkafka::error::KafkaResult;
use rdkafka::message::{BorrowedMessage, Message as _};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::AbortOnDropHandle;
use tracing::{error, info, warn};

use crate::cache::{CacheLayer, Marker, MemoryUse};
use crate::config::{AutoOffsetReset, Config, Settings};
use crate::events::{self, At, BatchWritten};
use crate::status::{MemoryPressure, Status};

use super::batch::{Batch, Incoming, Pushed, TopicKinds};
use super::consumer::{self, GroupConsumer, GroupContext, GroupEvents};
use super::dead_letter::DeadLetter;
use super::handover::Handover;
use super::partitions::{GroupEvent, Partitions};
use super::rebuild::{Chores, Found, Housekeeper};
use super::replay::Replay;
use super::retry::RetryLogic;
use super::sink::{Sink, Written};
use super::topics;

/// The batch being written, on its own task; dropping it (a drain that timed out)
/// cancels the write, so that nothing of it is acknowledged.
type WriteTask = AbortOnDropHandle<Done>;

/// A batch's write ended: what it reported (`None`: a revocation gave the batch up), and
/// what the loop stores for it (the last offset of each partition in it, and the
/// revocations counted when it was taken).
struct Done {
    written: Option<Written>,
    offsets: Vec<(String, i32, i64)>,
    epoch: u64,
}

/// The most of `kafka.shutdown_timeout_ms` kept from the drain's writes for the final
/// commit and the rest of the shutdown.
const SHUTDOWN_TAIL: Duration = Duration::from_secs(1);

/// How often the loop stores the position of partitions whose every message is written
/// and that moved on without one (past a transaction marker that ended them).
const IDLE_CHECK: Duration = Duration::from_secs(1);

/// How often a round of housekeeping runs: one `EXISTS` of the marker and one `HGETALL`
/// of the rebuild requests (and `INFO memory` when the memory ratio is watched), so that
/// a Redis emptied under a quiet stream, or one nearly full, is found within about a
/// second.
const HOUSEKEEPING: Duration = Duration::from_secs(1);

/// How long a resume that left partitions paused waits before trying again.
const RESUME_RETRY: Duration = Duration::from_secs(1);

/// Runs the pipeline: consumes until `shutdown` is cancelled, then drains: the batch in
/// progress is written and the offsets committed within `kafka.shutdown_timeout_ms`.
/// Returns the deadline by which the rest of the shutdown must be done too.
pub(crate) async fn run(
    config: &Config,
    cache: CacheLayer,
    status: Arc<Status>,
    settings: Settings,
    shutdown: &CancellationToken,
) -> anyhow::Result<Instant> {
    let dead_letter = DeadLetter::new(config).context("cannot create the dead-letter producer")?;
    let kinds = TopicKinds::new(&config.topics);
    // One attempt at a write takes at most a connection and a response.
    let handover = Arc::new(Handover::new(
        config.redis.connect_timeout + config.redis.response_timeout,
    ));
    let (consumer, group_events) = consumer::subscribe(
        config,
        &kinds.names(),
        Arc::clone(&status),
        Arc::clone(&handover),
    )
    .context("cannot create the Kafka consumer")?;
    info!(
        brokers = %config.kafka.bootstrap_servers,
        group = %config.kafka.group_id,
        topics = ?kinds.names(),
        dead_letter = %config.topics.dead_letter,
        redis = %config.redis.endpoint(),
        "cache-layer consuming"
    );
    // Loaded up front so that the first pipeline does not fail on NOSCRIPT; if Redis is
    // down now, the first write loads them once it is back.
    match cache.load_scripts().await {
        Ok(()) => events::redis_state(&status, true),
        Err(e) => {
            warn!(redis = %config.redis.endpoint(), error = %e, "Redis not reachable at startup; writes wait for it")
        }
    }
    let watch_stop = CancellationToken::new();
    let watch = tokio::spawn(topics::watch_topics(
        Arc::clone(&consumer),
        kinds.names().into_iter().map(str::to_owned).collect(),
        Arc::clone(&status),
        watch_stop.clone(),
    ));
    let retry = RetryLogic::new(&config.batch);
    let ttls = config.cache.ttls();
    let marker = Arc::new(Marker::new(&cache, &config.kafka.group_id, ttls.longest()));
    let housekeeper = Arc::new(Housekeeper {
        cache: cache.clone(),
        marker: Arc::clone(&marker),
        consumer: Arc::downgrade(&consumer),
        topics: kinds.names().into_iter().map(str::to_owned).collect(),
        ttls: std::sync::RwLock::new(ttls),
        rebuild_on_loss: config.cache.rebuild_on_loss,
        watch_memory: config.redis.pause_above_memory_ratio.is_some(),
        evicted_keys: std::sync::atomic::AtomicU64::new(0),
    });
    // Before the first write sets the marker.
    housekeeper.check_at_startup().await;
    let sink = Arc::new(Sink::new(
        cache,
        dead_letter,
        kinds.clone(),
        retry,
        marker,
        Arc::clone(&status),
        handover,
    ));
    let mut pipeline = Pipeline {
        consumer,
        sink,
        kinds,
        batch: Batch::new(&config.batch, ttls),
        in_flight: None,
        partitions: Partitions::default(),
        group_events,
        rewinding: false,
        resume_retry: None,
        reset: config.kafka.auto_offset_reset,
        status,
        housekeeper,
        housekeeping: None,
        chores: PendingChores::default(),
        batches: 0,
        written: 0,
        ttls,
        pause_above: config.redis.pause_above_memory_ratio,
        pressure: None,
        settings,
    };
    pipeline.consume(shutdown).await;
    watch_stop.cancel();
    watch.abort();
    let consumer = Arc::clone(&pipeline.consumer);
    let deadline = pipeline.drain(config.kafka.shutdown_timeout).await;
    consumer::close(consumer, deadline).await;
    Ok(deadline)
}

struct Pipeline {
    consumer: Arc<GroupConsumer>,
    sink: Arc<Sink>,
    kinds: TopicKinds,
    /// The batch being collected.
    batch: Batch,
    /// The batch being written, if any.
    in_flight: Option<WriteTask>,
    /// The partitions held and where each stands.
    partitions: Partitions,
    /// What the rebalances assigned and revoked, for `partitions`.
    group_events: GroupEvents,
    /// A revocation gave up batches of the partitions kept: fetching is paused until the
    /// write in flight ended, and then they are read again from where their writes stand.
    rewinding: bool,
    /// When to try resuming again the partitions a resume left paused.
    resume_retry: Option<Instant>,
    /// Where a partition without a committed offset starts.
    reset: AutoOffsetReset,
    status: Arc<Status>,
    housekeeper: Arc<Housekeeper>,
    /// The round of housekeeping running, if any.
    housekeeping: Option<AbortOnDropHandle<Found>>,
    /// What the next round of housekeeping is to do.
    chores: PendingChores,
    /// Batches handed to a write so far: the sequence number of the last.
    batches: u64,
    /// The sequence number of the last batch written.
    written: u64,
    ttls: crate::config::Ttls,
    /// `redis.pause_above_memory_ratio`.
    pause_above: Option<f64>,
    /// Redis's memory use while it is at or above `pause_above`: consuming stays paused.
    pressure: Option<MemoryUse>,
    /// The configuration as the last reload (SIGHUP) left it.
    settings: Settings,
}

/// What the loop gathered for the next round of housekeeping.
#[derive(Debug, Default)]
struct PendingChores {
    /// A write found the marker gone.
    lost: bool,
}

impl Pipeline {
    async fn consume(&mut self, shutdown: &CancellationToken) {
        // Its own handle, so that a received message (which borrows the consumer) can be
        // added to the batch (which borrows `self` mutably). One stream for the whole
        // loop: `recv` makes and drops one per message, two locks each.
        let consumer = Arc::clone(&self.consumer);
        let mut messages = consumer.stream();
        let mut idle_checks = tokio::time::interval(IDLE_CHECK);
        idle_checks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut housekeeping = tokio::time::interval(HOUSEKEEPING);
        housekeeping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            // What a rebalance during the last poll assigned or revoked, before the write
            // it may have overtaken stores anything.
            self.apply_group_events();
            let deadline = self.batch.deadline();
            // Full: stop taking messages until the write in flight has finished. Paused:
            // keep polling (nothing arrives) so that the group sees the member alive.
            let receiving = !self.batch.is_full() || self.consumer.context().is_paused();
            tokio::select! {
                biased;
                _ = shutdown.cancelled() => return,
                done = poll_in_flight(&mut self.in_flight), if self.in_flight.is_some() => {
                    self.in_flight = None;
                    // A revocation during the write, before it stores anything.
                    self.apply_group_events();
                    let written = done.as_ref().and_then(|done| done.written.as_ref().map(|w| (done, w)));
                    match written {
                        Some((done, written)) => self.batch_written(done, written),
                        None => self.give_up_collected(),
                    }
                    // A rewind resumes by itself (the branch below).
                    if !self.rewinding && self.consumer.context().is_paused() && self.pressure.is_none() {
                        info!(attempts = written.map_or(0, |(_, w)| w.attempts), "batch written after retries; consuming again");
                        self.resume().await;
                    }
                }
                // Batches were given up and none is being written: the partitions kept
                // are read again, and fetching resumes.
                () = std::future::ready(()), if self.rewinding && self.in_flight.is_none() => {
                    self.rewind().await;
                }
                found = poll_housekeeping(&mut self.housekeeping), if self.housekeeping.is_some() => {
                    self.housekeeping = None;
                    if let Some(mut found) = found {
                        if let Some(memory) = found.memory.take() {
                            self.memory_checked(memory).await;
                        }
                        self.housekept(found);
                    }
                }
                _ = sleep_until(self.resume_retry), if self.resume_retry.is_some() && self.in_flight.is_none() && self.pressure.is_none() => {
                    self.resume().await;
                }
                _ = idle_checks.tick() => {
                    self.store_idle();
                    events::summarize_suppressed();
                }
                _ = housekeeping.tick() => self.start_housekeeping(),
                changed = self.settings.changed(), if self.settings.has_changed().is_ok() => {
                    if changed.is_ok() {
                        let config = self.settings.borrow_and_update().clone();
                        self.reloaded(&config);
                    }
                }
                _ = sleep_until(deadline), if deadline.is_some() && self.in_flight.is_none() => {
                    self.start_write();
                }
                Some(received) = messages.next(), if receiving => {
                    self.receive(received);
                    self.receive_ready(&mut messages);
                }
                // No message is ready and nothing is being written: write what there is
                // rather than wait for more.
                () = std::future::ready(()), if self.in_flight.is_none() && !self.batch.is_empty() => {
                    self.start_write();
                }
            }
            if self.batch.is_full() && self.in_flight.is_none() {
                self.start_write();
            }
        }
    }

    /// Adds a consumed message to the batch, or reports the consumer's error: counted
    /// and logged (rate-limited), as librdkafka recovers by itself.
    fn receive(&mut self, received: KafkaResult<BorrowedMessage<'_>>) {
        let message = match received {
            Ok(message) => message,
            Err(e) => return self.consumer.context().errors().report(&e, ""),
        };
        let (topic, partition, offset) = (message.topic(), message.partition(), message.offset());
        self.apply_group_events();
        if self.rewinding {
            // Read again after the rewind.
            return;
        }
        if self.batch.is_full() {
            // Paused with a full batch: what still arrives (a partition assigned before
            // the rebalance could pause it) is read again after resuming.
            self.partitions.passed(topic, partition, offset);
            return;
        }
        self.partitions.took(topic, partition, offset);
        let rebuilds = self.partitions.rebuilds();
        let replay = if rebuilds.is_empty() {
            Replay::No
        } else {
            rebuilds.replay(
                topic,
                partition,
                offset,
                self.kinds.kind(topic),
                message.timestamp().to_millis(),
                self.batches + 1,
            )
        };
        if replay != Replay::Skip {
            let replay = replay == Replay::Write;
            add_to_batch(
                &mut self.batch,
                &self.kinds,
                &self.status,
                topic,
                &message,
                replay,
            );
        }
    }

    /// Takes what the rebalance callback told since the last call: a partition revoked
    /// is forgotten with its rebuild (whoever has it now moved the group's commit on),
    /// one assigned starts clean (see [`Partitions`]). The batch being collected is given up when it holds a
    /// partition revoked: written later, it could land after the new owner's writes.
    fn apply_group_events(&mut self) {
        let mut revoked = false;
        while let Ok(event) = self.group_events.try_recv() {
            if let GroupEvent::Revoked(partitions) = &event {
                revoked = true;
                let held = self.batch.offsets().any(|(t, p, _)| {
                    partitions
                        .iter()
                        .any(|(topic, partition)| topic == t && *partition == p)
                });
                if held {
                    events::batch_given_up(false);
                    self.give_up_collected();
                }
            }
            self.partitions.apply(&event);
        }
        if revoked {
            self.publish_rebuilds();
        }
    }

    /// Gives up the batch being collected, after a revocation gave up a batch (this one,
    /// or the one in flight): fetching pauses, and once no write is in flight every
    /// partition kept is read again from where its writes stand ([`Pipeline::rewind`]),
    /// so that no message of it is written after a newer one.
    fn give_up_collected(&mut self) {
        drop(self.batch.seal());
        if !self.rewinding {
            self.rewinding = true;
            consumer::pause(&self.consumer);
        }
    }

    /// Reads every partition held again from where its writes stand, once the batches
    /// of a revocation were given up. Their rebuilds start again from their requests,
    /// which stay in Redis until a rebuild finishes.
    async fn rewind(&mut self) {
        self.rewinding = false;
        self.partitions.rewind();
        self.publish_rebuilds();
        if self.pressure.is_none() {
            self.resume().await;
        }
    }

    /// Stores the position of the partitions whose every message taken is written and
    /// that moved on without a message, past the transaction marker that ends them.
    fn store_idle(&mut self) {
        if self.in_flight.is_some() || self.consumer.context().is_paused() {
            return;
        }
        let positions = consumer::positions(&self.consumer);
        let moved = self
            .partitions
            .idle_moves(|topic, partition| positions.get(&(topic.to_owned(), partition)).copied());
        consumer::store(&self.consumer, &moved);
    }

    /// Resumes fetching where the loop stands; what could not be resumed is tried again
    /// a second later.
    async fn resume(&mut self) {
        let resumed = consumer::resume(&self.consumer, &self.partitions, self.reset).await;
        if resumed {
            self.partitions.resumed();
        }
        self.resume_retry = (!resumed).then(|| Instant::now() + RESUME_RETRY);
    }

    /// Takes every message the consumer already holds, until the batch is full, without
    /// going back through the loop's `select!` for each: a fetch delivers its messages in
    /// a burst, and there is no need to poll the loop's other branches (a fresh timer,
    /// the write in flight, shutdown) once per message. At most one batch's worth is
    /// taken, a few milliseconds of work, before the loop looks at them again.
    fn receive_ready(&mut self, messages: &mut MessageStream<'_, GroupContext>) {
        while !self.batch.is_full() {
            let Some(Some(received)) = messages.next().now_or_never() else {
                return;
            };
            self.receive(received);
        }
    }

    /// Hands the collected batch to a write future, which stores its offsets once written.
    fn start_write(&mut self) {
        debug_assert!(self.in_flight.is_none());
        // A revocation in the last poll may give this batch up.
        self.apply_group_events();
        if self.batch.is_empty() {
            return;
        }
        let batch = self.batch.seal();
        events::batch_taken(batch.per_topic());
        self.batches += 1;
        let rebuilds = self.partitions.rebuilds();
        if !rebuilds.is_empty() {
            rebuilds.report();
        }
        let epoch = self.partitions.epoch();
        let sink = Arc::clone(&self.sink);
        let consumer = Arc::clone(&self.consumer);
        let status = Arc::clone(&self.status);
        sink.hold(&batch);
        // The loop stores the offsets and resumes fetching once the write is done (it
        // knows where each partition stands).
        self.in_flight = Some(AbortOnDropHandle::new(tokio::spawn(async move {
            let written = sink
                .write_until_done(&batch, || consumer::pause(&consumer))
                .await;
            if let Some(written) = &written {
                acknowledged(&batch, written, sink.dead_letters(), &status);
            }
            let offsets = batch
                .offsets()
                .map(|(topic, partition, offset)| (topic.to_owned(), partition, offset))
                .collect();
            Done {
                written,
                offsets,
                epoch,
            }
        })));
    }

    /// A batch went through: its offsets stored, the rebuilds it finished, and a loss it
    /// found.
    fn batch_written(&mut self, done: &Done, written: &Written) {
        let offsets = &done.offsets;
        let positions = consumer::positions(&self.consumer);
        let store = self.partitions.written(
            offsets.iter().map(|(t, p, o)| (t.as_str(), *p, *o)),
            done.epoch,
            |topic, partition| positions.get(&(topic.to_owned(), partition)).copied(),
        );
        consumer::store(&self.consumer, &store);
        self.written += 1;
        if written.data_lost {
            self.chores.lost = true;
            self.start_housekeeping();
        }
        let rebuilds = self.partitions.rebuilds();
        if !rebuilds.is_empty() {
            let finished = rebuilds.written(self.written);
            self.publish_rebuilds();
            if finished {
                // The requests replayed are deleted now, not a round later.
                self.start_housekeeping();
            }
        }
    }

    /// Starts a round of housekeeping unless one is running: the loss found, the
    /// finished rebuilds to clear, and the rebuild requests of the partitions assigned.
    fn start_housekeeping(&mut self) {
        if self.housekeeping.is_some() {
            return;
        }
        let assigned = match self.consumer.assignment() {
            Ok(assignment) => assignment
                .elements()
                .iter()
                .map(|e| (e.topic().to_owned(), e.partition()))
                .collect(),
            Err(e) => {
                warn!(error = %e, "cannot read the assignment for the rebuild requests");
                Vec::new()
            }
        };
        let chores = std::mem::take(&mut self.chores);
        let rebuilds = self.partitions.rebuilds();
        let chores = Chores {
            lost: chores.lost,
            // Unless a write is on its way to set it (and tell).
            check_marker: self.in_flight.is_none(),
            assigned,
            rebuilds: rebuilds.active(),
            finished: rebuilds.take_finished(),
        };
        let housekeeper = Arc::clone(&self.housekeeper);
        self.housekeeping = Some(AbortOnDropHandle::new(tokio::spawn(
            housekeeper.round(chores),
        )));
    }

    /// Takes what a round of housekeeping found: starts replaying the partitions
    /// requested. Not while paused: the requests stay, for a round after the resume.
    fn housekept(&mut self, found: Found) {
        self.partitions
            .rebuilds()
            .put_back_finished(found.not_deleted);
        if found.starts.is_empty() || self.consumer.context().is_paused() {
            return;
        }
        self.apply_group_events();
        if self.rewinding {
            // The requests stay, for a round after the rewind.
            return;
        }
        let log_ends = self.consumer.context().high_watermarks();
        let mut started = Vec::new();
        for start in found.starts {
            let (topic, partition) = (start.request.topic.clone(), start.request.partition);
            let log_end = log_ends.get(&(topic.clone(), partition)).copied();
            if let Some((from, target)) = self.partitions.start_rebuild(start, log_end, &self.ttls)
            {
                started.push(format!("{topic}[{partition}]@{from}..{target}"));
                consumer::seek(&self.consumer, &topic, partition, from);
            }
        }
        if !started.is_empty() {
            warn!(
                partitions = started.len(),
                replays = started.join(", "),
                "rebuilding the cache: replaying partitions from Kafka; not ready until done"
            );
        }
        self.partitions.rebuilds().written(self.written);
        self.publish_rebuilds();
    }

    /// Pauses consuming while Redis's memory use is at or above
    /// `redis.pause_above_memory_ratio`, and resumes once it is below: a backlog meets a
    /// pause rather than OOM refusals. What the batch in progress holds is still written.
    async fn memory_checked(&mut self, memory: Option<MemoryUse>) {
        let Some(pause_above) = self.pause_above else {
            return;
        };
        let over = memory.filter(|m| m.ratio() >= pause_above);
        match (over, self.pressure) {
            (Some(m), None) => {
                warn!(
                    used_memory = m.used_memory,
                    maxmemory = m.maxmemory,
                    ratio = format!("{:.3}", m.ratio()),
                    "Redis is nearly full, at or above redis.pause_above_memory_ratio = {pause_above}: consuming paused until it is below"
                );
                consumer::pause(&self.consumer);
            }
            (None, Some(_)) => {
                let ratio = memory.map_or(0.0, |m| m.ratio());
                info!(
                    ratio = format!("{ratio:.3}"),
                    "Redis's memory use is below redis.pause_above_memory_ratio again; consuming again"
                );
            }
            _ => {}
        }
        let resumes = over.is_none() && self.pressure.is_some();
        self.pressure = over;
        self.status
            .set_memory_pressure(over.map(|memory| MemoryPressure {
                memory,
                pause_above,
            }));
        // A write in flight resumes when it is done.
        if resumes && self.in_flight.is_none() {
            self.resume().await;
        }
    }

    /// Takes a reloaded configuration: the TTLs and the batch limits apply from the batch
    /// being collected on (the write in flight keeps its own), and so does
    /// `batch.max_future_skew_secs`, for the reads too.
    fn reloaded(&mut self, config: &Config) {
        self.ttls = config.cache.ttls();
        self.batch.set_limits(&config.batch, self.ttls);
        *self.housekeeper.ttls.write().expect("not poisoned") = self.ttls;
        self.housekeeper.marker.set_ttl(self.ttls.longest());
        self.housekeeper
            .cache
            .set_max_future_skew(config.batch.max_future_skew);
        info!(
            max_messages = config.batch.max_messages,
            max_wait_ms = config.batch.max_wait.as_millis() as u64,
            "reloaded settings taken by the consume loop"
        );
    }

    /// Tells readiness and the metrics where the rebuilds stand.
    fn publish_rebuilds(&self) {
        events::rebuilds(&self.status, self.partitions.rebuild_progress());
    }

    /// Finishes the write in flight, writes the batch in progress and commits, within
    /// `timeout`, and returns the deadline that `timeout` sets for the whole shutdown.
    /// The writes may use all of it but a tail kept for the final commit and for
    /// stopping the rest of the daemon. What cannot be written in time is not
    /// acknowledged (the timeout drops the write), so a restarted daemon reads it again.
    async fn drain(mut self, timeout: Duration) -> Instant {
        info!(pending = self.batch.len(), "shutting down: draining");
        let deadline = Instant::now() + timeout;
        let tail = (timeout / 5).min(SHUTDOWN_TAIL);
        let drained = tokio::time::timeout_at(deadline - tail, async {
            for _ in 0..2 {
                if let Some(write) = self.in_flight.take() {
                    if let Some(done) = finished(write.await) {
                        if let Some(written) = &done.written {
                            self.batch_written(&done, written);
                        }
                    }
                }
                self.start_write();
            }
        })
        .await;
        if drained.is_err() {
            error!(
                ?timeout,
                "drain timed out; unwritten messages will be read again after a restart"
            );
        }
        // A synchronous commit blocks its thread until the broker answers.
        let consumer = Arc::clone(&self.consumer);
        let commit = tokio::task::spawn_blocking(move || consumer::commit_stored(&*consumer));
        match tokio::time::timeout_at(deadline, commit).await {
            Ok(Ok(Ok(()))) => info!("offsets committed; stopped"),
            Ok(Ok(Err(e))) => {
                error!(error = %e, "final commit failed; the next run replays from the last commit")
            }
            Ok(Err(e)) => {
                error!(error = %e, "final commit panicked; the next run replays from the last commit")
            }
            Err(_) => error!("final commit timed out; the next run replays from the last commit"),
        }
        deadline
    }
}

/// Adds a received message to the batch; `topic` is the message's, read once
/// (librdkafka's name is checked as UTF-8 per call).
fn add_to_batch(
    batch: &mut Batch,
    kinds: &TopicKinds,
    status: &Status,
    topic: &str,
    message: &BorrowedMessage<'_>,
    replay: bool,
) {
    let incoming = Incoming {
        topic,
        partition: message.partition(),
        offset: message.offset(),
        key: message.key(),
        payload: message.payload(),
        timestamp: message
            .timestamp()
            .to_millis()
            .and_then(DateTime::<Utc>::from_timestamp_millis),
        replay,
    };
    let at = At {
        topic,
        partition: incoming.partition,
        offset: incoming.offset,
    };
    match batch.push(kinds, incoming) {
        Pushed::Rejected(rejected) => events::message_rejected(status, at, &rejected.error),
        Pushed::Expired => events::message_expired(status, at),
        Pushed::Accepted | Pushed::Ignored => events::message_received(status),
    }
}

/// A written batch whose offsets were stored, told to the metrics and the status.
fn acknowledged(batch: &Batch, written: &Written, dead_letters: bool, status: &Status) {
    events::batch_written(
        status,
        BatchWritten {
            messages: batch.len(),
            pipeline: written.pipeline,
            latencies: batch.latencies(Utc::now()),
            rejected: batch.rejected_per_topic(),
            refused: written
                .refused
                .iter()
                .map(|refused| refused.origin.topic.as_str()),
            dead_letters,
        },
    );
}

async fn poll_in_flight(in_flight: &mut Option<WriteTask>) -> Option<Done> {
    match in_flight {
        Some(write) => finished(write.await),
        None => None,
    }
}

/// A task's end (a write, a round of housekeeping): a panic in it goes on in the consume
/// loop, as it did before the write had a task of its own.
fn finished<T>(result: Result<T, tokio::task::JoinError>) -> Option<T> {
    match result {
        Ok(done) => Some(done),
        Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
        Err(_) => None,
    }
}

async fn poll_housekeeping(housekeeping: &mut Option<AbortOnDropHandle<Found>>) -> Option<Found> {
    match housekeeping {
        Some(round) => finished(round.await),
        None => None,
    }
}

async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    if let Some(deadline) = deadline {
        tokio::time::sleep_until(deadline).await;
    }
}
