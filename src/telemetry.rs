//! Prometheus metrics: the recorder, the original's buckets, process metrics, bounded labels.
//!
//! Metrics are recorded through the `metrics` facade anywhere in the code and rendered by the
//! metrics listener (never the API port). The recorder is process-global; [`install`] is
//! idempotent so that tests may start several gateways in one process.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

/// The original's buckets for request and inference durations, seconds.
pub const DURATION_BUCKETS: &[f64] = &[0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0];
/// The original's buckets for prompt sizes (characters and tokens).
pub const PROMPT_SIZE_BUCKETS: &[f64] = &[32.0, 64.0, 128.0, 256.0, 512.0, 1024.0, 2048.0, 4096.0];
/// Buckets for small latencies: gateway overhead, time to first chunk, auth.
pub const FINE_BUCKETS: &[f64] = &[
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0, 10.0,
];

static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();

/// Install the global recorder (once) and return its handle.
pub fn install() -> Result<PrometheusHandle, String> {
    if let Some(handle) = HANDLE.get() {
        return Ok(handle.clone());
    }
    let builder = PrometheusBuilder::new()
        .set_buckets(FINE_BUCKETS)
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("http_request_duration_seconds".into()),
                DURATION_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("inference_request_duration_seconds".into()),
                DURATION_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full("code_suggestions_inference_request_duration_seconds".into()),
                DURATION_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Prefix("code_suggestions_inference_prompt_size_".into()),
                PROMPT_SIZE_BUCKETS,
            )
        })
        .and_then(|b| {
            b.set_buckets_for_metric(
                Matcher::Full(crate::proxy::abuse::SCORE_METRIC.into()),
                crate::proxy::abuse::SCORE_BUCKETS,
            )
        })
        .map_err(|e| e.to_string())?;
    let handle = match builder.install_recorder() {
        Ok(handle) => handle,
        // Lost a race with another thread installing it.
        Err(e) => return HANDLE.get().cloned().ok_or_else(|| e.to_string()),
    };
    describe();
    let _ = HANDLE.set(handle.clone());
    Ok(HANDLE.get().cloned().unwrap_or(handle))
}

/// The installed handle, if any.
pub fn handle() -> Option<PrometheusHandle> {
    HANDLE.get().cloned()
}

fn describe() {
    metrics::describe_histogram!(
        "http_request_duration_seconds",
        metrics::Unit::Seconds,
        "Time until the response starts, per route template, method and status class"
    );
    metrics::describe_histogram!(
        crate::proxy::abuse::SCORE_METRIC,
        "Score of the abuse requests"
    );
    metrics::describe_counter!(
        crate::proxy::abuse::CHECKS_METRIC,
        "Proxy requests sampled for abuse detection, per outcome (scored, unparsable, failed, dropped)"
    );
    metrics::describe_counter!(
        "actor_restarts_total",
        "Actors restarted by their supervisor, per kind of actor"
    );
    metrics::describe_counter!(
        "request_actor_calls_total",
        "Model calls driven by request actors, per outcome"
    );
    metrics::describe_counter!(
        "request_actor_failures_total",
        "Request actors that panicked or were killed"
    );
}

/// The full exposition: the recorder's metrics plus process metrics.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    let mut out = handle.render();
    out.push_str(&process_metrics());
    out
}

/// `process_resident_memory_bytes`, `process_virtual_memory_bytes`, `process_cpu_seconds_total`,
/// `process_open_fds`, `process_max_fds`, `process_start_time_seconds`, as the Prometheus client
/// libraries define them (read from /proc; absent on other systems).
pub fn process_metrics() -> String {
    let mut out = String::new();
    let Some(stat) = read_proc_stat() else {
        return out;
    };
    let ticks = clock_ticks_per_second();
    let page = page_size();
    let cpu = (stat.utime + stat.stime) as f64 / ticks;
    let start = boot_time().map(|boot| boot + stat.starttime as f64 / ticks);
    let mut gauge = |name: &str, help: &str, kind: &str, value: f64| {
        out.push_str(&format!(
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}\n"
        ));
    };
    gauge(
        "process_cpu_seconds_total",
        "Total user and system CPU time spent in seconds.",
        "counter",
        cpu,
    );
    gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        "gauge",
        (stat.rss_pages * page) as f64,
    );
    gauge(
        "process_virtual_memory_bytes",
        "Virtual memory size in bytes.",
        "gauge",
        stat.vsize as f64,
    );
    if let Some(fds) = count_open_fds() {
        gauge(
            "process_open_fds",
            "Number of open file descriptors.",
            "gauge",
            fds as f64,
        );
    }
    if let Some(max) = max_fds() {
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            "gauge",
            max as f64,
        );
    }
    if let Some(start) = start {
        gauge(
            "process_start_time_seconds",
            "Start time of the process since unix epoch in seconds.",
            "gauge",
            start,
        );
    }
    out
}

