//! What every connection needs to know to answer: the timing mode and the shape of the answer.
//!
//! Built once at start-up and shared read-only (`Arc<Config>`), so the hot path never locks.

use std::time::Duration;

/// How the mock spends time before and while answering.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// Answer at once: whole bodies and whole SSE streams go out in one write.
    Instant,
    /// Wait `--latency-ms`, then answer like `instant`.
    Latency,
    /// SSE deltas are spaced `--interval-ms` apart (after an optional `--latency-ms`);
    /// whole answers behave like `latency`.
    Paced,
}

impl Mode {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Mode::Instant => "instant",
            Mode::Latency => "latency",
            Mode::Paced => "paced",
        }
    }
}

/// Shared, immutable server configuration.
#[derive(Debug, Clone)]
pub struct Config {
    pub mode: Mode,
    /// Delay before the first byte of every answer (zero in `instant` mode).
    pub latency: Duration,
    /// Number of text deltas in a stream; also the number of `t<i> ` words of a whole answer.
    pub deltas: u32,
    /// Gap between two deltas in `paced` mode.
    pub interval: Duration,
    /// `t0 t1 … t<N-1> `: the concatenation of every delta, used as the text of whole answers.
    pub full_text: Vec<u8>,
}

impl Config {
    pub fn new(mode: Mode, latency: Duration, deltas: u32, interval: Duration) -> Self {
        let latency = if mode == Mode::Instant {
            Duration::ZERO
        } else {
            latency
        };
        let mut full_text = Vec::with_capacity(deltas as usize * 7);
        for i in 0..deltas {
            crate::provider::push_delta_text(&mut full_text, i);
        }
        Config {
            mode,
            latency,
            deltas,
            interval,
            full_text,
        }
    }
}
