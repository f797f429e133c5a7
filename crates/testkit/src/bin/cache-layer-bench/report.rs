//! What a run measured: the JSON report and the table printed to standard output.

use serde::Serialize;

use crate::http_load::HttpLoadReport;
use crate::latency::LatencyReport;

/// Everything a run measured. A scenario left out with `--only` leaves its measures
/// out: absent from the JSON, and no row in the table.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub broker: String,
    pub messages: u64,
    pub malformed: u64,
    pub partitions: i32,
    pub preload_secs: f64,
    #[serde(flatten)]
    pub ceilings: Option<Ceilings>,
    #[serde(flatten)]
    pub throughput: Option<ThroughputReport>,
    pub transactional: Option<TransactionalReport>,
    #[serde(flatten)]
    pub baselines: Option<Baselines>,
    #[serde(flatten)]
    pub rebuild: Option<RebuildReport>,
    /// The daemon's throughput over the lower ceiling, once both are measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_lower_ceiling: Option<f64>,
    /// The daemon's throughput over the Kafka ceiling alone.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_kafka_ceiling: Option<f64>,
    /// The daemon's CPU per message less the raw consumer's: its own cost.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub daemon_added_cpu_us_per_msg: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_naive: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ratio_to_batched: Option<f64>,
    pub latency: Vec<LatencyReport>,
    pub http: Option<HttpLoadReport>,
    pub large: Option<LargeReport>,
}

/// The daemon over messages near the size limit: what bounds its memory is
/// `batch.max_bytes`.
#[derive(Debug, Serialize)]
pub struct LargeReport {
    pub messages: u64,
    pub mean_message_bytes: f64,
    pub daemon_secs: f64,
    pub daemon_mib_per_sec: f64,
    pub daemon_peak_rss_mib: f64,
}

impl LargeReport {
    pub fn new(
        throughput: &crate::scenarios::Throughput,
        stream: &[cache_layer_testkit::generate::Generated],
    ) -> Self {
        let bytes: usize = stream.iter().map(|m| m.payload.len()).sum();
        Self {
            messages: stream.len() as u64,
            mean_message_bytes: bytes as f64 / stream.len().max(1) as f64,
            daemon_secs: throughput.secs,
            daemon_mib_per_sec: bytes as f64 / 1_048_576.0 / throughput.secs,
            daemon_peak_rss_mib: throughput.peak_rss_kib as f64 / 1024.0,
        }
    }

    fn print_rows(&self) {
        println!(
            "| large messages: {} of {:.0} bytes on average, default batch.max_bytes | {:.1} MiB/s ({:.2} s), daemon peak RSS {:.1} MiB |",
            self.messages,
            self.mean_message_bytes,
            self.daemon_mib_per_sec,
            self.daemon_secs,
            self.daemon_peak_rss_mib
        );
    }
}

#[derive(Debug, Serialize)]
pub struct Ceilings {
    pub kafka_ceiling_msgs_per_sec: f64,
    /// The raw consumer's CPU (its process's user and system time) per message.
    pub kafka_ceiling_cpu_us_per_msg: f64,
    pub redis_ceiling_msgs_per_sec: f64,
    /// Redis's CPU over the Redis ceiling's run, per million messages (`INFO cpu`): what
    /// the daemon's writes cost Redis when nothing else runs.
    pub redis_ceiling_cpu_secs_per_million: f64,
}

#[derive(Debug, Serialize)]
pub struct ThroughputReport {
    pub daemon_msgs_per_sec: f64,
    pub daemon_secs: f64,
    pub daemon_redis_commands_per_msg: f64,
    pub daemon_pipelines: u64,
    /// The share of the run with a batch being written.
    pub daemon_writing_share: f64,
    /// The daemon's CPU over the run, in cores.
    pub daemon_cpu_share: f64,
    pub daemon_peak_rss_mib: f64,
    /// The daemon's user and system CPU over the throughput run, per message.
    pub daemon_cpu_us_per_msg: f64,
    /// Redis's CPU over the throughput run, per million messages (`INFO cpu`).
    pub redis_cpu_secs_per_million: f64,
}

