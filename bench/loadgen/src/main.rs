//! `loadgen`: the benchmark load driver for the gateway and its mock upstream.
//!
//! The same driver, with the same request bytes, is pointed first at `mock-upstream` directly and
//! then at the gateway in front of it; the difference between the two runs is what the gateway
//! adds. Its own cost therefore has to be small and identical on both paths: a hand-written
//! HTTP/1.1 client over tokio (one `write` per request, keep-alive connections, `TCP_NODELAY`,
//! incremental chunked decoding), no HTTP framework, no per-request allocation beyond samples.
//!
//! # Open loop and coordinated omission (`rate`)
//!
//! A closed-loop driver (N workers, each sending when its last answer arrives) slows down when
//! the server does: during a 200 ms stall it simply sends nothing, so the requests that *would*
//! have waited are never measured and the tail looks far better than what users see. That is
//! coordinated omission. `rate` is open loop instead: request `k` is due at `start + k/rate`,
//! fixed in advance, whatever the server does. A bounded pool of connections (one worker each)
//! takes the due requests in order; a request that finds every connection busy waits, and its
//! latency is measured **from its due time**, so the wait counts. A request whose due time is
//! already older than the timeout when a connection frees up is counted as a timeout without
//! being sent (`expired`), which also keeps the run bounded when the server stops answering.
//!
//! tokio's timer has millisecond granularity, so a worker that was idle wakes up to ~1 ms after
//! the due time. That lag belongs to the driver, not to the server: when a connection was free
//! before the due time, latency is measured from the actual send instead, and the lag is
//! reported on its own (`send_lag_us`) so a driver that cannot keep up is visible.
//!
//! # Closed loop (`closed`)
//!
//! `--concurrency` workers send back to back for `--duration`: the "requests per second at
//! concurrency 64" figure. Latency runs from each request's own send.
//!
//! # Streams and frame markers (`streams`)
//!
//! `mock-upstream --mode paced` sends delta `i` with the text `t<i> ` every `--interval-ms`.
//! The gateway re-frames the deltas (raw text, `event: content_chunk` SSE, Anthropic SSE passed
//! through), but the text survives, so the driver ignores framing and scans the decoded body for
//! `t<i> ` markers at a word boundary (see [`markers`]). `streams` opens `--streams` connections
//! first, then starts one streaming request on each (spread over `--ramp-ms`), reads every body
//! to its end and records per stream: the time from writing the request to the arrival of `t0`
//! (TTFT), the arrival of each marker (timestamp of the `read` that completed it), and whether
//! markers `0..D-1` arrived exactly once and in order. A stream that misses, repeats or
//! reorders a marker, or is cut short, is *dropped*. Gaps between consecutive markers of clean
//! streams give the inter-frame distribution; a gap above `interval + --late-slack-ms` is a
//! *late frame* (a frame held back and then flushed with the next one).
//!
//! # Output
//!
//! One JSON object on stdout ([`report::Report`]), a human summary on stderr. Percentiles are
//! exact nearest-rank values over all samples ([`stats`]). The exit code is 0 when the run
//! happened (failures are in the JSON) and 2 when it could not start.
//!
//! ```text
//! loadgen rate --url http://127.0.0.1:9000/v1/messages --body req.json --rate 1000 --duration 30s
//! loadgen closed --url http://127.0.0.1:9000/v1/messages --body req.json --concurrency 64 --duration 30s
//! loadgen streams --url http://127.0.0.1:9000/v1/messages --body stream.json --streams 512 --deltas 64
//! ```

mod http;
mod markers;
mod report;
mod run;
mod stats;

#[cfg(test)]
mod tests;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use serde_json::json;

use report::Report;
use run::{ClosedPlan, Ctx, RatePlan, StreamPlan};

/// Benchmark load driver: open-loop and closed-loop HTTP load, and streaming (SSE) frame timing.
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, about)]
struct Cli {
    /// Runtime worker threads of the driver (pin it away from the server with taskset).
    #[arg(long, global = true, default_value_t = 1,
          value_parser = clap::value_parser!(u16).range(1..=256))]
    threads: u16,
    #[command(subcommand)]
    command: Command,
}

