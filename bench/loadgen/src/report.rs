//! The run's result: one JSON object for scripts (stdout) and a short summary for people (stderr).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

use serde::Serialize;

use crate::run::{StreamStats, Tally};
use crate::stats::{summarize, Summary};

/// Everything one run reports. Durations are microseconds (one decimal) unless the name says
/// otherwise; a distribution with no samples is `null`.
#[derive(Debug, Serialize)]
pub struct Report {
    /// `rate`, `closed` or `streams`.
    pub mode: &'static str,
    pub url: String,
    /// The parameters of the run, as given.
    pub config: serde_json::Value,
    /// Measured window: from its start to the end of its last request.
    pub elapsed_s: f64,
    pub requests: Requests,
    /// Successful requests per second of `elapsed_s`.
    pub requests_per_s: f64,
    /// Successful requests only. Open loop: from the due time (see the crate docs).
    pub latency_us: Option<Summary>,
    /// Open loop only: how late the driver's timer sent requests that had a free connection.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub send_lag_us: Option<Summary>,
    /// Streams mode only.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streams: Option<StreamsReport>,
}

#[derive(Debug, Serialize)]
pub struct Requests {
    pub scheduled: u64,
    pub sent: u64,
    pub ok: u64,
    /// `failed_status + failed_io + failed_timeout`.
    pub failed: u64,
    pub failed_status: u64,
    pub failed_io: u64,
    pub failed_timeout: u64,
    /// Open loop: tickets that waited longer than the timeout for a connection (never sent).
    pub expired: u64,
    pub retries: u64,
    pub connects: u64,
    /// Decoded response body bytes of completed requests.
    pub body_bytes: u64,
    /// Count per HTTP status received.
    pub status_codes: BTreeMap<String, u64>,
    /// Count per I/O or protocol error message (at most 16 distinct messages).
    pub errors: BTreeMap<String, u64>,
}

#[derive(Debug, Serialize)]
pub struct StreamsReport {
    pub requested: u64,
    /// Every marker `t0`…`t<deltas-1>` arrived exactly once, in order, and the body ended.
    pub ok: u64,
    /// 2xx streams with a lost, repeated, reordered or missing marker, or cut short.
    pub dropped: u64,
    /// Streams with no usable response (connect/I/O error or timeout before the body, non-2xx).
    pub failed: u64,
    pub deltas: u32,
    pub frames_expected: u64,
    pub frames_received: u64,
    /// Count per first problem of each dropped stream: `skipped`, `out_of_order`, `extra`,
    /// `incomplete`, `truncated`, `timeout`.
    pub drop_reasons: BTreeMap<&'static str, u64>,
    /// Request write to arrival of `t0`, clean streams.
    pub ttft_us: Option<Summary>,
    /// Between consecutive markers of one stream, clean streams.
    pub gap_us: Option<Summary>,
    pub interval_ms: f64,
    /// A gap above this (interval + slack) is a late frame.
    pub late_threshold_ms: f64,
    pub late_frames: u64,
}

fn secs(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e6
}

fn ms(d: Duration) -> f64 {
    (d.as_secs_f64() * 1e6).round() / 1e3
}

impl Requests {
    fn from_tally(t: &Tally) -> Self {
        Requests {
            scheduled: t.scheduled,
            sent: t.sent,
            ok: t.ok,
            failed: t.failed(),
            failed_status: t.failed_status,
            failed_io: t.failed_io,
            failed_timeout: t.failed_timeout,
            expired: t.expired,
            retries: t.retries,
            connects: t.connects,
            body_bytes: t.body_bytes,
            status_codes: t
                .statuses
                .iter()
                .map(|(s, n)| (s.to_string(), *n))
                .collect(),
            errors: t.errors.clone(),
        }
    }
}

impl Report {
    /// Builds the report; sorts the samples in `tally` (and `streams`) in place.
    pub fn new(
        mode: &'static str,
        url: &str,
        config: serde_json::Value,
        tally: &mut Tally,
        elapsed: Duration,
        streams: Option<(&mut StreamStats, u32, Duration, Duration)>,
    ) -> Self {
        let elapsed_s = secs(elapsed);
        let requests_per_s = if elapsed.is_zero() {
            0.0
        } else {
            (tally.ok as f64 / elapsed.as_secs_f64() * 10.0).round() / 10.0
        };
        let streams = streams.map(|(s, deltas, interval, slack)| StreamsReport {
            requested: s.requested,
            ok: s.ok,
            dropped: s.dropped,
            failed: s.failed,
            deltas,
            frames_expected: s.requested.saturating_mul(u64::from(deltas)),
            frames_received: s.frames_received,
            drop_reasons: s.drop_reasons.clone(),
            ttft_us: summarize(&mut s.ttft_ns),
            gap_us: summarize(&mut s.gap_ns),
            interval_ms: ms(interval),
            late_threshold_ms: ms(interval + slack),
            late_frames: s.late_frames,
        });
        Report {
            mode,
            url: url.to_owned(),
            config,
            elapsed_s,
            requests: Requests::from_tally(tally),
            requests_per_s,
            latency_us: summarize(&mut tally.latency_ns),
            send_lag_us: summarize(&mut tally.send_lag_ns),
            streams,
        }
    }

    /// A few lines for a person watching the run.
    pub fn human(&self) -> String {
        let r = &self.requests;
        let mut out = format!(
            "loadgen {} {}: {:.3} s\n  requests   {} scheduled, {} sent, {} ok, {} failed (status {}, i/o {}, timeout {}, expired {}); {} connects, {} retries\n  throughput {:.1} req/s\n",
            self.mode,
            self.url,
            self.elapsed_s,
            r.scheduled,
            r.sent,
            r.ok,
            r.failed,
            r.failed_status,
            r.failed_io,
            r.failed_timeout,
            r.expired,
            r.connects,
            r.retries,
            self.requests_per_s,
        );
        line(&mut out, "latency", self.latency_us.as_ref());
        line(&mut out, "send lag", self.send_lag_us.as_ref());
        if !r.status_codes.is_empty() {
            let _ = writeln!(out, "  statuses   {:?}", r.status_codes);
        }
        for (error, n) in &r.errors {
            let _ = writeln!(out, "  error      {n} × {error}");
        }
        if let Some(s) = &self.streams {
            let _ = writeln!(
                out,
                "  streams    {} ok, {} dropped, {} failed of {}; frames {} of {}; late frames {} (gap > {} ms)",
                s.ok,
                s.dropped,
                s.failed,
                s.requested,
                s.frames_received,
                s.frames_expected,
                s.late_frames,
                s.late_threshold_ms,
            );
            if !s.drop_reasons.is_empty() {
                let _ = writeln!(out, "  dropped    {:?}", s.drop_reasons);
            }
            line(&mut out, "TTFT", s.ttft_us.as_ref());
            line(&mut out, "frame gap", s.gap_us.as_ref());
        }
        out
    }
}

fn line(out: &mut String, name: &str, s: Option<&Summary>) {
    if let Some(s) = s {
        let _ = writeln!(
            out,
            "  {name:<10} µs: p50 {} p90 {} p99 {} p99.9 {} max {} (mean {}, n {})",
            s.p50, s.p90, s.p99, s.p999, s.max, s.mean, s.count
        );
    }
}
