//! The three load shapes: open-loop constant arrival, closed loop, and concurrent streams.
//!
//! Every worker owns one connection and a private [`Tally`]; nothing is shared on the hot path
//! except, in open-loop mode, one atomic ticket counter. Tallies are merged once at the end.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use tokio::task::JoinHandle;
use tokio::time::{self, Instant};

use crate::http::{Conn, Failure, Response};
use crate::markers::{DropReason, FrameTracker};
use crate::stats::nanos;

/// What every request of a run shares.
#[derive(Debug)]
pub struct Ctx {
    pub addr: SocketAddr,
    /// The complete request, head and body, written as is.
    pub request: Vec<u8>,
    /// Per-request timeout.
    pub timeout: Duration,
}

/// At most this many distinct error messages are kept (with counts).
const MAX_ERROR_KINDS: usize = 16;

/// Counts and samples of one worker, merged into the run's total at the end.
#[derive(Debug, Default)]
pub struct Tally {
    /// Requests due in the measured window (open loop: tickets; otherwise requests started).
    pub scheduled: u64,
    /// Requests actually started (a ticket that expired waiting for a connection is not).
    pub sent: u64,
    pub ok: u64,
    pub failed_status: u64,
    pub failed_io: u64,
    pub failed_timeout: u64,
    /// Tickets that waited for a free connection longer than the timeout and were never sent
    /// (also counted in `failed_timeout`).
    pub expired: u64,
    /// Requests retried once on a fresh connection because a reused keep-alive connection was
    /// found closed before any byte of the response.
    pub retries: u64,
    /// Connections opened (whole run, warm-up included).
    pub connects: u64,
    /// Decoded response body bytes of the measured requests that completed.
    pub body_bytes: u64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: BTreeMap<String, u64>,
    /// Latency of successful requests, nanoseconds.
    pub latency_ns: Vec<u64>,
    /// Open loop: how late the driver's timer woke for requests that had a free connection.
    pub send_lag_ns: Vec<u64>,
    /// When the last measured request ended.
    pub last_end: Option<Instant>,
}

impl Tally {
    pub fn failed(&self) -> u64 {
        self.failed_status + self.failed_io + self.failed_timeout
    }

    pub fn merge(&mut self, other: Tally) {
        self.scheduled += other.scheduled;
        self.sent += other.sent;
        self.ok += other.ok;
        self.failed_status += other.failed_status;
        self.failed_io += other.failed_io;
        self.failed_timeout += other.failed_timeout;
        self.expired += other.expired;
        self.retries += other.retries;
        self.connects += other.connects;
        self.body_bytes += other.body_bytes;
        for (status, n) in other.statuses {
            *self.statuses.entry(status).or_default() += n;
        }
        for (error, n) in other.errors {
            self.error(error, n);
        }
        self.latency_ns.extend(other.latency_ns);
        self.send_lag_ns.extend(other.send_lag_ns);
        self.last_end = self.last_end.max(other.last_end);
    }

    fn error(&mut self, message: String, n: u64) {
        if self.errors.len() < MAX_ERROR_KINDS || self.errors.contains_key(&message) {
            *self.errors.entry(message).or_default() += n;
        }
    }

    /// Records a finished (measured) request.
    fn record(&mut self, outcome: &Outcome, latency: Duration, end: Instant) {
        self.sent += 1;
        self.last_end = Some(end);
        match outcome {
            Outcome::Ok(r) => {
                self.ok += 1;
                self.body_bytes += r.body_len;
                *self.statuses.entry(r.status).or_default() += 1;
                self.latency_ns.push(nanos(latency));
            }
            Outcome::Status(r) => {
                self.failed_status += 1;
                self.body_bytes += r.body_len;
                *self.statuses.entry(r.status).or_default() += 1;
            }
            Outcome::Io { message, .. } => {
                self.failed_io += 1;
                self.error(message.clone(), 1);
            }
            Outcome::Timeout => self.failed_timeout += 1,
        }
    }
}

/// How one request ended.
#[derive(Debug)]
enum Outcome {
    /// A 2xx response, body read to its end.
    Ok(Response),
    /// Any other status, body read to its end.
    Status(Response),
    /// Connect or I/O error, or a response the driver could not frame.
    Io { message: String, after_head: bool },
    /// The per-request deadline passed.
    Timeout,
}