/// The daemon over the same stream written in transactions, a marker per partition per
/// transaction, which the daemon steps over; in turns with the plain stream, the run of
/// each with the median time reported.
#[derive(Debug, Serialize)]
pub struct TransactionalReport {
    pub messages_per_transaction: usize,
    pub transactions: u64,
    /// The offsets the markers took: the log ends' sum less the messages.
    pub markers: i64,
    pub preload_secs: f64,
    pub rounds: usize,
    pub plain: ThroughputReport,
    pub daemon: ThroughputReport,
    /// The transactional median's throughput over the plain one's.
    pub ratio_to_plain: f64,
}

impl TransactionalReport {
    pub fn new(
        messages_per_transaction: usize,
        preload_secs: f64,
        plain: &[crate::scenarios::Throughput],
        transactional: &[crate::scenarios::Throughput],
        messages: u64,
    ) -> Self {
        let median = |runs: &[crate::scenarios::Throughput]| {
            let mut order: Vec<usize> = (0..runs.len()).collect();
            order.sort_by(|a, b| runs[*a].secs.total_cmp(&runs[*b].secs));
            ThroughputReport::new(&runs[order[runs.len() / 2]], messages)
        };
        let (plain, daemon) = (median(plain), median(transactional));
        Self {
            messages_per_transaction,
            transactions: messages.div_ceil(messages_per_transaction as u64),
            markers: transactional[0].log_end - messages as i64,
            preload_secs,
            rounds: transactional.len(),
            ratio_to_plain: daemon.daemon_msgs_per_sec / plain.daemon_msgs_per_sec,
            plain,
            daemon,
        }
    }
}

#[derive(Debug, Serialize)]
pub struct Baselines {
    pub naive_msgs_per_sec: f64,
    pub batched_msgs_per_sec: f64,
}

impl Report {
    /// Fills in the ratios of whatever was measured.
    pub fn settle(&mut self) {
        let Some(daemon) = self.throughput.as_ref().map(|t| t.daemon_msgs_per_sec) else {
            return;
        };
        if let Some(c) = &self.ceilings {
            let lower = c
                .kafka_ceiling_msgs_per_sec
                .min(c.redis_ceiling_msgs_per_sec);
            self.ratio_to_lower_ceiling = Some(daemon / lower);
            self.ratio_to_kafka_ceiling = Some(daemon / c.kafka_ceiling_msgs_per_sec);
            self.daemon_added_cpu_us_per_msg = self
                .throughput
                .as_ref()
                .map(|t| t.daemon_cpu_us_per_msg - c.kafka_ceiling_cpu_us_per_msg);
        }
        if let Some(b) = &self.baselines {
            self.ratio_to_naive = Some(daemon / b.naive_msgs_per_sec);
            self.ratio_to_batched = Some(daemon / b.batched_msgs_per_sec);
        }
    }