/// What to send, shared by every mode.
#[derive(Debug, Args)]
struct Target {
    /// Plain-HTTP URL, `http://host:port/path`; the host is resolved once, at start.
    #[arg(long)]
    url: String,
    /// File holding the request body (sent with `content-type: application/json` unless a
    /// Content-Type header is given).
    #[arg(long)]
    body: Option<PathBuf>,
    /// Extra request header, `'Name: value'` (repeatable).
    #[arg(long = "header", short = 'H', value_name = "NAME: VALUE")]
    headers: Vec<String>,
    /// Request method [default: POST with --body, GET without].
    #[arg(long)]
    method: Option<String>,
    /// Per-request timeout (`30`, `30s`, `500ms`, `2m`).
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    timeout: Duration,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Open loop: constant arrival rate, latency from each request's due time.
    Rate {
        #[command(flatten)]
        target: Target,
        /// Requests per second.
        #[arg(long, value_parser = parse_rate)]
        rate: f64,
        /// Measured window (`30`, `30s`, `500ms`, `2m`).
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        /// Connections (most requests in flight at once).
        #[arg(long, default_value_t = 128, value_parser = clap::value_parser!(u32).range(1..=65_535))]
        connections: u32,
        /// Unmeasured load at the same rate before the window.
        #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
        warmup: Duration,
    },
    /// Closed loop: fixed concurrency, each worker sends when its last answer arrived.
    Closed {
        #[command(flatten)]
        target: Target,
        /// Concurrent requests (one connection each).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=65_535))]
        concurrency: u32,
        /// Measured window.
        #[arg(long, value_parser = parse_duration)]
        duration: Duration,
        /// Unmeasured load before the window.
        #[arg(long, default_value = "0s", value_parser = parse_duration_or_zero)]
        warmup: Duration,
    },
    /// Concurrent streams: TTFT, gaps between `t<i> ` frame markers, dropped frames.
    Streams {
        #[command(flatten)]
        target: Target,
        /// Concurrent streaming requests (one connection each).
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        streams: u32,
        /// Markers `t0`…`t<D-1>` each stream must carry.
        #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1_000_000))]
        deltas: u32,
        /// Spread the stream starts evenly over this many milliseconds.
        #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        ramp_ms: u64,
        /// The upstream's gap between deltas (reference for late frames).
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        interval_ms: u64,
        /// A gap above interval + this is a late frame.
        #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(0..=3_600_000))]
        late_slack_ms: u64,
    },
}

/// Longest window or timeout accepted.
const MAX_DURATION: Duration = Duration::from_secs(24 * 3600);
/// Most open-loop requests in one run (8 bytes of latency sample each).
const MAX_TICKETS: f64 = 200_000_000.0;

/// `30` (seconds), `1.5s`, `500ms`, `2m`; zero allowed.
fn parse_duration_or_zero(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (number, scale) = if let Some(n) = s.strip_suffix("ms") {
        (n, 1e-3)
    } else if let Some(n) = s.strip_suffix('s') {
        (n, 1.0)
    } else if let Some(n) = s.strip_suffix('m') {
        (n, 60.0)
    } else {
        (s, 1.0)
    };
    let value: f64 = number
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected a duration such as 30, 30s, 500ms or 2m"))?;
    let secs = value * scale;
    if !secs.is_finite() || secs < 0.0 || secs > MAX_DURATION.as_secs_f64() {
        return Err(format!("{s:?}: must be between 0 and 24 h"));
    }
    Ok(Duration::from_secs_f64(secs))
}

/// Like [`parse_duration_or_zero`], but at least one millisecond.
fn parse_duration(s: &str) -> Result<Duration, String> {
    let d = parse_duration_or_zero(s)?;
    if d < Duration::from_millis(1) {
        return Err(format!("{s:?}: must be at least 1 ms"));
    }
    Ok(d)
}

fn parse_rate(s: &str) -> Result<f64, String> {
    let rate: f64 = s
        .trim()
        .parse()
        .map_err(|_| format!("{s:?}: expected requests per second"))?;
    if !rate.is_finite() || rate <= 0.0 || rate > 10_000_000.0 {
        return Err(format!("{s:?}: must be above 0 and at most 10 000 000"));
    }
    Ok(rate)
}