/// Runs one request on the worker's connection (opening one if needed) before `deadline`.
async fn request<F: FnMut(&[u8], Instant)>(
    slot: &mut Option<Conn>,
    ctx: &Ctx,
    deadline: Instant,
    tally: &mut Tally,
    sink: &mut F,
) -> Outcome {
    let outcome = match time::timeout_at(deadline, attempt(slot, ctx, tally, sink)).await {
        Err(_elapsed) => Outcome::Timeout,
        Ok(Err(failure)) => Outcome::Io {
            after_head: failure.after_head,
            message: failure.to_string(),
        },
        Ok(Ok(r)) if (200..300).contains(&r.status) => Outcome::Ok(r),
        Ok(Ok(r)) => Outcome::Status(r),
    };
    let keep = match &outcome {
        Outcome::Ok(r) | Outcome::Status(r) => r.reusable,
        Outcome::Io { .. } | Outcome::Timeout => false,
    };
    if !keep {
        *slot = None;
    }
    outcome
}

/// One exchange, retried once on a fresh connection when a reused keep-alive connection turns
/// out to have been closed by the server while idle (no byte of the response arrived).
async fn attempt<F: FnMut(&[u8], Instant)>(
    slot: &mut Option<Conn>,
    ctx: &Ctx,
    tally: &mut Tally,
    sink: &mut F,
) -> Result<Response, Failure> {
    let mut retried = false;
    loop {
        let conn = match slot {
            Some(conn) => conn,
            None => {
                let conn = Conn::connect(ctx.addr).await.map_err(|e| Failure {
                    kind: crate::http::FailureKind::Io(e),
                    before_response: true,
                    after_head: false,
                })?;
                tally.connects += 1;
                slot.insert(conn)
            }
        };
        let reused = conn.served() > 0;
        match conn.exchange(&ctx.request, sink).await {
            Ok(response) => return Ok(response),
            Err(failure) => {
                *slot = None;
                if reused && failure.before_response && !retried {
                    retried = true;
                    tally.retries += 1;
                    continue;
                }
                return Err(failure);
            }
        }
    }
}

/// Opens `n` connections concurrently before the clock starts; a failure leaves `None` (the
/// worker connects when it first needs to).
async fn preconnect(ctx: &Arc<Ctx>, n: usize) -> (Vec<Option<Conn>>, u64) {
    let handles: Vec<JoinHandle<Option<Conn>>> = (0..n)
        .map(|_| {
            let (addr, timeout) = (ctx.addr, ctx.timeout);
            tokio::spawn(async move {
                time::timeout(timeout, Conn::connect(addr))
                    .await
                    .ok()
                    .and_then(Result::ok)
            })
        })
        .collect();
    let mut conns = Vec::with_capacity(n);
    let mut opened = 0;
    for handle in handles {
        let conn = handle.await.ok().flatten();
        opened += u64::from(conn.is_some());
        conns.push(conn);
    }
    (conns, opened)
}

/// Waits for every worker and merges their tallies (a worker that died counts for nothing).
async fn join_all<T>(handles: Vec<JoinHandle<T>>) -> Vec<T> {
    let mut out = Vec::with_capacity(handles.len());
    for handle in handles {
        if let Ok(v) = handle.await {
            out.push(v);
        }
    }
    out
}

/// The result of a `rate` or `closed` run.
#[derive(Debug)]
pub struct RunResult {
    pub tally: Tally,
    /// From the start of the measured window to the end of its last request.
    pub elapsed: Duration,
}

fn finish(tallies: Vec<Tally>, preconnected: u64, measure_from: Instant) -> RunResult {
    let mut tally = Tally {
        connects: preconnected,
        ..Tally::default()
    };
    for t in tallies {
        tally.merge(t);
    }
    let elapsed = tally.last_end.map_or(Duration::ZERO, |end| {
        end.saturating_duration_since(measure_from)
    });
    RunResult { tally, elapsed }
}

/// Open-loop plan: `rate` requests per second for `warmup + duration`, measured after `warmup`.
#[derive(Clone, Copy, Debug)]
pub struct RatePlan {
    pub rate: f64,
    pub duration: Duration,
    pub warmup: Duration,
    pub connections: usize,
}

struct Schedule {
    start: Instant,
    measure_from: Instant,
    rate: f64,
    total: u64,
    next: AtomicU64,
}

impl Schedule {
    /// When ticket `k` is due: computed from the start each time, so the schedule never drifts.
    fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_secs_f64(k as f64 / self.rate)
    }
}

/// Open loop: ticket `k` is due at `start + k / rate`, whatever happened to earlier requests.
pub async fn run_rate(ctx: Arc<Ctx>, plan: RatePlan) -> RunResult {
    let (conns, preconnected) = preconnect(&ctx, plan.connections).await;
    let start = Instant::now();
    let window = plan.warmup + plan.duration;
    let schedule = Arc::new(Schedule {
        start,
        measure_from: start + plan.warmup,
        rate: plan.rate,
        // Every ticket due strictly before the end of the window (the epsilon keeps float
        // noise such as 100.000000001 from adding a ticket).
        total: (window.as_secs_f64() * plan.rate - 1e-6).ceil().max(0.0) as u64,
        next: AtomicU64::new(0),
    });
    let handles = conns
        .into_iter()
        .map(|conn| {
            let (ctx, schedule) = (Arc::clone(&ctx), Arc::clone(&schedule));
            tokio::spawn(rate_worker(ctx, schedule, conn))
        })
        .collect();
    let tallies = join_all(handles).await;
    finish(tallies, preconnected, schedule.measure_from)
}

