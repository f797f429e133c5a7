//! Hostile input for the decoder and validator, as a proptest suite (cargo fuzz needs a
//! nightly toolchain, which these machines do not have): nothing panics, everything
//! accepted keeps the models' invariants, and hostile sizes stay bounded.

use cache_layer::cache::WriteSet;
use cache_layer::config::Ttls;
use cache_layer::models::{decode, Message, MessageKind, RejectReason, MAX_KEYWORD_BYTES};
use cache_layer::schema::Keys;
use chrono::Utc;
use proptest::prelude::*;

const KINDS: [MessageKind; 3] = [
    MessageKind::Trends,
    MessageKind::UserMetrics,
    MessageKind::Windows,
];

/// Checks what a decoded message promises, and that it turns into pipeline commands.
fn assert_invariants(message: Message) {
    match &message {
        Message::Trends(alerts) => {
            for a in alerts {
                let keyword = a.normalized_keyword();
                assert!(!keyword.is_empty() && keyword.len() <= MAX_KEYWORD_BYTES);
                assert!(a.window_end >= a.window_start);
                assert!((0.0..=1.0).contains(&a.confidence_score) && a.growth_rate.is_finite());
                assert!(a.frequency >= 0 && (1..=999_999).contains(&a.rank));
            }
        }
        Message::Windows(counts) => {
            for c in counts {
                assert!(!c.normalized_keyword.is_empty() && c.count >= 0);
                assert!(!c.window_id().is_empty());
            }
        }
        Message::UserMetrics(all) => {
            for m in all {
                assert!(m.total_active_users >= 0 && m.posts_per_minute.is_finite());
            }
        }
    }
    let mut set = WriteSet::new();
    set.add_message(message, Utc::now());
    let ttls = Ttls::uniform(std::time::Duration::from_secs(60));
    set.append_to(
        &mut redis::pipe(),
        &Keys::new(""),
        &ttls,
        Utc::now(),
        Utc::now(),
    );
}

fn json_value() -> impl Strategy<Value = String> {
    prop_oneof![
        any::<i64>().prop_map(|n| n.to_string()),
        any::<f64>().prop_map(|x| format!("{x:?}")),
        Just("NaN".to_owned()),
        Just("-Infinity".to_owned()),
        Just("1e999".to_owned()),
        Just("null".to_owned()),
        Just("[]".to_owned()),
        "\\PC{0,40}".prop_map(|s| serde_json::to_string(&s).unwrap()),
        Just("\"2024-01-01T12:00:00\"".to_owned()),
        Just("\"2024-01-01T11:00:00Z\"".to_owned()),
        Just("\"9999-12-31T23:59:59Z\"".to_owned()),
    ]
}

const FIELDS: [&str; 16] = [
    "keyword",
    "frequency",
    "growth_rate",
    "confidence_score",
    "window_start",
    "window_end",
    "sample_posts",
    "unique_authors",
    "rank",
    "count",
    "window_id",
    "total_active_users",
    "posts_per_minute",
    "top_contributors",
    "active_users",
    "timestamp",
];

/// An object made of the models' own field names with arbitrary values.
fn plausible_object() -> impl Strategy<Value = String> {
    proptest::collection::vec((0..FIELDS.len(), json_value()), 0..16).prop_map(|fields| {
        let body: Vec<String> = fields
            .iter()
            .map(|(f, v)| format!("\"{}\":{v}", FIELDS[*f]))
            .collect();
        format!("{{{}}}", body.join(","))
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        for kind in KINDS {
            if let Ok(message) = decode(kind, &bytes) {
                assert_invariants(message);
            }
        }
    }

    #[test]
    fn plausible_objects_are_accepted_only_when_valid(objects in proptest::collection::vec(plausible_object(), 1..4)) {
        let one = objects[0].clone();
        let many = format!("[{}]", objects.join(","));
        for kind in KINDS {
            for input in [&one, &many] {
                if let Ok(message) = decode(kind, input.as_bytes()) {
                    assert_invariants(message);
                }
            }
        }
    }
}

#[test]
fn deep_nesting_is_an_error_not_a_stack_overflow() {
    for depth in [200, 10_000, 1_000_000] {
        let nested = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
        for kind in KINDS {
            let err = decode(kind, nested.as_bytes()).unwrap_err();
            assert!(
                matches!(err.reason, RejectReason::NotJson | RejectReason::WrongShape),
                "{err}"
            );
        }
        let objects = format!("{}1{}", "{\"a\":".repeat(depth), "}".repeat(depth));
        assert!(decode(MessageKind::Trends, objects.as_bytes()).is_err());
    }
}

/// Sizes are bounded before decoding by the batch (its unit tests); under that limit, an
/// over-long keyword is refused by name.
#[test]
fn an_over_long_keyword_is_refused_by_name() {
    let keyword = format!(
        r#"{{"keyword":"{}","frequency":1,"growth_rate":0,"confidence_score":0.5,"window_start":"2024-01-01T00:00:00Z","window_end":"2024-01-01T00:01:00Z","unique_authors":0,"rank":1}}"#,
        "ß".repeat(200)
    );
    assert_eq!(
        decode(MessageKind::Trends, keyword.as_bytes())
            .unwrap_err()
            .reason,
        RejectReason::KeywordTooLong
    );
}
