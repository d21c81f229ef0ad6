//! Shared integration-test harness: the real `ai-gateway` binary on loopback.
//!
//! [`Gateway::start`] runs the binary with a clean environment plus the given variables, on
//! port 0 for both listeners, waits for its `listening` log line and reads the bound addresses
//! from it. Every log line the process writes is kept, so tests can assert on access-log
//! records. The process is killed when the [`Gateway`] is dropped.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

pub mod issuer;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// A running gateway process.
pub struct Gateway {
    child: Option<Child>,
    /// `http://127.0.0.1:PORT` of the API.
    pub api: String,
    /// `http://127.0.0.1:PORT` of the metrics listener.
    pub metrics: String,
    lines: Arc<Mutex<Vec<String>>>,
    stderr: Arc<Mutex<Vec<String>>>,
}

/// The path of the binary under test.
pub fn binary() -> &'static str {
    env!("CARGO_BIN_EXE_ai-gateway")
}

/// An address nothing listens on (the discard port): OIDC issuers of tests that do not set
/// their own, so that no test ever reaches the internet.
pub const UNREACHABLE_ISSUER: &str = "http://127.0.0.1:9";

/// Variables every test gateway gets: JSON logs, loopback, free ports, unreachable issuers.
pub fn base_env() -> Vec<(String, String)> {
    [
        ("AIGW_GITLAB_URL", UNREACHABLE_ISSUER),
        ("AIGW_CUSTOMER_PORTAL_URL", UNREACHABLE_ISSUER),
        ("AIGW_FASTAPI__API_HOST", "127.0.0.1"),
        ("AIGW_FASTAPI__API_PORT", "0"),
        ("AIGW_FASTAPI__METRICS_HOST", "127.0.0.1"),
        ("AIGW_FASTAPI__METRICS_PORT", "0"),
        ("AIGW_LOGGING__FORMAT_JSON", "true"),
        ("AIGW_HTTP__WORKERS", "2"),
    ]
    .iter()
    .map(|(k, v)| (k.to_string(), v.to_string()))
    .collect()
}

fn pump(stream: impl std::io::Read + Send + 'static, into: Arc<Mutex<Vec<String>>>) {
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines().map_while(Result::ok) {
            if let Ok(mut lines) = into.lock() {
                lines.push(line);
            }
        }
    });
}

impl Gateway {
    /// Start the binary with `base_env()` plus `env` (later entries win) and `args`.
    pub fn start(env: &[(&str, &str)], args: &[&str]) -> Gateway {
        Self::try_start(env, args).unwrap_or_else(|e| panic!("gateway did not start: {e}"))
    }

    /// Like [`Gateway::start`], returning the error text instead of panicking.
    pub fn try_start(env: &[(&str, &str)], args: &[&str]) -> Result<Gateway, String> {
        let mut cmd = Command::new(binary());
        cmd.env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("RUST_BACKTRACE", "1")
            // A .env file in the test's working directory must not leak in.
            .current_dir(std::env::temp_dir());
        for (k, v) in base_env() {
            cmd.env(k, v);
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().map_err(|e| e.to_string())?;
        let lines = Arc::new(Mutex::new(Vec::new()));
        let stderr = Arc::new(Mutex::new(Vec::new()));
        pump(child.stdout.take().ok_or("no stdout")?, Arc::clone(&lines));
        pump(child.stderr.take().ok_or("no stderr")?, Arc::clone(&stderr));
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(listening) = lines
                .lock()
                .ok()
                .and_then(|l| l.iter().find(|l| l.contains("\"listening\"")).cloned())
            {
                let v: Value = serde_json::from_str(&listening).map_err(|e| e.to_string())?;
                let first = |key: &str| {
                    v[key]
                        .as_str()
                        .and_then(|s| s.split(',').next())
                        .map(|a| format!("http://{a}"))
                        .ok_or(format!("no {key} in {listening}"))
                };
                return Ok(Gateway {
                    api: first("api_addr")?,
                    metrics: first("metrics_addr")?,
                    child: Some(child),
                    lines,
                    stderr,
                });
            }
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(50));
                let err = stderr.lock().map(|l| l.join("\n")).unwrap_or_default();
                let out = lines.lock().map(|l| l.join("\n")).unwrap_or_default();
                return Err(format!("exited with {status}: {err}\n{out}"));
            }
            if Instant::now() > deadline {
                return Err("no listening line within 30 s".into());
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The log lines written so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().map(|l| l.clone()).unwrap_or_default()
    }

    /// The log records (JSON lines) written so far.
    pub fn records(&self) -> Vec<Value> {
        self.lines()
            .iter()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect()
    }

    /// Wait until a record matching `pred` was written, up to 10 s.
    pub fn wait_record(&self, pred: impl Fn(&Value) -> bool) -> Option<Value> {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(r) = self.records().into_iter().find(|r| pred(r)) {
                return Some(r);
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Access-log records for `path`, waiting up to 10 s for at least one.
    pub fn access_log(&self, path: &str) -> Value {
        self.wait_record(|r| r["logger"] == "api.access" && r["path"] == path)
            .unwrap_or_else(|| panic!("no access log for {path}: {:?}", self.lines()))
    }

    /// Standard error so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().map(|l| l.join("\n")).unwrap_or_default()
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// Send SIGTERM.
    pub fn sigterm(&self) {
        // SAFETY: kill(2) with a pid we spawned.
        unsafe {
            libc::kill(self.pid() as i32, libc::SIGTERM);
        }
    }

    /// Wait for the process to exit, up to `timeout`; its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Option<i32> {
        let deadline = Instant::now() + timeout;
        let child = self.child.as_mut()?;
        loop {
            if let Ok(Some(status)) = child.try_wait() {
                return status.code();
            }
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// The metrics exposition text.
    pub async fn metrics_text(&self) -> String {
        reqwest::get(format!("{}/metrics", self.metrics))
            .await
            .expect("metrics reachable")
            .text()
            .await
            .expect("metrics text")
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Run the binary to completion with `env` and `args`; (exit code, stdout, stderr).
pub fn run_to_exit(env: &[(&str, &str)], args: &[&str]) -> (Option<i32>, String, String) {
    let mut cmd = Command::new(binary());
    cmd.env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .current_dir(std::env::temp_dir());
    for (k, v) in base_env() {
        cmd.env(k, v);
    }
    for (k, v) in env {
        cmd.env(k, v);
    }
    let out = cmd.args(args).output().expect("binary runs");
    (
        out.status.code(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// The value of a metric sample line `name{labels} value` whose text contains all of `parts`.
pub fn metric_value(text: &str, name: &str, parts: &[&str]) -> Option<f64> {
    text.lines()
        .filter(|l| l.starts_with(name) && !l.starts_with('#'))
        .filter(|l| {
            let rest = &l[name.len()..];
            rest.starts_with('{') || rest.starts_with(' ')
        })
        .find(|l| parts.iter().all(|p| l.contains(p)))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}
pub mod fake_upstream;
pub mod providers;
