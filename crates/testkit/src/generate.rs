//! A synthetic Bluesky-trend stream: Zipf-distributed keywords (hashtags, emoji, mixed
//! case), one-minute windows, the three message kinds in a chosen mix, and a chosen
//! fraction of malformed messages of every kind the validator knows.

use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::path::Path;

use chrono::{DateTime, Duration, Utc};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution, Zipf};

use cache_layer::models::{
    normalize_keyword, Contributor, MessageKind, TrendAlert, UserMetrics, WindowedKeywordCount,
};

/// What to generate.
#[derive(Debug, Clone)]
pub struct GeneratorConfig {
    pub seed: u64,
    /// Distinct keywords.
    pub vocabulary: usize,
    /// Zipf exponent: 1.0 is the classic word-frequency skew.
    pub exponent: f64,
    /// Fractions of trend alerts and user metrics; the rest are window counts.
    pub trend_share: f64,
    pub user_share: f64,
    /// Fraction of malformed messages, spread over all kinds.
    pub malformed: f64,
    /// Messages per one-minute window.
    pub messages_per_window: u64,
    pub start: DateTime<Utc>,
}

impl Default for GeneratorConfig {
    fn default() -> Self {
        Self {
            seed: 42,
            vocabulary: 50_000,
            exponent: 1.0,
            trend_share: 0.19,
            user_share: 0.01,
            malformed: 0.001,
            messages_per_window: 10_000,
            start: DateTime::from_timestamp(1_735_689_600, 0).expect("valid"), // 2025-01-01
        }
    }
}

/// One generated Kafka record.
#[derive(Debug, Clone, PartialEq)]
pub struct Generated {
    pub kind: MessageKind,
    pub key: String,
    pub payload: String,
    pub malformed: bool,
}

pub struct Generator {
    config: GeneratorConfig,
    rng: StdRng,
    zipf: Zipf<f64>,
    produced: u64,
    /// When set, the window every message falls in, instead of one counted from
    /// `messages_per_window` (the demo moves it with the wall clock).
    window: Option<DateTime<Utc>>,
}

const WORDS: [&str; 24] = [
    "rust",
    "python",
    "bluesky",
    "election",
    "music",
    "science",
    "art",
    "football",
    "ai",
    "climate",
    "gaming",
    "movies",
    "books",
    "coffee",
    "space",
    "crypto",
    "linux",
    "photography",
    "news",
    "cats",
    "dogs",
    "travel",
    "food",
    "design",
];
const EMOJI: [&str; 8] = ["🚀", "🔥", "🦀", "🎉", "🌍", "📈", "💙", "✨"];
const CJK: [&str; 4] = ["東京", "音楽", "ニュース", "天気"];

impl Generator {
    pub fn new(config: GeneratorConfig) -> Self {
        let zipf = Zipf::new(config.vocabulary.max(1) as f64, config.exponent)
            .expect("valid Zipf parameters");
        Self {
            rng: StdRng::seed_from_u64(config.seed),
            zipf,
            config,
            produced: 0,
            window: None,
        }
    }

    /// Puts every following message in the one-minute window starting at `start`.
    pub fn set_window(&mut self, start: DateTime<Utc>) {
        self.window = Some(start);
    }

    /// The keyword of vocabulary entry `index`, in its canonical spelling.
    fn keyword(index: usize) -> String {
        let word = WORDS[index % WORDS.len()];
        let variant = index / WORDS.len();
        match variant % 6 {
            0 if variant == 0 => word.to_owned(),
            0 => format!("{word}{variant}"),
            1 => format!("#{word}{variant}"),
            2 => format!("{word} {}", EMOJI[variant % EMOJI.len()]),
            3 => format!("{}{variant}", CJK[variant % CJK.len()]),
            4 => format!("{word}_{variant}"),
            _ => format!("#{}{variant}", word.to_uppercase()),
        }
    }

    /// The same keyword as a person might type it: sometimes capitalised or shouted.
    fn spelling(&mut self, keyword: &str) -> String {
        match self.rng.random_range(0..10) {
            0 => keyword.to_uppercase(),
            1 => {
                let mut chars = keyword.chars();
                chars
                    .next()
                    .map(|c| c.to_uppercase().chain(chars).collect())
                    .unwrap_or_default()
            }
            _ => keyword.to_owned(),
        }
    }

    fn window(&self) -> (DateTime<Utc>, DateTime<Utc>) {
        let start = self.window.unwrap_or_else(|| {
            let minute = (self.produced / self.config.messages_per_window.max(1)) as i64;
            self.config.start + Duration::minutes(minute)
        });
        (start, start + Duration::minutes(1))
    }

    /// The next record of the stream.
    pub fn next_message(&mut self) -> Generated {
        let roll: f64 = self.rng.random();
        let kind = if roll < self.config.trend_share {
            MessageKind::Trends
        } else if roll < self.config.trend_share + self.config.user_share {
            MessageKind::UserMetrics
        } else {
            MessageKind::Windows
        };
        let malformed = self.rng.random_bool(self.config.malformed.clamp(0.0, 1.0));
        let index = self.zipf.sample(&mut self.rng) as usize - 1;
        let keyword = Self::keyword(index);
        let key = match kind {
            MessageKind::UserMetrics => "user-metrics".to_owned(),
            _ => normalize_keyword(&keyword),
        };
        let payload = if malformed {
            self.malformed(kind, &keyword)
        } else {
            self.valid(kind, index, &keyword)
        };
        self.produced += 1;
        Generated {
            kind,
            key,
            payload,
            malformed,
        }
    }

