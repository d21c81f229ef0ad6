//! `mock-upstream`: a stand-in LLM provider for load tests of the gateway.
//!
//! It answers the Anthropic Messages API (`POST /v1/messages`), Anthropic legacy Text Completions
//! (`POST /v1/complete`) and the OpenAI-compatible Chat Completions and Completions APIs
//! (`POST /v1/chat/completions`, `POST /v1/completions`), plus `GET /health`. Whole answers and
//! SSE streams carry the same bytes and framing as the real providers, so the gateway under test
//! does all of its real parsing and re-framing work.
//!
//! # Why it has no HTTP framework
//!
//! A benchmark should measure the gateway, not its upstream. The mock therefore does as little as
//! possible per request: a hand-written HTTP/1.1 parser that works in place on the read buffer, no
//! JSON parsing (a byte scan finds `"stream": true` and the `"model"`), bodies assembled from byte
//! strings into per-connection buffers that are reused, one `write` per answer (or per due frame),
//! and `TCP_NODELAY` on every socket so no frame waits for Nagle or delayed ACKs. With
//! `--threads 1` (the default) it fits on one core that can be pinned away from the gateway.
//!
//! # Modes
//!
//! * `instant`: answer at once; a stream's frames all go out in one write.
//! * `latency`: wait `--latency-ms`, then answer like `instant` (time to first byte and to first
//!   token are both the latency).
//! * `paced`: after an optional `--latency-ms`, a stream sends its `--deltas` text deltas
//!   `--interval-ms` apart, each in its own chunk and write; delta `i` is due at
//!   `i × interval` after the first, measured from one start so the pacing never drifts. Whole
//!   answers are not paced.
//!
//! Delta `i` always has the text `t<i> ` (`t0 `, `t1 `, …), so a client can detect dropped or
//! reordered frames and time each one; a whole answer's text is all deltas concatenated.
//! Usage reports `input_tokens` = request body bytes / 4 and `output_tokens` = `--deltas`.
//!
//! # Running it
//!
//! ```text
//! cargo run --release -p mock-upstream -- --listen 127.0.0.1:9000 --mode paced \
//!     --deltas 64 --interval-ms 20 --threads 1
//! taskset -c 3 target/release/mock-upstream --mode latency --latency-ms 20
//! curl -s localhost:9000/v1/messages -d '{"model":"claude-3-5-sonnet-20240620","stream":true}'
//! ```

mod config;
mod http;
mod provider;
mod scan;
mod server;

use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use clap::{CommandFactory, Parser};
use tokio::net::{TcpListener, TcpSocket};

use config::{Config, Mode};

/// Mock LLM provider (Anthropic and OpenAI-compatible) for gateway benchmarks.
#[derive(Debug, Parser)]
#[command(name = "mock-upstream", version, about)]
struct Cli {
    /// Address to listen on (IP:PORT).
    #[arg(long, default_value = "127.0.0.1:9000")]
    listen: SocketAddr,
    /// Timing of the answers.
    #[arg(long, value_enum, default_value_t = Mode::Instant)]
    mode: Mode,
    /// Delay before answering, in milliseconds (modes `latency` and `paced`).
    #[arg(long, default_value_t = 0)]
    latency_ms: u64,
    /// Text deltas per stream (also the words of a whole answer).
    #[arg(long, default_value_t = 64, value_parser = clap::value_parser!(u32).range(0..=1_000_000))]
    deltas: u32,
    /// Gap between two deltas in `paced` mode, in milliseconds.
    #[arg(long, default_value_t = 20)]
    interval_ms: u64,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u16).range(1..))]
    threads: u16,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if cli.mode == Mode::Instant && cli.latency_ms > 0 {
        Cli::command()
            .error(
                clap::error::ErrorKind::ArgumentConflict,
                "--latency-ms needs --mode latency or --mode paced",
            )
            .exit();
    }
    let cfg = Config::new(
        cli.mode,
        Duration::from_millis(cli.latency_ms),
        cli.deltas,
        Duration::from_millis(cli.interval_ms),
    );
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(usize::from(cli.threads))
        .thread_name("mock-upstream")
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("mock-upstream: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(run(cli.listen, cli.threads, cfg))
}

async fn run(addr: SocketAddr, threads: u16, cfg: Config) -> ExitCode {
    let listener = match bind(addr) {
        Ok(listener) => listener,
        Err(e) => {
            eprintln!("mock-upstream: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let local = listener.local_addr().unwrap_or(addr);
    eprintln!(
        "mock-upstream: listening on {local} (mode {}, latency {} ms, {} deltas every {} ms, {threads} thread(s))",
        cfg.mode.name(),
        cfg.latency.as_millis(),
        cfg.deltas,
        cfg.interval.as_millis(),
    );
    // The accept loop runs on the worker threads; this thread only waits for a signal.
    let server = tokio::spawn(server::serve(listener, Arc::new(cfg)));
    shutdown_signal().await;
    server.abort();
    eprintln!("mock-upstream: stopped");
    ExitCode::SUCCESS
}

/// A listener with address reuse (quick restarts between runs) and a deep accept queue (bursts of
/// new connections at the start of a load test).
fn bind(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.bind(addr)?;
    socket.listen(4096)
}

/// Ctrl-C, or SIGTERM on Unix. A signal that cannot be installed is simply never received.
async fn shutdown_signal() {
    let ctrl_c = async {
        if tokio::signal::ctrl_c().await.is_err() {
            std::future::pending::<()>().await;
        }
    };
    #[cfg(unix)]
    let term = async {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                term.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = term => {}
    }
}
