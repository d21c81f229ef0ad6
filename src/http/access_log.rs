//! The access log: one structured line per request, written when the response body ends.
//!
//! The edge middleware opens a [`RequestLog`] for each request and puts it in the request's
//! extensions; handlers add what they learn (`model_engine`, `model_name`, `lang`, ...) with
//! [`RequestLog::set`]. The response body is wrapped in [`LoggedBody`], which notes when the
//! first chunk leaves and writes the line when the body ends, or when it is dropped because the
//! client went away, so streamed responses are logged with their real duration.
//!
//! Fields follow the original (spec 8.2): `url, path, status_code, method, correlation_id,
//! http_version, client_ip, client_port, duration_s, duration_request, request_arrived_at,
//! response_start_duration_s, first_chunk_duration_s, cpu_s, content_type, user_agent,
//! gitlab_*`, then the request's own entries.

use std::cell::RefCell;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll};
use std::time::Instant;

use actix_web::body::{BodySize, MessageBody};
use actix_web::web::Bytes;
use actix_web::HttpMessage;
use pin_project_lite::pin_project;
use serde_json::Value;

use crate::logging::{self, Fields};

/// Entries a request adds to its access-log line.
#[derive(Clone, Default)]
pub struct RequestLog {
    fields: Rc<RefCell<Fields>>,
}

impl RequestLog {
    /// The log of the request `req` belongs to (a detached one if there is none).
    pub fn of(req: &impl HttpMessage) -> Self {
        req.extensions()
            .get::<RequestLog>()
            .cloned()
            .unwrap_or_default()
    }

    /// Add or replace an entry.
    pub fn set(&self, key: &'static str, value: impl Into<Value>) {
        self.fields.borrow_mut().set(key, value.into());
    }

    /// Read an entry back.
    pub fn get(&self, key: &str) -> Option<Value> {
        self.fields.borrow().get(key).cloned()
    }

    fn take(&self) -> Fields {
        std::mem::take(&mut *self.fields.borrow_mut())
    }
}

/// Everything known about the request when its response starts.
pub struct PendingLine {
    /// Standard fields in the original's order, up to and excluding the timings.
    pub head: Fields,
    /// `<ip>:<port> - "<METHOD> <path> HTTP/<ver>" <status>`.
    pub message: String,
    /// When the request arrived.
    pub arrived: Instant,
    /// Seconds from arrival to the response start.
    pub response_start_s: f64,
    /// Process CPU seconds at arrival (the original's `cpu_s` is a process-time difference).
    pub cpu_at_arrival: f64,
    /// Entries added by handlers.
    pub log: RequestLog,
}

impl PendingLine {
    /// Write the line of a request that was dropped before it answered (its client went away).
    pub fn write_unanswered(self) {
        self.write(None, None, true);
    }

    fn write(self, first_chunk_s: Option<f64>, body_error: Option<String>, disconnected: bool) {
        let PendingLine {
            mut head,
            message,
            arrived,
            response_start_s,
            cpu_at_arrival,
            log,
        } = self;
        let duration = arrived.elapsed().as_secs_f64();
        head.set("duration_s", Value::from(duration));
        head.set("response_start_duration_s", Value::from(response_start_s));
        head.set(
            "first_chunk_duration_s",
            first_chunk_s.map(Value::from).unwrap_or(Value::Null),
        );
        head.set(
            "cpu_s",
            Value::from((process_cpu_seconds() - cpu_at_arrival).max(0.0)),
        );
        head.merge(log.take());
        if let Some(e) = body_error {
            head.set("exception_message", Value::String(e));
            head.set("exception_class", Value::String("StreamError".into()));
        }
        if disconnected {
            head.set("client_disconnected", Value::Bool(true));
        }
        logging::write_record("info", "api.access", &message, head.iter());
    }
}

/// CPU time of the whole process, seconds.
pub fn process_cpu_seconds() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes into the timespec we own.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_PROCESS_CPUTIME_ID, &mut ts) };
    if rc == 0 {
        ts.tv_sec as f64 + ts.tv_nsec as f64 / 1e9
    } else {
        0.0
    }
}

pin_project! {
    /// A response body that writes the access-log line when it ends or is dropped.
    pub struct LoggedBody<B> {
        #[pin]
        inner: B,
        pending: Option<Box<PendingLine>>,
        first_chunk_s: Option<f64>,
        error: Option<String>,
    }

    impl<B> PinnedDrop for LoggedBody<B> {
        fn drop(this: Pin<&mut Self>) {
            let this = this.project();
            if let Some(pending) = this.pending.take() {
                // Dropped before the end: the client went away mid-body.
                pending.write(*this.first_chunk_s, this.error.take(), true);
            }
        }
    }
}

impl<B> LoggedBody<B> {
    /// Wrap `inner` without logging it (CORS preflights, which the original does not log).
    pub fn detached(inner: B) -> Self {
        Self {
            inner,
            pending: None,
            first_chunk_s: None,
            error: None,
        }
    }

    /// Wrap `inner`; `pending` is written when it ends.
    pub fn new(inner: B, pending: PendingLine) -> Self {
        Self {
            inner,
            pending: Some(Box::new(pending)),
            first_chunk_s: None,
            error: None,
        }
    }
}

impl<B: MessageBody> MessageBody for LoggedBody<B>
where
    B::Error: std::fmt::Display,
{
    type Error = B::Error;

    fn size(&self) -> BodySize {
        self.inner.size()
    }

    fn poll_next(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Bytes, Self::Error>>> {
        let this = self.project();
        let polled = this.inner.poll_next(cx);
        match &polled {
            Poll::Ready(Some(Ok(_))) => {
                if this.first_chunk_s.is_none() {
                    if let Some(p) = this.pending.as_ref() {
                        *this.first_chunk_s = Some(p.arrived.elapsed().as_secs_f64());
                    }
                }
            }
            Poll::Ready(Some(Err(e))) => {
                let message = e.to_string();
                if let Some(pending) = this.pending.take() {
                    pending.write(*this.first_chunk_s, Some(message), false);
                }
            }
            Poll::Ready(None) => {
                if let Some(pending) = this.pending.take() {
                    pending.write(*this.first_chunk_s, this.error.take(), false);
                }
            }
            Poll::Pending => {}
        }
        polled
    }
}
