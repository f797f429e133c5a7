//! The Prometheus exporter: the process-wide recorder, set up from the [`catalog`] of
//! every metric (HELP lines, buckets, the series a first scrape has), and the text
//! exposition that `GET /metrics` serves. What moves the metrics is in `events`, one
//! function per thing that happened.

use std::sync::OnceLock;

use metrics::{counter, describe_counter, describe_gauge, describe_histogram, gauge};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

mod catalog;
mod lag;

pub use catalog::*;
pub(crate) use lag::{consumer_lag, lag_revoked};

use crate::models::RejectReason;

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Installs the process-wide Prometheus recorder (once; later calls return the same
/// handle) and describes every metric, which gives each its HELP line.
pub fn install() -> PrometheusHandle {
    HANDLE
        .get_or_init(|| {
            let mut builder = PrometheusBuilder::new();
            for metric in ALL {
                if let Kind::Histogram(buckets) = metric.kind {
                    builder = builder
                        .set_buckets_for_metric(Matcher::Full(metric.name.into()), buckets)
                        .expect("the catalog's buckets are not empty");
                }
            }
            let handle = builder
                .install_recorder()
                .expect("the metrics recorder is installed once, here");
            describe();
            handle
        })
        .clone()
}

/// The rendered text exposition, for `GET /metrics`.
pub(crate) fn render() -> String {
    let mut text = install().render();
    lag::render(&mut text);
    text
}

fn describe() {
    for metric in ALL {
        let (name, help) = (metric.name, metric.help);
        match (metric.kind, metric.unit) {
            (Kind::Counter, Some(unit)) => describe_counter!(name, unit, help),
            (Kind::Counter, None) => describe_counter!(name, help),
            (Kind::Gauge, Some(unit)) => describe_gauge!(name, unit, help),
            (Kind::Gauge, None) => describe_gauge!(name, help),
            (Kind::Histogram(_), Some(unit)) => describe_histogram!(name, unit, help),
            (Kind::Histogram(_), None) => describe_histogram!(name, help),
            (Kind::Rendered, _) => {}
        }
    }
}

/// Sets the series each metric of the catalog starts with, for the source `topics`.
pub(crate) fn zeroed(topics: &[&str]) {
    for metric in ALL {
        let name = metric.name;
        let zero = |labels: &[(&'static str, String)]| match metric.kind {
            Kind::Counter => counter!(name, labels).increment(0),
            Kind::Gauge => gauge!(name, labels).set(0.0),
            Kind::Histogram(_) | Kind::Rendered => {}
        };
        match metric.zero {
            Zero::No => {}
            Zero::Once => zero(&[]),
            Zero::PerTopic => {
                for topic in topics {
                    zero(&[("topic", (*topic).to_owned())]);
                }
            }
            Zero::PerTopicAndReason => {
                for topic in topics {
                    for reason in RejectReason::ALL {
                        zero(&[
                            ("topic", (*topic).to_owned()),
                            ("reason", reason.as_str().to_owned()),
                        ]);
                    }
                }
            }
            Zero::Each(label, values) => {
                for value in values() {
                    zero(&[(label, value.to_owned())]);
                }
            }
        }
    }
}