/// Reads the body, resolves the URL and builds the request bytes.
async fn prepare(target: &Target) -> Result<Arc<Ctx>, String> {
    let body = match &target.body {
        // Read once before the clock starts; blocking here is harmless.
        Some(path) => {
            Some(std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?)
        }
        None => None,
    };
    let method = target
        .method
        .clone()
        .unwrap_or_else(|| if body.is_some() { "POST" } else { "GET" }.to_owned());
    let endpoint = http::resolve(&target.url).await?;
    let request = http::build_request(&endpoint, &method, &target.headers, body.as_deref())?;
    Ok(Arc::new(Ctx {
        addr: endpoint.addr,
        request,
        timeout: target.timeout,
    }))
}

/// Runs the chosen mode and builds its report.
async fn execute(command: Command) -> Result<Report, String> {
    match command {
        Command::Rate {
            target,
            rate,
            duration,
            connections,
            warmup,
        } => {
            if rate * (duration + warmup).as_secs_f64() > MAX_TICKETS {
                return Err(format!(
                    "rate × (duration + warmup) must stay under {MAX_TICKETS} requests"
                ));
            }
            let ctx = prepare(&target).await?;
            let plan = RatePlan {
                rate,
                duration,
                warmup,
                connections: connections as usize,
            };
            let mut result = run::run_rate(ctx, plan).await;
            let config = json!({
                "rate": rate,
                "duration_s": duration.as_secs_f64(),
                "warmup_s": warmup.as_secs_f64(),
                "connections": connections,
                "timeout_s": target.timeout.as_secs_f64(),
            });
            Ok(Report::new(
                "rate",
                &target.url,
                config,
                &mut result.tally,
                result.elapsed,
                None,
            ))
        }
        Command::Closed {
            target,
            concurrency,
            duration,
            warmup,
        } => {
            let ctx = prepare(&target).await?;
            let plan = ClosedPlan {
                concurrency: concurrency as usize,
                duration,
                warmup,
            };
            let mut result = run::run_closed(ctx, plan).await;
            let config = json!({
                "concurrency": concurrency,
                "duration_s": duration.as_secs_f64(),
                "warmup_s": warmup.as_secs_f64(),
                "timeout_s": target.timeout.as_secs_f64(),
            });
            Ok(Report::new(
                "closed",
                &target.url,
                config,
                &mut result.tally,
                result.elapsed,
                None,
            ))
        }
        Command::Streams {
            target,
            streams,
            deltas,
            ramp_ms,
            interval_ms,
            late_slack_ms,
        } => {
            let ctx = prepare(&target).await?;
            let plan = StreamPlan {
                streams: streams as usize,
                deltas,
                ramp: Duration::from_millis(ramp_ms),
                interval: Duration::from_millis(interval_ms),
                late_slack: Duration::from_millis(late_slack_ms),
            };
            let mut result = run::run_streams(ctx, plan).await;
            let config = json!({
                "streams": streams,
                "deltas": deltas,
                "ramp_ms": ramp_ms,
                "interval_ms": interval_ms,
                "late_slack_ms": late_slack_ms,
                "timeout_s": target.timeout.as_secs_f64(),
            });
            Ok(Report::new(
                "streams",
                &target.url,
                config,
                &mut result.tally,
                result.elapsed,
                Some((&mut result.streams, deltas, plan.interval, plan.late_slack)),
            ))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cli.threads))
        .thread_name("loadgen")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            let _ = writeln!(std::io::stderr(), "loadgen: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let result = runtime.block_on(execute(cli.command));
    // Write errors (a closed pipe) are ignored: there is nobody left to tell.
    match result {
        Ok(report) => {
            let _ = std::io::stderr().write_all(report.human().as_bytes());
            match serde_json::to_string_pretty(&report) {
                Ok(json) => {
                    let _ = writeln!(std::io::stdout(), "{json}");
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    let _ = writeln!(std::io::stderr(), "loadgen: cannot encode the report: {e}");
                    ExitCode::FAILURE
                }
            }
        }
        Err(message) => {
            let _ = writeln!(std::io::stderr(), "loadgen: {message}");
            ExitCode::from(2)
        }
    }
}