    pub fn print_table(&self) {
        println!("broker: {}", self.broker);
        println!(
            "messages: {} ({} malformed), {} partitions per topic, preload {:.1} s",
            self.messages, self.malformed, self.partitions, self.preload_secs
        );
        println!("| measure | value |");
        println!("|---|---|");
        if let Some(c) = &self.ceilings {
            println!(
                "| Kafka ceiling (raw consume) | {:.0} msg/s, CPU {:.2} µs per message |",
                c.kafka_ceiling_msgs_per_sec, c.kafka_ceiling_cpu_us_per_msg
            );
            println!(
                "| Redis ceiling (raw pipelined writes) | {:.0} msg/s, Redis CPU {:.2} s per million messages |",
                c.redis_ceiling_msgs_per_sec, c.redis_ceiling_cpu_secs_per_million
            );
        }
        if let Some(t) = &self.throughput {
            t.print_rows();
        }
        if let Some(ratio) = self.ratio_to_lower_ceiling {
            println!("| daemon / min(ceilings) | {ratio:.2} |");
        }
        if let Some(ratio) = self.ratio_to_kafka_ceiling {
            println!("| daemon / Kafka ceiling | {ratio:.2} |");
        }
        if let Some(added) = self.daemon_added_cpu_us_per_msg {
            println!("| daemon CPU per message less the raw consumer's | {added:.2} µs |");
        }
        if let Some(t) = &self.transactional {
            t.print_rows();
        }
        if let Some(b) = &self.baselines {
            println!(
                "| naive baseline (1 round trip/message) | {:.0} msg/s |",
                b.naive_msgs_per_sec
            );
            println!(
                "| batched baseline (1 pipeline of plain commands/polled batch) | {:.0} msg/s |",
                b.batched_msgs_per_sec
            );
        }
        if let (Some(naive), Some(batched)) = (self.ratio_to_naive, self.ratio_to_batched) {
            println!("| daemon / naive | {naive:.1}x |");
            println!("| daemon / batched | {batched:.2}x |");
        }
        if let Some(r) = &self.rebuild {
            r.print_rows();
        }
        for l in &self.latency {
            println!(
                "| latency at {} msg/s, daemon, produce to visible (achieved {:.0}) | p50 {:.1} ms, p99 {:.1} ms, p99.9 {:.1} ms ({} probes) |",
                l.rate, l.achieved_rate, l.p50_ms, l.p99_ms, l.p999_ms, l.probes
            );
            println!(
                "| latency at {} msg/s, raw consumer alone, produce to poll (achieved {:.0}) | p50 {:.1} ms, p99 {:.1} ms ({} probes; p99 {:.1} ms before the daemon, {:.1} ms after) |",
                l.rate,
                l.raw.achieved_rate,
                l.raw.p50_ms,
                l.raw.p99_ms,
                l.raw.probes,
                l.raw.p99_before_ms,
                l.raw.p99_after_ms
            );
            println!(
                "| latency at {} msg/s, raw consumer beside the daemon (control), produce to poll | p50 {:.1} ms, p99 {:.1} ms ({} probes) |",
                l.rate, l.control.p50_ms, l.control.p99_ms, l.control.probes
            );
            println!(
                "| latency at {} msg/s, daemon p99 − control p99 | {:+.1} ms |",
                l.rate, l.p99_over_control_ms
            );
            println!(
                "| latency at {} msg/s, daemon − control, probe by probe | p50 {:+.1} ms, p99 {:+.1} ms |",
                l.rate, l.control.paired_p50_ms, l.control.paired_p99_ms
            );
            println!(
                "| latency at {} msg/s, daemon p99 − raw p99 alone | {:+.1} ms |",
                l.rate, l.p99_over_raw_ms
            );
            println!(
                "| latency at {} msg/s, daemon batches | {:.0} messages, written in {:.1} ms on average |",
                l.rate, l.mean_batch, l.mean_write_ms
            );
            for (phase, cpu) in [("raw consumer", &l.raw.cpu), ("daemon", &l.cpu)] {
                println!(
                    "| latency at {} msg/s, CPU in the {phase} phase, cores | {} |",
                    l.rate,
                    cpu.describe()
                );
            }
        }
        if let Some(h) = &self.http {
            h.print_rows();
        }
        if let Some(l) = &self.large {
            l.print_rows();
        }
    }
}

impl ThroughputReport {
    pub fn new(throughput: &crate::scenarios::Throughput, messages: u64) -> Self {
        let messages = messages as f64;
        Self {
            daemon_msgs_per_sec: messages / throughput.secs,
            daemon_secs: throughput.secs,
            daemon_redis_commands_per_msg: throughput.redis_commands as f64 / messages,
            daemon_pipelines: throughput.pipelines,
            daemon_writing_share: throughput.write_secs / throughput.secs,
            daemon_cpu_share: throughput.cpu_secs / throughput.secs,
            daemon_peak_rss_mib: throughput.peak_rss_kib as f64 / 1024.0,
            daemon_cpu_us_per_msg: throughput.cpu_secs * 1e6 / messages,
            redis_cpu_secs_per_million: throughput.redis_cpu_secs * 1e6 / messages,
        }
    }