struct ProcStat {
    utime: u64,
    stime: u64,
    starttime: u64,
    vsize: u64,
    rss_pages: u64,
}

fn read_proc_stat() -> Option<ProcStat> {
    let text = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces and parentheses: fields start after the last ')'.
    let rest = &text[text.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // Indices into `fields`: stat field N (1-based) is fields[N - 3].
    let num = |n: usize| fields.get(n - 3).and_then(|v| v.parse::<u64>().ok());
    Some(ProcStat {
        utime: num(14)?,
        stime: num(15)?,
        starttime: num(22)?,
        vsize: num(23)?,
        rss_pages: num(24)?,
    })
}

/// Resident set size of this process in bytes (for logs and tests).
pub fn resident_memory_bytes() -> Option<u64> {
    read_proc_stat().map(|s| s.rss_pages * page_size())
}

fn clock_ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 {
        ticks as f64
    } else {
        100.0
    }
}

fn page_size() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if size > 0 {
        size as u64
    } else {
        4096
    }
}

fn boot_time() -> Option<f64> {
    let text = std::fs::read_to_string("/proc/stat").ok()?;
    text.lines()
        .find_map(|l| l.strip_prefix("btime "))
        .and_then(|v| v.trim().parse::<f64>().ok())
}

fn count_open_fds() -> Option<usize> {
    Some(std::fs::read_dir("/proc/self/fd").ok()?.count())
}

fn max_fds() -> Option<u64> {
    let text = std::fs::read_to_string("/proc/self/limits").ok()?;
    text.lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|v| v.parse().ok())
}

