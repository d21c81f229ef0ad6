//! Reading upstream Server-Sent Events (Anthropic, OpenAI-compatible servers), and turning any
//! upstream byte stream into a [`ChunkStream`].
//!
//! [`SseDecoder`] follows the WHATWG parsing rules: lines end in `\n`, `\r\n` or `\r`; `data`
//! lines of one event are joined with `\n`; comment lines (`: ping`) are ignored; a blank line
//! ends an event; an event split across network reads is reassembled. It is incremental and
//! copies each byte once.
//!
//! [`frames_to_chunks`] drives a response body through a decoder and a provider-specific
//! [`FrameHandler`], one frame in, at most one chunk out, so a frame the upstream sends is handed
//! on the moment it is complete (nothing waits for a second frame). A body that ends before the
//! handler saw the protocol's end marker is an error (`closed early`), never a silently
//! truncated answer. Dropping the returned stream drops the response, which closes the upstream
//! connection: that is how a client that went away cancels the upstream call.

use bytes::{Buf, Bytes, BytesMut};
use futures::stream::{self, BoxStream};
use futures::StreamExt;

use super::http_client::body_error;
use super::{ChunkStream, ModelChunk, ModelError, ModelErrorKind};

/// One Server-Sent Event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SseEvent {
    /// The `event:` field (`message` when absent, as browsers do; empty here).
    pub event: String,
    /// The `data:` lines joined with `\n`.
    pub data: String,
}

/// Incremental SSE parser.
#[derive(Debug, Default)]
pub struct SseDecoder {
    buf: BytesMut,
    fields: Fields,
    /// The previous read ended in `\r`: a `\n` starting the next one belongs to it.
    skip_lf: bool,
    /// The stream's start has been checked for a byte order mark.
    bom_checked: bool,
}

/// The fields of the event being read.
#[derive(Debug, Default)]
struct Fields {
    event: String,
    data: String,
    has_data: bool,
}

impl SseDecoder {
    /// A decoder.
    pub fn new() -> Self {
        Self::default()
    }

    /// Feed bytes.
    pub fn push(&mut self, bytes: &[u8]) {
        let bytes = if self.skip_lf && bytes.first() == Some(&b'\n') {
            &bytes[1..]
        } else {
            bytes
        };
        self.skip_lf = false;
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete event, if the bytes so far hold one.
    ///
    /// Lines are read in place (a vectorised search for the line end, no per-line buffer or
    /// reference count) and then dropped from the buffer.
    pub fn next_event(&mut self) -> Option<SseEvent> {
        if !self.bom_checked {
            // One U+FEFF at the start of the stream is dropped, as the standard says.
            const BOM: &[u8] = b"\xEF\xBB\xBF";
            if self.buf.len() < BOM.len() && BOM.starts_with(&self.buf) {
                return None;
            }
            if self.buf.starts_with(BOM) {
                self.buf.advance(BOM.len());
            }
            self.bom_checked = true;
        }
        loop {
            let end = memchr::memchr2(b'\n', b'\r', &self.buf)?;
            let event = self.fields.line(self.buf.get(..end).unwrap_or(&[]));
            let mut consumed = end + 1;
            if self.buf.get(end) == Some(&b'\r') {
                match self.buf.get(consumed) {
                    Some(b'\n') => consumed += 1,
                    None => self.skip_lf = true,
                    Some(_) => {}
                }
            }
            self.buf.advance(consumed);
            if event.is_some() {
                return event;
            }
        }
    }
}

impl Fields {
    fn line(&mut self, line: &[u8]) -> Option<SseEvent> {
        if line.is_empty() {
            // A block without a `data` line dispatches nothing and forgets its event type.
            if !self.has_data {
                self.event.clear();
                return None;
            }
            let event = SseEvent {
                event: std::mem::take(&mut self.event),
                data: std::mem::take(&mut self.data),
            };
            self.has_data = false;
            return Some(event);
        }
        if line.first() == Some(&b':') {
            return None;
        }
        // The field name ends at the first `:` (ASCII, so never inside a UTF-8 sequence): split
        // the bytes, then convert only the value, on the validator's fast path.
        let (field, value) = match memchr::memchr(b':', line) {
            Some(i) => {
                let value = line.get(i + 1..).unwrap_or(&[]);
                (
                    line.get(..i).unwrap_or(&[]),
                    value.strip_prefix(b" ").unwrap_or(value),
                )
            }
            None => (line, &[][..]),
        };
        match field {
            b"event" => {
                self.event.clear();
                push_text(&mut self.event, value);
            }
            b"data" => {
                if self.has_data {
                    self.data.push('\n');
                }
                push_text(&mut self.data, value);
                self.has_data = true;
            }
            _ => {}
        }
        None
    }
}

/// Append `bytes` as text; invalid UTF-8 becomes U+FFFD, as browsers decode event streams.
fn push_text(out: &mut String, bytes: &[u8]) {
    match std::str::from_utf8(bytes) {
        Ok(text) => out.push_str(text),
        Err(_) => out.push_str(&String::from_utf8_lossy(bytes)),
    }
}

/// What a provider makes of one upstream frame.
#[derive(Debug)]
pub enum Step {
    /// Nothing to hand on (a ping, a block start).
    Skip,
    /// A chunk of the answer.
    Chunk(ModelChunk),
    /// The protocol's end marker, with an optional last chunk.
    End(Option<ModelChunk>),
    /// An error frame.
    Fail(ModelError),
}

/// A provider's reading of its frames.
pub trait FrameHandler: Send + 'static {
    /// The frame type (an SSE event, a JSON object of a streamed array).
    type Frame;
    /// Handle one frame.
    fn frame(&mut self, frame: Self::Frame) -> Step;
    /// The body ended without an end marker: a protocol that has none ends here cleanly
    /// (`Ok(Some(last))`/`Ok(None)`), one that has one failed.
    fn eof(&mut self) -> Result<Option<ModelChunk>, ModelError>;
}

