//! Streamed response bodies in each endpoint's framing.
//!
//! * Raw text (`/v2/code/*`, `/v3/code/completions`, `/v1/chat/*`, `/v1/prompts/*`): the chunks'
//!   text concatenated, labelled `text/event-stream; charset=utf-8` as the original does. A
//!   failure after the first byte has no in-band form here, so the body errors out and the
//!   connection is closed without the chunked terminator: the client sees an incomplete
//!   transfer, never a clean 200 with a silently truncated answer.
//! * SSE (`/v4/code/suggestions`): exactly sse-starlette's bytes: `event: <name>\r\ndata:
//!   <json.dumps>\r\n\r\n`, `stream_start` with metadata, one `content_chunk` per model chunk,
//!   `stream_end` with `data: null`, a `: ping - <utc time>` comment every 15 s. A failure after
//!   the first byte sends an `error` event and then `stream_end`.
//!
//! Every frame is handed to the server as its own chunk, and the server writes it at once
//! (TCP_NODELAY): nothing batches frames.

use std::time::Duration;

use actix_web::http::header::{self, HeaderValue};
use actix_web::web::Bytes;
use actix_web::{HttpRequest, HttpResponse, HttpResponseBuilder};
use futures::{Stream, StreamExt};
use serde_json::json;

use crate::http::access_log::RequestLog;
use crate::http::disconnect::until_disconnect;
use crate::inference::{CallFailure, Event, ModelCall};
use crate::models::{ModelChunk, Usage};
use crate::pyjson;

/// The error that aborts a raw-text stream mid-body.
#[derive(Debug)]
pub struct StreamAborted(pub String);

impl std::fmt::Display for StreamAborted {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "stream aborted: {}", self.0)
    }
}

impl std::error::Error for StreamAborted {}

/// Headers every streamed response carries: no caching, no proxy buffering.
pub fn stream_headers(builder: &mut HttpResponseBuilder) {
    builder
        .insert_header((
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/event-stream; charset=utf-8"),
        ))
        .insert_header((header::CACHE_CONTROL, HeaderValue::from_static("no-store")))
        .insert_header(("x-accel-buffering", HeaderValue::from_static("no")));
}

/// Note a call's usage in the request's access-log line (`input_tokens`, `output_tokens`).
pub fn log_usage(log: &RequestLog, usage: &Usage) {
    log.set("input_tokens", usage.input_tokens);
    log.set("output_tokens", usage.output_tokens);
}

/// `events` that also note the usage the provider reports in the request's access-log line, as
/// whole answers do: streams report it in their last chunk, which passes before the body ends
/// and the line is written.
pub fn logging_usage(
    events: impl Stream<Item = Event> + Unpin + 'static,
    log: &RequestLog,
) -> impl Stream<Item = Event> + Unpin + 'static {
    let log = log.clone();
    events.inspect(move |event| {
        if let Event::Chunk(ModelChunk {
            usage: Some(usage), ..
        }) = event
        {
            log_usage(&log, usage);
        }
    })
}

/// The events of a started call as a streamed body reads them: usage noted in the access log,
/// and the stream ended (cancelling the call) as soon as the client of `req` goes away.
pub fn client_events(
    req: &HttpRequest,
    call: ModelCall,
    log: &RequestLog,
) -> impl Stream<Item = Event> + 'static {
    until_disconnect(req, logging_usage(Box::pin(call.into_events()), log))
}

/// A raw-text streamed response.
pub fn raw_text(
    mut builder: HttpResponseBuilder,
    events: impl Stream<Item = Event> + 'static,
) -> HttpResponse {
    stream_headers(&mut builder);
    let body = events.filter_map(|event| async move {
        match event {
            Event::Chunk(chunk) if chunk.text.is_empty() => None,
            Event::Chunk(chunk) => Some(Ok(Bytes::from(chunk.text))),
            Event::Failed(failure) => {
                tracing::warn!(target: "api.streaming", "model stream failed mid-response: {}", failure.describe());
                // The server closes the connection as soon as the body errors, dropping whatever
                // it has not written yet, the status line included when the failure follows the
                // first chunk at once. Yielding first lets it flush, so the client always sees
                // the 200 and the text so far, then an incomplete transfer: never a connection
                // closed without an answer.
                tokio::task::yield_now().await;
                Some(Err(StreamAborted(failure.describe())))
            }
        }
    });
    builder.streaming(body)
}