/// Model names as metric labels: known names pass, anything else folds into `other`, so that a
/// client typing model names cannot mint new time series.
pub fn model_label(name: &str) -> &str {
    const KNOWN: &[&str] = &[
        // Anthropic
        "claude-2.0",
        "claude-2.1",
        "claude-3-opus-20240229",
        "claude-3-sonnet-20240229",
        "claude-3-5-sonnet-20240620",
        "claude-3-haiku-20240307",
        "claude-3-5-haiku-20241022",
        "claude-3-5-sonnet-20241022",
        "claude-3-5-sonnet-v2@20241022",
        "claude-3-5-sonnet@20240620",
        // Vertex
        "code-gecko@002",
        "code-bison@002",
        "text-bison@002",
        "codestral@2405",
        // LiteLLM / self-hosted
        "codegemma",
        "codellama",
        "codestral",
        "mistral",
        "mixtral",
        "deepseekcoder",
        "claude_3",
        "claude_3.5",
        "gpt",
        "qwen2p5-coder-7b",
        // Mocks
        "llm-mocked",
        "chat-model-mocked",
        "mock",
    ];
    if KNOWN.contains(&name) {
        name
    } else {
        "other"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cached_handles_record_into_the_labelled_series() {
        let handle = install().unwrap();
        for _ in 0..3 {
            counter("test_cached_total", &[("a", "x"), ("b", "y")]).increment(2);
        }
        // Same concatenation, different labels: a different series.
        counter("test_cached_total", &[("a", "xb"), ("b", "")]).increment(1);
        gauge("test_cached_gauge", &[("a", "x")]).increment(2.0);
        gauge("test_cached_gauge", &[("a", "x")]).decrement(1.0);
        histogram("test_cached_seconds", &[]).record(0.5);
        histogram("test_cached_seconds", &[]).record(0.5);
        // From another thread (another cache), the same series.
        std::thread::spawn(|| counter("test_cached_total", &[("a", "x"), ("b", "y")]).increment(1))
            .join()
            .unwrap();
        let out = render(&handle);
        assert!(
            out.contains("test_cached_total{a=\"x\",b=\"y\"} 7\n"),
            "{out}"
        );
        assert!(
            out.contains("test_cached_total{a=\"xb\",b=\"\"} 1\n"),
            "{out}"
        );
        assert!(out.contains("test_cached_gauge{a=\"x\"} 1\n"), "{out}");
        assert!(out.contains("test_cached_seconds_count 2\n"), "{out}");
    }

    #[test]
    fn process_metrics_are_read_from_proc() {
        let text = process_metrics();
        assert!(text.contains("process_resident_memory_bytes "), "{text}");
        assert!(text.contains("process_cpu_seconds_total "), "{text}");
        assert!(text.contains("process_open_fds "), "{text}");
        assert!(resident_memory_bytes().unwrap_or(0) > 0);
    }

    #[test]
    fn unknown_models_fold_into_other() {
        assert_eq!(model_label("code-gecko@002"), "code-gecko@002");
        assert_eq!(model_label("my-typo-model"), "other");
    }
}

/// Labelled metric handles, cached per thread by name and label values, so that recording a
/// metric in the steady state is a hash lookup and an atomic add instead of a registration in the
/// recorder (building an owned key, hashing it, and a locked map lookup each time). Label sets are
/// bounded where the labels are computed, so the caches are too. Handles are only cached once the
/// Prometheus recorder is installed: a handle taken before would stay a no-op.
mod handles {
    use std::cell::RefCell;
    use std::collections::HashMap;
    use std::thread::LocalKey;

    use metrics::{Counter, Gauge, Histogram, Label};

    /// Keys are hashed with foldhash (seeded per process), not SipHash: the keys are ~100 bytes
    /// and a request records about a dozen metrics, and the label sets are bounded where the
    /// labels are computed, so there is no flooding for SipHash to guard against.
    pub(super) struct Cache<H> {
        key: Vec<u8>,
        map: HashMap<Vec<u8>, H, foldhash::fast::RandomState>,
    }

    impl<H> Default for Cache<H> {
        fn default() -> Self {
            Self {
                key: Vec::with_capacity(256),
                map: HashMap::default(),
            }
        }
    }

    thread_local! {
        pub(super) static COUNTERS: RefCell<Cache<Counter>> = RefCell::default();
        pub(super) static GAUGES: RefCell<Cache<Gauge>> = RefCell::default();
        pub(super) static HISTOGRAMS: RefCell<Cache<Histogram>> = RefCell::default();
    }

    /// Length-prefixed, so that no two (name, labels) give the same key.
    fn push_part(key: &mut Vec<u8>, part: &str) {
        key.extend_from_slice(&(part.len() as u32).to_le_bytes());
        key.extend_from_slice(part.as_bytes());
    }

    /// A `&'static str` by address and length: the same literal is the same text, so its bytes
    /// need not be copied and hashed on every lookup. (Equal text at two addresses only makes two
    /// cache entries for the same series.)
    fn push_static(key: &mut Vec<u8>, part: &'static str) {
        let mut bytes = [0u8; 16];
        let (address, len) = bytes.split_at_mut(8);
        address.copy_from_slice(&(part.as_ptr() as u64).to_le_bytes());
        len.copy_from_slice(&(part.len() as u64).to_le_bytes());
        key.extend_from_slice(&bytes);
    }

    pub(super) fn cached<H: Clone>(
        cache: &'static LocalKey<RefCell<Cache<H>>>,
        name: &'static str,
        labels: &[(&'static str, &str)],
        register: fn(&'static str, Vec<Label>) -> H,
    ) -> H {
        let make = || {
            let labels = labels
                .iter()
                .map(|(k, v)| Label::new(*k, v.to_string()))
                .collect();
            register(name, labels)
        };
        if super::HANDLE.get().is_none() {
            return make();
        }
        cache
            .try_with(|cache| {
                let Ok(mut cache) = cache.try_borrow_mut() else {
                    return make();
                };
                let Cache { key, map } = &mut *cache;
                key.clear();
                push_static(key, name);
                for (k, v) in labels {
                    push_static(key, k);
                    push_part(key, v);
                }
                if let Some(handle) = map.get(key.as_slice()) {
                    return handle.clone();
                }
                let handle = make();
                map.insert(key.clone(), handle.clone());
                handle
            })
            .unwrap_or_else(|_| make())
    }
}

/// The counter `name{labels}` (see [`handles`]).
pub fn counter(name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Counter {
    handles::cached(&handles::COUNTERS, name, labels, |name, labels| {
        metrics::counter!(name, labels)
    })
}

/// The gauge `name{labels}` (see [`handles`]).
pub fn gauge(name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Gauge {
    handles::cached(&handles::GAUGES, name, labels, |name, labels| {
        metrics::gauge!(name, labels)
    })
}

/// The histogram `name{labels}` (see [`handles`]).
pub fn histogram(name: &'static str, labels: &[(&'static str, &str)]) -> metrics::Histogram {
    handles::cached(&handles::HISTOGRAMS, name, labels, |name, labels| {
        metrics::histogram!(name, labels)
    })
}