/// Something that cuts a byte stream into frames.
pub trait Framer: Send + 'static {
    /// The frame type.
    type Frame;
    /// Feed bytes.
    fn push(&mut self, bytes: &[u8]);
    /// The next complete frame.
    fn next_frame(&mut self) -> Result<Option<Self::Frame>, ModelError>;
}

impl Framer for SseDecoder {
    type Frame = SseEvent;
    fn push(&mut self, bytes: &[u8]) {
        SseDecoder::push(self, bytes);
    }
    fn next_frame(&mut self) -> Result<Option<SseEvent>, ModelError> {
        Ok(self.next_event())
    }
}

/// The error for a stream that ended before its end marker.
pub fn closed_early(upstream: &str) -> ModelError {
    ModelError::new(
        ModelErrorKind::Connection,
        format!("{upstream} stream closed early, before its end marker"),
    )
}

/// The most bytes an upstream may send without completing a frame (an SSE event, a JSON array
/// element). Real frames are a few hundred bytes; without a bound, an upstream that never ends
/// its line would grow the framer's buffer until the idle timeout.
pub const MAX_FRAME_BYTES: usize = 16 << 20;

struct Drive<F, H> {
    body: BoxStream<'static, Result<Bytes, reqwest::Error>>,
    framer: F,
    handler: H,
    upstream: &'static str,
    done: bool,
    /// Bytes read since the last complete frame (an upper bound on the frame being read, less
    /// at most one read's worth carried over).
    pending: usize,
}

/// The chunks of an upstream response body read through `framer` and `handler`.
pub fn frames_to_chunks<F, H>(
    upstream: &'static str,
    response: reqwest::Response,
    framer: F,
    handler: H,
) -> ChunkStream
where
    F: Framer,
    H: FrameHandler<Frame = F::Frame>,
{
    let state = Drive {
        body: response.bytes_stream().boxed(),
        framer,
        handler,
        upstream,
        done: false,
        pending: 0,
    };
    stream::unfold(state, |mut st| async move {
        if st.done {
            return None;
        }
        loop {
            match st.framer.next_frame() {
                Ok(Some(frame)) => {
                    st.pending = 0;
                    match st.handler.frame(frame) {
                        Step::Skip => continue,
                        Step::Chunk(chunk) => return Some((Ok(chunk), st)),
                        Step::End(last) => {
                            st.done = true;
                            return last.map(|c| (Ok(c), st));
                        }
                        Step::Fail(e) => {
                            st.done = true;
                            return Some((Err(e), st));
                        }
                    }
                }
                Ok(None) if st.pending > MAX_FRAME_BYTES => {
                    st.done = true;
                    let e = ModelError::new(
                        ModelErrorKind::Protocol,
                        format!(
                            "{} sent more than {MAX_FRAME_BYTES} bytes without completing a frame",
                            st.upstream
                        ),
                    );
                    return Some((Err(e), st));
                }
                Ok(None) => {}
                Err(e) => {
                    st.done = true;
                    return Some((Err(e), st));
                }
            }
            match st.body.next().await {
                Some(Ok(bytes)) => {
                    st.pending += bytes.len();
                    st.framer.push(&bytes);
                }
                Some(Err(e)) => {
                    st.done = true;
                    return Some((Err(body_error(st.upstream, &e)), st));
                }
                None => {
                    st.done = true;
                    return match st.handler.eof() {
                        Ok(Some(last)) => Some((Ok(last), st)),
                        Ok(None) => None,
                        Err(e) => Some((Err(e), st)),
                    };
                }
            }
        }
    })
    .boxed()
}