async fn rate_worker(ctx: Arc<Ctx>, schedule: Arc<Schedule>, mut slot: Option<Conn>) -> Tally {
    let mut tally = Tally::default();
    loop {
        // The next ticket goes to whichever worker (connection) is free first.
        let k = schedule.next.fetch_add(1, Ordering::Relaxed);
        if k >= schedule.total {
            return tally;
        }
        let due = schedule.due(k);
        let measured = due >= schedule.measure_from;
        // Latency runs from the due time: a request that waited for a free connection is
        // charged for the wait (no coordinated omission). Only when the connection was free
        // before the due time is the clock started at the actual send, so the timer's own
        // wake-up delay (tokio's timer ticks in milliseconds) is not charged; it is reported
        // apart as the send lag.
        let origin = if Instant::now() < due {
            time::sleep_until(due).await;
            let now = Instant::now();
            if measured {
                tally
                    .send_lag_ns
                    .push(nanos(now.saturating_duration_since(due)));
            }
            now
        } else {
            due
        };
        let deadline = origin + ctx.timeout;
        if measured {
            tally.scheduled += 1;
        }
        if Instant::now() >= deadline {
            // Already older than the timeout: failed without being sent. This also bounds the
            // run to its window plus one timeout when the server stops answering.
            if measured {
                tally.expired += 1;
                tally.failed_timeout += 1;
            }
            continue;
        }
        let outcome = request(&mut slot, &ctx, deadline, &mut tally, &mut |_, _| {}).await;
        if measured {
            let end = Instant::now();
            tally.record(&outcome, end.saturating_duration_since(origin), end);
        }
    }
}

/// Closed-loop plan: `concurrency` workers, each sending its next request when the last ends.
#[derive(Clone, Copy, Debug)]
pub struct ClosedPlan {
    pub concurrency: usize,
    pub duration: Duration,
    pub warmup: Duration,
}

pub async fn run_closed(ctx: Arc<Ctx>, plan: ClosedPlan) -> RunResult {
    let (conns, preconnected) = preconnect(&ctx, plan.concurrency).await;
    let start = Instant::now();
    let measure_from = start + plan.warmup;
    let stop = measure_from + plan.duration;
    let handles = conns
        .into_iter()
        .map(|conn| {
            let ctx = Arc::clone(&ctx);
            tokio::spawn(closed_worker(ctx, conn, measure_from, stop))
        })
        .collect();
    let tallies = join_all(handles).await;
    finish(tallies, preconnected, measure_from)
}

async fn closed_worker(
    ctx: Arc<Ctx>,
    mut slot: Option<Conn>,
    measure_from: Instant,
    stop: Instant,
) -> Tally {
    let mut tally = Tally::default();
    loop {
        let origin = Instant::now();
        if origin >= stop {
            return tally;
        }
        let measured = origin >= measure_from;
        let deadline = origin + ctx.timeout;
        let outcome = request(&mut slot, &ctx, deadline, &mut tally, &mut |_, _| {}).await;
        if measured {
            let end = Instant::now();
            tally.scheduled += 1;
            tally.record(&outcome, end.saturating_duration_since(origin), end);
        }
        if matches!(outcome, Outcome::Io { .. }) {
            // Do not spin on a refused connection: a closed loop would otherwise hammer it.
            time::sleep(Duration::from_millis(1)).await;
        }
    }
}

/// Streaming plan: `streams` concurrent requests, each expected to carry markers `t0`…`t<deltas-1>`.
#[derive(Clone, Copy, Debug)]
pub struct StreamPlan {
    pub streams: usize,
    pub deltas: u32,
    /// Stream `k` starts `k/streams × ramp` after the first.
    pub ramp: Duration,
    /// The upstream's pacing, for the late-frame count.
    pub interval: Duration,
    /// A gap longer than `interval + late_slack` is a late frame.
    pub late_slack: Duration,
}

/// What the streams suite measured.
#[derive(Debug, Default)]
pub struct StreamStats {
    pub requested: u64,
    /// Every marker arrived once, in order, and the body ended cleanly.
    pub ok: u64,
    /// A 2xx stream whose markers were lost, repeated, reordered or cut short.
    pub dropped: u64,
    /// No usable response: connect/I/O error or timeout before the body, or a non-2xx status.
    pub failed: u64,
    pub drop_reasons: BTreeMap<&'static str, u64>,
    /// Markers seen over all streams (in sequence or not).
    pub frames_received: u64,
    /// From the request write to the arrival of `t0`, clean streams only.
    pub ttft_ns: Vec<u64>,
    /// Between consecutive markers of a stream, clean streams only.
    pub gap_ns: Vec<u64>,
    pub late_frames: u64,
}