    fn valid(&mut self, kind: MessageKind, index: usize, keyword: &str) -> String {
        let (window_start, window_end) = self.window();
        let spelling = self.spelling(keyword);
        let popularity = (1_000_000 / (index as i64 + 1)).max(1);
        let json = match kind {
            MessageKind::Trends => {
                let frequency = popularity + self.rng.random_range(0..50);
                serde_json::to_string(&TrendAlert {
                    keyword: spelling,
                    frequency,
                    growth_rate: self.rng.random_range(-0.5..8.0),
                    confidence_score: self.rng.random_range(0.5..=1.0),
                    window_start,
                    window_end,
                    sample_posts: vec![format!("Everyone is talking about {keyword} today")],
                    unique_authors: frequency / 2,
                    rank: (index as i64 + 1).min(cache_layer::models::MAX_RANK),
                })
            }
            MessageKind::Windows => {
                let count = popularity / 10 + self.rng.random_range(1..20);
                serde_json::to_string(&WindowedKeywordCount {
                    normalized_keyword: normalize_keyword(&spelling),
                    keyword: spelling,
                    count,
                    window_start,
                    window_end,
                    unique_authors: (count / 2).max(1),
                    window_id: None,
                })
            }
            MessageKind::UserMetrics => {
                let users: Vec<String> = (0..20)
                    .map(|_| format!("did:plc:user{}", self.rng.random_range(0..100_000)))
                    .collect();
                serde_json::to_string(&UserMetrics {
                    total_active_users: self.rng.random_range(1_000..50_000),
                    posts_per_minute: self.rng.random_range(100.0..5_000.0),
                    top_contributors: users
                        .iter()
                        .take(5)
                        .map(|u| Contributor {
                            user_id: u.clone(),
                            post_count: self.rng.random_range(1..200),
                        })
                        .collect(),
                    active_users: Some(users),
                    timestamp: Some(window_end),
                })
            }
        };
        json.expect("generated messages serialize")
    }

    /// A message that the validator must reject, of one of several kinds of wrong.
    fn malformed(&mut self, kind: MessageKind, keyword: &str) -> String {
        let valid = self.valid(kind, 0, keyword);
        match self.rng.random_range(0..5) {
            0 => {
                let mut cut = valid.len() / 2;
                while !valid.is_char_boundary(cut) {
                    cut -= 1;
                }
                valid[..cut].to_owned()
            }
            1 => "{\"hello\": \"world\"}".to_owned(),
            2 => valid.replacen(':', ": NaN, \"_was\":", 1),
            3 => {
                // Valid JSON with one value out of range; the original moves to an ignored field.
                let (field, bad) = match kind {
                    MessageKind::Trends => ("\"confidence_score\":", "1.5"),
                    MessageKind::Windows => ("\"count\":", "-1"),
                    MessageKind::UserMetrics => ("\"total_active_users\":", "-1"),
                };
                valid.replacen(field, &format!("{field}{bad},\"_was\":"), 1)
            }
            _ => "not json at all".to_owned(),
        }
    }
}

/// Writes `count` records as `KEY<TAB>VALUE` lines, one file per topic, into `dir`.
/// Returns how many records went to each file, and how many were malformed.
pub fn write_files(
    dir: &Path,
    topics: [&str; 3],
    count: u64,
    config: GeneratorConfig,
) -> io::Result<GeneratedCounts> {
    std::fs::create_dir_all(dir)?;
    let mut files = topics
        .iter()
        .map(|topic| File::create(dir.join(format!("{topic}.jsonl"))).map(BufWriter::new))
        .collect::<io::Result<Vec<_>>>()?;
    let mut generator = Generator::new(config);
    let mut counts = GeneratedCounts::default();
    for _ in 0..count {
        let message = generator.next_message();
        let slot = match message.kind {
            MessageKind::Trends => 0,
            MessageKind::UserMetrics => 1,
            MessageKind::Windows => 2,
        };
        writeln!(files[slot], "{}\t{}", message.key, message.payload)?;
        counts.per_topic[slot] += 1;
        counts.malformed += u64::from(message.malformed);
    }
    for file in &mut files {
        file.flush()?;
    }
    Ok(counts)
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct GeneratedCounts {
    /// Trends, user metrics, windows.
    pub per_topic: [u64; 3],
    pub malformed: u64,
}

#[cfg(test)]
mod tests {
    use super::*;
    use cache_layer::models::decode;

    #[test]
    fn valid_messages_decode_and_malformed_ones_are_rejected() {
        let mut generator = Generator::new(GeneratorConfig {
            malformed: 0.2,
            trend_share: 0.4,
            user_share: 0.2,
            ..GeneratorConfig::default()
        });
        let (mut good, mut bad) = (0, 0);
        for _ in 0..2_000 {
            let message = generator.next_message();
            let decoded = decode(message.kind, message.payload.as_bytes());
            assert_eq!(decoded.is_err(), message.malformed, "{message:?}");
            if message.malformed {
                bad += 1
            } else {
                good += 1
            }
        }
        assert!(good > 1_000 && bad > 200, "{good} good, {bad} bad");
    }

    #[test]
    fn keywords_are_skewed_and_varied() {
        let mut generator = Generator::new(GeneratorConfig::default());
        let mut hashtags = 0;
        let mut top = 0;
        for _ in 0..5_000 {
            let message = generator.next_message();
            if message.kind != MessageKind::UserMetrics {
                top += u32::from(message.key == "rust");
                hashtags += u32::from(message.key.starts_with('#'));
            }
        }
        assert!(top > 200, "the most popular keyword dominates: {top}");
        assert!(hashtags > 50, "{hashtags}");
        assert!(
            Generator::keyword(24 * 2 + 3).contains(' '),
            "emoji keywords exist"
        );
    }
}