/// Turn a future that yields a stream (or fails before it) into one lazy stream.
pub fn lazy<Fut>(start: Fut) -> ChunkStream
where
    Fut: std::future::Future<Output = Result<ChunkStream, ModelError>> + Send + 'static,
{
    stream::once(start)
        .flat_map(|started| match started {
            Ok(chunks) => chunks,
            Err(e) => stream::iter([Err(e)]).boxed(),
        })
        .boxed()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all(decoder: &mut SseDecoder) -> Vec<SseEvent> {
        std::iter::from_fn(|| decoder.next_event()).collect()
    }

    /// The events of `text` fed in two reads, split at `cut`.
    fn split_at(text: &[u8], cut: usize) -> Vec<SseEvent> {
        let mut d = SseDecoder::new();
        d.push(&text[..cut]);
        let mut got = all(&mut d);
        d.push(&text[cut..]);
        got.extend(all(&mut d));
        got
    }

    #[test]
    fn events_comments_and_multiline_data() {
        let mut d = SseDecoder::new();
        d.push(b": ping\n\nevent: a\ndata: x\ndata:y\n\ndata: {\"k\":1}\n\n");
        assert_eq!(
            all(&mut d),
            vec![
                SseEvent {
                    event: "a".into(),
                    data: "x\ny".into()
                },
                SseEvent {
                    event: "".into(),
                    data: "{\"k\":1}".into()
                },
            ]
        );
    }

    #[test]
    fn split_anywhere_and_crlf() {
        let text = b"event: message_start\r\ndata: {\"a\": 1}\r\n\r\nevent: ping\rdata: {}\r\r";
        for cut in 0..text.len() {
            let got = split_at(text, cut);
            assert_eq!(got.len(), 2, "cut at {cut}");
            assert_eq!(got[0].event, "message_start");
            assert_eq!(got[0].data, "{\"a\": 1}");
            assert_eq!(got[1].event, "ping");
            assert_eq!(got[1].data, "{}");
        }
    }

    #[test]
    fn fields_without_colon_unknown_fields_and_invalid_utf8() {
        let mut d = SseDecoder::new();
        d.push(b"data\nid: 7\nretry: 10\ndata:x\n\nevent: b\xffad\ndata: caf\xc3\xa9 \xe2\x82\n\n");
        assert_eq!(
            all(&mut d),
            vec![
                SseEvent {
                    event: "".into(),
                    data: "\nx".into()
                },
                SseEvent {
                    event: "b\u{fffd}ad".into(),
                    data: "café \u{fffd}".into()
                },
            ]
        );
    }

    #[test]
    fn a_block_without_data_and_a_leading_bom_are_dropped() {
        let text = "\u{feff}event: lost\n\nevent: kept\ndata\n\n";
        for cut in 0..text.len() {
            assert_eq!(
                split_at(text.as_bytes(), cut),
                vec![SseEvent {
                    event: "kept".into(),
                    data: "".into()
                }],
                "cut at {cut}"
            );
        }
        // Only at the very start.
        let mut d = SseDecoder::new();
        d.push("data: a\u{feff}\n\n".as_bytes());
        assert_eq!(d.next_event().unwrap().data, "a\u{feff}");
    }

    #[test]
    fn incomplete_event_waits() {
        let mut d = SseDecoder::new();
        d.push(b"data: partial");
        assert_eq!(d.next_event(), None);
        d.push(b"\n");
        assert_eq!(d.next_event(), None);
        d.push(b"\n");
        assert_eq!(d.next_event().unwrap().data, "partial");
    }
}