/// The result of a `streams` run.
#[derive(Debug)]
pub struct StreamsResult {
    pub tally: Tally,
    pub streams: StreamStats,
    pub elapsed: Duration,
}

enum Verdict {
    Ok { ttft: Duration, gaps: Vec<u64> },
    Dropped(DropReason),
    Failed,
}

struct StreamEnd {
    tally: Tally,
    verdict: Verdict,
    seen: u64,
}

pub async fn run_streams(ctx: Arc<Ctx>, plan: StreamPlan) -> StreamsResult {
    let (conns, preconnected) = preconnect(&ctx, plan.streams).await;
    let start = Instant::now();
    let n = plan.streams.max(1) as f64;
    let handles = conns
        .into_iter()
        .enumerate()
        .map(|(k, conn)| {
            let ctx = Arc::clone(&ctx);
            let at = start + plan.ramp.mul_f64(k as f64 / n);
            tokio::spawn(stream_task(ctx, conn, at, plan.deltas))
        })
        .collect();
    let ends = join_all(handles).await;

    let mut tally = Tally {
        connects: preconnected,
        ..Tally::default()
    };
    let late_after = nanos(plan.interval + plan.late_slack);
    let mut stats = StreamStats {
        requested: plan.streams as u64,
        ..StreamStats::default()
    };
    for end in ends {
        tally.merge(end.tally);
        stats.frames_received += end.seen;
        match end.verdict {
            Verdict::Ok { ttft, gaps } => {
                stats.ok += 1;
                stats.ttft_ns.push(nanos(ttft));
                stats.late_frames += gaps.iter().filter(|&&g| g > late_after).count() as u64;
                stats.gap_ns.extend(gaps);
            }
            Verdict::Dropped(reason) => {
                stats.dropped += 1;
                *stats.drop_reasons.entry(reason.name()).or_default() += 1;
            }
            Verdict::Failed => stats.failed += 1,
        }
    }
    // A task that died (it cannot: nothing in it panics) would leave its stream uncounted.
    stats.failed +=
        stats.requested - (stats.ok + stats.dropped + stats.failed).min(stats.requested);
    let elapsed = tally
        .last_end
        .map_or(Duration::ZERO, |end| end.saturating_duration_since(start));
    StreamsResult {
        tally,
        streams: stats,
        elapsed,
    }
}

async fn stream_task(ctx: Arc<Ctx>, mut slot: Option<Conn>, at: Instant, deltas: u32) -> StreamEnd {
    time::sleep_until(at).await;
    let origin = Instant::now();
    let mut tally = Tally {
        scheduled: 1,
        ..Tally::default()
    };
    let mut tracker = FrameTracker::new(deltas);
    let mut body_seen = false;
    let outcome = request(
        &mut slot,
        &ctx,
        origin + ctx.timeout,
        &mut tally,
        &mut |data: &[u8], at: Instant| {
            body_seen = true;
            tracker.feed(data, at);
        },
    )
    .await;
    let end = Instant::now();
    tally.record(&outcome, end.saturating_duration_since(origin), end);

    let verdict = match &outcome {
        Outcome::Ok(response) => match tracker.verdict() {
            Ok(()) => {
                let arrivals = tracker.arrivals();
                let ttft = arrivals.first().map_or(Duration::ZERO, |first| {
                    first.saturating_duration_since(response.sent_at)
                });
                let gaps = arrivals
                    .windows(2)
                    .map(|w| match w {
                        [a, b] => nanos(b.saturating_duration_since(*a)),
                        _ => 0,
                    })
                    .collect();
                Verdict::Ok { ttft, gaps }
            }
            Err(reason) => Verdict::Dropped(reason),
        },
        Outcome::Status(_) => Verdict::Failed,
        Outcome::Io {
            after_head: true, ..
        } => Verdict::Dropped(match tracker.verdict() {
            Err(reason) if reason != DropReason::Incomplete => reason,
            _ => DropReason::Truncated,
        }),
        Outcome::Io { .. } => Verdict::Failed,
        Outcome::Timeout if body_seen => Verdict::Dropped(match tracker.verdict() {
            Err(reason) if reason != DropReason::Incomplete => reason,
            _ => DropReason::Timeout,
        }),
        Outcome::Timeout => Verdict::Failed,
    };
    StreamEnd {
        tally,
        verdict,
        seen: tracker.seen(),
    }
}