    fn print_rows(&self) {
        println!(
            "| daemon throughput | {:.0} msg/s ({:.2} s) |",
            self.daemon_msgs_per_sec, self.daemon_secs
        );
        println!(
            "| daemon Redis commands per message | {:.3} ({} pipelines) |",
            self.daemon_redis_commands_per_msg, self.daemon_pipelines
        );
        println!("| daemon peak RSS | {:.1} MiB |", self.daemon_peak_rss_mib);
        println!(
            "| daemon CPU per message | {:.2} µs ({:.2} of a core over the run) |",
            self.daemon_cpu_us_per_msg, self.daemon_cpu_share
        );
        println!(
            "| daemon time with a batch being written | {:.0}% of the run |",
            self.daemon_writing_share * 100.0
        );
        println!(
            "| Redis CPU per million messages | {:.2} s |",
            self.redis_cpu_secs_per_million
        );
    }
}

/// A Redis restarted empty under the daemon, rebuilt from Kafka.
#[derive(Debug, Serialize)]
pub struct RebuildReport {
    /// The same daemon's throughput over the stream, before the restart.
    pub rebuild_daemon_msgs_per_sec: f64,
    /// From the restart to the loss found: the next batch, or the next round of the
    /// loop's housekeeping (every second) when no message arrives.
    pub rebuild_detect_secs: f64,
    /// From the loss found to every message replayed and written again.
    pub rebuild_replay_secs: f64,
    pub rebuild_msgs_per_sec: f64,
    /// The replay's rate over the same daemon's throughput (goal: at least 0.8).
    pub rebuild_ratio_to_throughput: f64,
    /// Over the first pass alone, and over both it and the rebuild.
    pub rebuild_first_pass_peak_rss_mib: f64,
    pub rebuild_peak_rss_mib: f64,
}

impl TransactionalReport {
    fn print_rows(&self) {
        println!(
            "| transactional stream | {} transactions of {} messages, {} markers, preload {:.1} s |",
            self.transactions, self.messages_per_transaction, self.markers, self.preload_secs
        );
        for (stream, run) in [("plain", &self.plain), ("transactional", &self.daemon)] {
            println!(
                "| daemon throughput, {stream}, median of {} in turns | {:.0} msg/s ({:.2} s), CPU {:.2} µs/msg, peak RSS {:.1} MiB |",
                self.rounds,
                run.daemon_msgs_per_sec,
                run.daemon_secs,
                run.daemon_cpu_us_per_msg,
                run.daemon_peak_rss_mib
            );
        }
        println!(
            "| daemon transactional / plain | {:.2} |",
            self.ratio_to_plain
        );
    }
}

impl RebuildReport {
    pub fn new(rebuild: &crate::scenarios::Rebuild, messages: u64) -> Self {
        let throughput = messages as f64 / rebuild.throughput_secs;
        let rate = rebuild.replayed as f64 / rebuild.replay_secs;
        Self {
            rebuild_daemon_msgs_per_sec: throughput,
            rebuild_detect_secs: rebuild.detect_secs,
            rebuild_replay_secs: rebuild.replay_secs,
            rebuild_msgs_per_sec: rate,
            rebuild_ratio_to_throughput: rate / throughput,
            rebuild_first_pass_peak_rss_mib: rebuild.first_pass_peak_rss_kib as f64 / 1024.0,
            rebuild_peak_rss_mib: rebuild.peak_rss_kib as f64 / 1024.0,
        }
    }

    fn print_rows(&self) {
        println!(
            "| rebuild after Redis restarted empty | {:.0} msg/s ({:.2} s; {:.2} of the same daemon's {:.0} msg/s), found in {:.2} s |",
            self.rebuild_msgs_per_sec,
            self.rebuild_replay_secs,
            self.rebuild_ratio_to_throughput,
            self.rebuild_daemon_msgs_per_sec,
            self.rebuild_detect_secs
        );
        println!(
            "| daemon peak RSS over a rebuild | {:.1} MiB ({:.1} MiB before Redis restarted) |",
            self.rebuild_peak_rss_mib, self.rebuild_first_pass_peak_rss_mib
        );
    }
}