/// One SSE message in sse-starlette's framing.
pub fn sse_event(name: &str, data: &serde_json::Value) -> Bytes {
    let mut out = String::with_capacity(64);
    out.push_str("event: ");
    out.push_str(name);
    out.push_str("\r\ndata: ");
    pyjson::write_value(&mut out, data);
    out.push_str("\r\n\r\n");
    Bytes::from(out)
}

/// sse-starlette's keep-alive comment: `: ping - <str(datetime.now(timezone.utc))>`.
pub fn sse_ping() -> Bytes {
    let now = chrono::Utc::now().format("%Y-%m-%d %H:%M:%S%.6f+00:00");
    Bytes::from(format!(": ping - {now}\r\n\r\n"))
}

/// The v4 `content_chunk` data.
pub fn content_chunk(text: &str) -> serde_json::Value {
    json!({"choices": [{"delta": {"content": text}, "index": 0}]})
}

/// A v4 SSE response: `stream_start` (with `start_data`), content chunks, pings, `stream_end`.
pub fn sse(
    mut builder: HttpResponseBuilder,
    start_data: serde_json::Value,
    events: impl Stream<Item = Event> + Unpin + 'static,
    ping_every: Duration,
) -> HttpResponse {
    stream_headers(&mut builder);
    builder
        .insert_header(("x-streaming-format", HeaderValue::from_static("sse")))
        .insert_header((header::CONNECTION, HeaderValue::from_static("keep-alive")));
    struct State<S> {
        events: S,
        start: Option<serde_json::Value>,
        ping: tokio::time::Interval,
        finished: bool,
        end_sent: bool,
    }
    let mut ping = tokio::time::interval_at(tokio::time::Instant::now() + ping_every, ping_every);
    ping.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let state = State {
        events,
        start: Some(start_data),
        ping,
        finished: false,
        end_sent: false,
    };
    let body = futures::stream::unfold(state, |mut st| async move {
        if let Some(start) = st.start.take() {
            return Some((
                Ok::<_, StreamAborted>(sse_event("stream_start", &start)),
                st,
            ));
        }
        if st.end_sent {
            return None;
        }
        if st.finished {
            st.end_sent = true;
            return Some((Ok(sse_event("stream_end", &serde_json::Value::Null)), st));
        }
        loop {
            tokio::select! {
                event = st.events.next() => {
                    return match event {
                        Some(Event::Chunk(chunk)) if chunk.text.is_empty() => continue,
                        Some(Event::Chunk(chunk)) => {
                            Some((Ok(sse_event("content_chunk", &content_chunk(&chunk.text))), st))
                        }
                        Some(Event::Failed(failure)) => {
                            tracing::warn!(target: "api.streaming", "model stream failed mid-response: {}", failure.describe());
                            st.finished = true;
                            Some((Ok(sse_event("error", &error_data(&failure))), st))
                        }
                        None => {
                            st.end_sent = true;
                            Some((Ok(sse_event("stream_end", &serde_json::Value::Null)), st))
                        }
                    };
                }
                _ = st.ping.tick() => return Some((Ok(sse_ping()), st)),
            }
        }
    });
    builder.streaming(body)
}

/// The data of a v4 `error` event.
pub fn error_data(failure: &CallFailure) -> serde_json::Value {
    let detail = match failure {
        CallFailure::Timeout(_) => "Inference timed out",
        _ => "Inference failed",
    };
    json!({"message": detail})
}
