//! The added cost per request of the quota path: reserve before the call, reconcile after.
//!
//! Measures `Quotas::reserve` + `Metered::finish` (what `ModelCall::start` adds to every call of a
//! model with limits), one request after another and with 32 concurrent callers, for:
//!
//! * `unlimited`: a model without limits (the baseline: a map lookup, no actor);
//! * `local`: counts in the QuotaActor's process-local backend;
//! * `redis`: counts in a real `redis-server` on loopback (started here when installed), one Lua
//!   script per reserve and one per reconcile.
//!
//! Run: `cargo bench --bench quota_path` (add `-- --quick` for fewer iterations).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpListener;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ai_gateway::config::{Settings, Sources};
use ai_gateway::quota::{Metered, Quotas};

const ENGINE: &str = "bench-engine";
const MODEL: &str = "bench-model";

fn settings(extra: &[(&str, &str)]) -> Settings {
    let limits = serde_json::json!({ENGINE: {MODEL: {
        "max_concurrent": 1_000_000, "requests_per_minute": 1_000_000_000u64,
        "tokens_per_minute": 1_000_000_000_000u64}}})
    .to_string();
    let mut vars = vec![("AIGW_MODEL_QUOTAS".to_string(), limits)];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    Settings::from_vars(&Sources::default(), vars).unwrap()
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, mut samples: Vec<Duration>, wall: Duration) {
    samples.sort();
    let n = samples.len();
    let mean = samples.iter().sum::<Duration>() / n as u32;
    println!(
        "{name:<28} n={n:<7} p50={:>9.2?} p99={:>9.2?} mean={:>9.2?} throughput={:>9.0}/s",
        percentile(&samples, 0.50),
        percentile(&samples, 0.99),
        mean,
        n as f64 / wall.as_secs_f64(),
    );
}

async fn one(quotas: &Quotas, model: &str) -> Duration {
    let started = Instant::now();
    let lease = quotas.reserve(ENGINE, model, 1200).await.unwrap();
    if let Some(lease) = lease {
        let mut metered = Metered::new(lease, 200);
        metered.observe(&ai_gateway::models::ModelChunk::text("hello world"));
        metered.finish();
    }
    started.elapsed()
}

async fn run(name: &str, quotas: Arc<Quotas>, model: &'static str, n: usize, concurrency: usize) {
    // Warm up: start the actor, connect, load the scripts.
    for _ in 0..200 {
        one(&quotas, model).await;
    }
    let started = Instant::now();
    let per_task = n / concurrency;
    let tasks: Vec<_> = (0..concurrency)
        .map(|_| {
            let quotas = Arc::clone(&quotas);
            tokio::spawn(async move {
                let mut samples = Vec::with_capacity(per_task);
                for _ in 0..per_task {
                    samples.push(one(&quotas, model).await);
                }
                samples
            })
        })
        .collect();
    let mut samples = Vec::with_capacity(n);
    for t in tasks {
        samples.extend(t.await.unwrap());
    }
    report(name, samples, started.elapsed());
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    let n = if quick { 4_000 } else { 40_000 };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let _ = ai_gateway::telemetry::install();
        println!("quota path: reserve + finish per request ({n} requests per row)");
        let local = settings(&[]);
        let tree = ai_gateway::runtime::start(&local).await.unwrap();
        let quotas = Arc::new(Quotas::new(&local, tree.root.clone()).unwrap());
        run(
            "unlimited, 1 caller",
            Arc::clone(&quotas),
            "unlimited-model",
            n,
            1,
        )
        .await;
        run("local, 1 caller", Arc::clone(&quotas), MODEL, n, 1).await;
        run("local, 32 callers", Arc::clone(&quotas), MODEL, n, 32).await;

        let port = free_port();
        let redis = Command::new("redis-server")
            .args([
                "--port",
                &port.to_string(),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let Ok(mut redis) = redis else {
            println!("redis-server not installed: redis rows skipped");
            return;
        };
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let url = format!("redis://127.0.0.1:{port}/");
        let shared = settings(&[
            ("AIGW_QUOTA__BACKEND", "redis"),
            ("AIGW_QUOTA__REDIS_URL", &url),
        ]);
        let quotas = Arc::new(Quotas::new(&shared, tree.root.clone()).unwrap());
        run("redis, 1 caller", Arc::clone(&quotas), MODEL, n / 4, 1).await;
        run("redis, 32 callers", Arc::clone(&quotas), MODEL, n / 4, 32).await;
        let _ = redis.kill();
        let _ = redis.wait();
    });
}
