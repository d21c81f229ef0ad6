//! Encoding speed of the compact `p50k_base` encoder against `tiktoken-rs`, side by side on
//! the same texts in one run.
//!
//! `cargo bench --bench tokenizer` (release profile). Plain timing loops, no harness: the
//! numbers are medians of several rounds.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::time::{Duration, Instant};

use ai_gateway::code_suggestions::bpe::Bpe;

fn median_per_call(rounds: usize, calls: usize, mut f: impl FnMut() -> usize) -> Duration {
    let mut times = Vec::with_capacity(rounds);
    let mut sink = 0usize;
    for _ in 0..rounds {
        let start = Instant::now();
        for _ in 0..calls {
            sink = sink.wrapping_add(std::hint::black_box(f()));
        }
        times.push(start.elapsed() / calls as u32);
    }
    std::hint::black_box(sink);
    times.sort();
    times[times.len() / 2]
}

fn main() {
    let build = Instant::now();
    let ours = Bpe::p50k_base().unwrap();
    let ours_build = build.elapsed();
    let build = Instant::now();
    let reference = tiktoken_rs::p50k_base().unwrap();
    let reference_build = build.elapsed();
    println!("build: compact {ours_build:?}, tiktoken-rs {reference_build:?}");

    let code = "import os\nfrom typing import Optional\n\n\
        def handler(request: dict, retries: int = 3) -> Optional[str]:\n    \
        \"\"\"Handle it; don't panic.\"\"\"\n    for i in range(retries):\n        \
        if request.get('x%d' % i) != None:  # it's 42\n            \
        return f\"{i:>4}\\t{request!r}\"\n    return None\n\n";
    let texts = [
        ("prompt line (40 B)", "def is_even(n: int) ->".repeat(2)),
        ("code (8 KB)", code.repeat(8192 / code.len())),
        (
            "prose, non-ASCII (4 KB)",
            "Größe naïve café 日本語のコメント, it's ".repeat(100),
        ),
    ];
    for (name, text) in &texts {
        assert_eq!(ours.encode_ordinary(text), reference.encode_ordinary(text));
        let calls = (200_000 / text.len()).max(20);
        let a = median_per_call(9, calls, || ours.encode_ordinary(text).len());
        let b = median_per_call(9, calls, || reference.encode_ordinary(text).len());
        println!(
            "{name:<26} compact {a:>10.2?}  tiktoken-rs {b:>10.2?}  ratio {:.2}x",
            b.as_secs_f64() / a.as_secs_f64()
        );
    }
}
