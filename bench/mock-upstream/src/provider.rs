//! The four provider wire formats: whole JSON answers and SSE streams, byte for byte as the real
//! providers frame them.
//!
//! Bodies are assembled by appending byte strings and hand-formatted integers to a reusable
//! buffer: no serde, no `format!`, nothing that could make the mock a bottleneck. The answer
//! text is fixed: delta `i` carries the text `t<i> ` (for example `t0 `, `t1 `, …), so a client
//! can check that every frame arrived, once, in order, and time each one; a whole answer's text
//! is the concatenation of all deltas.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The provider endpoint a request was sent to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Endpoint {
    /// Anthropic Messages API, `POST /v1/messages`.
    Messages,
    /// Anthropic legacy Text Completions, `POST /v1/complete`.
    Complete,
    /// OpenAI-compatible Chat Completions, `POST /v1/chat/completions`.
    ChatCompletions,
    /// OpenAI-compatible (legacy) Completions, `POST /v1/completions`.
    Completions,
}

impl Endpoint {
    /// The endpoint served at `path` (query string already removed).
    pub fn from_path(path: &[u8]) -> Option<Self> {
        match path {
            b"/v1/messages" => Some(Endpoint::Messages),
            b"/v1/complete" => Some(Endpoint::Complete),
            b"/v1/chat/completions" => Some(Endpoint::ChatCompletions),
            b"/v1/completions" => Some(Endpoint::Completions),
            _ => None,
        }
    }

    /// Model echoed back when the request names none.
    pub fn default_model(self) -> &'static [u8] {
        match self {
            Endpoint::Messages => b"claude-3-5-sonnet-20240620",
            Endpoint::Complete => b"claude-2.1",
            Endpoint::ChatCompletions => b"gpt-4o-mini",
            Endpoint::Completions => b"gpt-3.5-turbo-instruct",
        }
    }

    /// Id prefix and the number of random base-62 characters after it, matching real ids
    /// (`msg_01XFDUDYJgAACzvnptvVoYEL`, `chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT`).
    fn id_shape(self) -> (&'static [u8], usize) {
        match self {
            Endpoint::Messages => (b"msg_01", 22),
            Endpoint::Complete => (b"compl_01", 22),
            Endpoint::ChatCompletions => (b"chatcmpl-", 29),
            Endpoint::Completions => (b"cmpl-", 29),
        }
    }

    /// Whether errors should use Anthropic's error shape (otherwise OpenAI's).
    pub fn is_anthropic(self) -> bool {
        matches!(self, Endpoint::Messages | Endpoint::Complete)
    }
}

/// A response id: prefix plus pseudo-random base-62 characters, unique within the process.
#[derive(Clone, Copy)]
pub struct Id {
    bytes: [u8; 40],
    len: usize,
}

impl Id {
    pub fn new(endpoint: Endpoint) -> Self {
        const ALPHABET: &[u8; 62] =
            b"0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        static SEED: OnceLock<u64> = OnceLock::new();
        let seed = *SEED.get_or_init(|| {
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(0, |d| d.as_nanos() as u64);
            nanos ^ u64::from(std::process::id()).rotate_left(32)
        });
        let mut state = seed
            ^ COUNTER
                .fetch_add(1, Ordering::Relaxed)
                .wrapping_mul(0x9E37_79B9_7F4A_7C15);

        let (prefix, random) = endpoint.id_shape();
        let mut bytes = [0u8; 40];
        bytes[..prefix.len()].copy_from_slice(prefix);
        for b in &mut bytes[prefix.len()..prefix.len() + random] {
            state = splitmix64(state);
            *b = ALPHABET[(state % 62) as usize];
        }
        Id {
            bytes,
            len: prefix.len() + random,
        }
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn splitmix64(state: u64) -> u64 {
    let mut z = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Seconds since the Unix epoch, for OpenAI's `created`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Everything that varies between two answers of one endpoint.
pub struct Answer<'a> {
    pub endpoint: Endpoint,
    pub id: Id,
    /// Raw JSON string content (escapes kept), copied between quotes as is.
    pub model: &'a [u8],
    pub created: u64,
    pub input_tokens: u64,
    pub output_tokens: u64,
}

/// Appends the decimal form of `n`.
pub fn push_u64(out: &mut Vec<u8>, mut n: u64) {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the lower-case hexadecimal form of `n` (chunk sizes).
pub fn push_hex(out: &mut Vec<u8>, mut n: usize) {
    let mut digits = [0u8; 16];
    let mut i = digits.len();
    loop {
        i -= 1;
        digits[i] = b"0123456789abcdef"[n & 0xf];
        n >>= 4;
        if n == 0 {
            break;
        }
    }
    out.extend_from_slice(&digits[i..]);
}

/// Appends the text of delta `i`: `t<i> `.
pub fn push_delta_text(out: &mut Vec<u8>, i: u32) {
    out.push(b't');
    push_u64(out, u64::from(i));
    out.push(b' ');
}

/// The whole (non-streaming) JSON body. `text` is the full answer text (already JSON-safe).
pub fn whole(a: &Answer<'_>, text: &[u8], out: &mut Vec<u8>) {
    match a.endpoint {
        Endpoint::Messages => {
            out.extend_from_slice(b"{\"id\":\"");
            out.extend_from_slice(a.id.as_bytes());
            out.extend_from_slice(b"\",\"type\":\"message\",\"role\":\"assistant\",\"model\":\"");
            out.extend_from_slice(a.model);
            out.extend_from_slice(b"\",\"content\":[{\"type\":\"text\",\"text\":\"");
            out.extend_from_slice(text);
            out.extend_from_slice(
                b"\"}],\"stop_reason\":\"end_turn\",\"stop_sequence\":null,\"usage\":{\"input_tokens\":",
            );
            push_u64(out, a.input_tokens);
            out.extend_from_slice(b",\"output_tokens\":");
            push_u64(out, a.output_tokens);
            out.extend_from_slice(b"}}");
        }
        Endpoint::Complete => {
            out.extend_from_slice(b"{\"type\":\"completion\",\"id\":\"");
            out.extend_from_slice(a.id.as_bytes());
            out.extend_from_slice(b"\",\"completion\":\"");
            out.extend_from_slice(text);
            out.extend_from_slice(b"\",\"stop_reason\":\"stop_sequence\",\"model\":\"");
            out.extend_from_slice(a.model);
            out.extend_from_slice(b"\"}");
        }
        Endpoint::ChatCompletions => {
            openai_prefix(a, b"chat.completion", out);
            out.extend_from_slice(
                b"{\"index\":0,\"message\":{\"role\":\"assistant\",\"content\":\"",
            );
            out.extend_from_slice(text);
            out.extend_from_slice(b"\"},\"finish_reason\":\"stop\"}],");
            openai_usage(a, out);
            out.push(b'}');
        }
        Endpoint::Completions => {
            openai_prefix(a, b"text_completion", out);
            out.extend_from_slice(b"{\"text\":\"");
            out.extend_from_slice(text);
            out.extend_from_slice(
                b"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}],",
            );
            openai_usage(a, out);
            out.push(b'}');
        }
    }
}

/// `{"id":"…","object":"<object>","created":T,"model":"…","choices":[`
fn openai_prefix(a: &Answer<'_>, object: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(b"{\"id\":\"");
    out.extend_from_slice(a.id.as_bytes());
    out.extend_from_slice(b"\",\"object\":\"");
    out.extend_from_slice(object);
    out.extend_from_slice(b"\",\"created\":");
    push_u64(out, a.created);
    out.extend_from_slice(b",\"model\":\"");
    out.extend_from_slice(a.model);
    out.extend_from_slice(b"\",\"choices\":[");
}

/// `"usage":{"prompt_tokens":N,"completion_tokens":M,"total_tokens":N+M}`
fn openai_usage(a: &Answer<'_>, out: &mut Vec<u8>) {
    out.extend_from_slice(b"\"usage\":{\"prompt_tokens\":");
    push_u64(out, a.input_tokens);
    out.extend_from_slice(b",\"completion_tokens\":");
    push_u64(out, a.output_tokens);
    out.extend_from_slice(b",\"total_tokens\":");
    push_u64(out, a.input_tokens.saturating_add(a.output_tokens));
    out.push(b'}');
}

/// Writes SSE events into a response buffer, one HTTP chunk per event (as the providers do), or
/// raw when the client speaks HTTP/1.0 and the body ends with the connection.
pub struct SseWriter<'b> {
    out: &'b mut Vec<u8>,
    frame: &'b mut Vec<u8>,
    chunked: bool,
}

impl<'b> SseWriter<'b> {
    pub fn new(out: &'b mut Vec<u8>, frame: &'b mut Vec<u8>, chunked: bool) -> Self {
        SseWriter {
            out,
            frame,
            chunked,
        }
    }

    /// The bytes written so far (and not yet taken by [`SseWriter::clear`]).
    pub fn bytes(&self) -> &[u8] {
        self.out
    }

    /// Forgets what was written (after it has gone to the socket).
    pub fn clear(&mut self) {
        self.out.clear();
    }

    /// Appends one event; `build` writes the complete event text, blank line included.
    fn event(&mut self, build: impl FnOnce(&mut Vec<u8>)) {
        if !self.chunked {
            build(self.out);
            return;
        }
        self.frame.clear();
        build(self.frame);
        push_hex(self.out, self.frame.len());
        self.out.extend_from_slice(b"\r\n");
        self.out.extend_from_slice(self.frame);
        self.out.extend_from_slice(b"\r\n");
    }

    /// Ends the body: the last, empty chunk.
    pub fn finish(&mut self) {
        if self.chunked {
            self.out.extend_from_slice(b"0\r\n\r\n");
        }
    }
}

/// Events before the first delta.
pub fn preamble(a: &Answer<'_>, sse: &mut SseWriter<'_>) {
    match a.endpoint {
        Endpoint::Messages => {
            sse.event(|f| {
                f.extend_from_slice(
                    b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"",
                );
                f.extend_from_slice(a.id.as_bytes());
                f.extend_from_slice(
                    b"\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"",
                );
                f.extend_from_slice(a.model);
                f.extend_from_slice(
                    b"\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{\"input_tokens\":",
                );
                push_u64(f, a.input_tokens);
                f.extend_from_slice(b",\"output_tokens\":1}}}\n\n");
            });
            sse.event(|f| {
                f.extend_from_slice(
                    b"event: content_block_start\ndata: {\"type\":\"content_block_start\",\"index\":0,\"content_block\":{\"type\":\"text\",\"text\":\"\"}}\n\n",
                );
            });
            sse.event(|f| f.extend_from_slice(b"event: ping\ndata: {\"type\": \"ping\"}\n\n"));
        }
        // The legacy Anthropic stream starts straight with `completion` events.
        Endpoint::Complete => {}
        // OpenAI's first chunk announces the role with empty content.
        Endpoint::ChatCompletions => sse.event(|f| {
            f.extend_from_slice(b"data: ");
            openai_prefix(a, b"chat.completion.chunk", f);
            f.extend_from_slice(
                b"{\"index\":0,\"delta\":{\"role\":\"assistant\",\"content\":\"\"},\"finish_reason\":null}]}\n\n",
            );
        }),
        Endpoint::Completions => {}
    }
}

/// Text delta number `i` (text `t<i> `).
pub fn delta(a: &Answer<'_>, i: u32, sse: &mut SseWriter<'_>) {
    sse.event(|f| match a.endpoint {
        Endpoint::Messages => {
            f.extend_from_slice(
                b"event: content_block_delta\ndata: {\"type\":\"content_block_delta\",\"index\":0,\"delta\":{\"type\":\"text_delta\",\"text\":\"",
            );
            push_delta_text(f, i);
            f.extend_from_slice(b"\"}}\n\n");
        }
        Endpoint::Complete => {
            f.extend_from_slice(
                b"event: completion\ndata: {\"type\":\"completion\",\"id\":\"",
            );
            f.extend_from_slice(a.id.as_bytes());
            f.extend_from_slice(b"\",\"completion\":\"");
            push_delta_text(f, i);
            f.extend_from_slice(b"\",\"stop_reason\":null,\"model\":\"");
            f.extend_from_slice(a.model);
            f.extend_from_slice(b"\"}\n\n");
        }
        Endpoint::ChatCompletions => {
            f.extend_from_slice(b"data: ");
            openai_prefix(a, b"chat.completion.chunk", f);
            f.extend_from_slice(b"{\"index\":0,\"delta\":{\"content\":\"");
            push_delta_text(f, i);
            f.extend_from_slice(b"\"},\"finish_reason\":null}]}\n\n");
        }
        Endpoint::Completions => {
            f.extend_from_slice(b"data: ");
            openai_prefix(a, b"text_completion", f);
            f.extend_from_slice(b"{\"text\":\"");
            push_delta_text(f, i);
            f.extend_from_slice(b"\",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n");
        }
    });
}

/// Events after the last delta, then the end of the body.
pub fn epilogue(a: &Answer<'_>, sse: &mut SseWriter<'_>) {
    match a.endpoint {
        Endpoint::Messages => {
            sse.event(|f| {
                f.extend_from_slice(
                    b"event: content_block_stop\ndata: {\"type\":\"content_block_stop\",\"index\":0}\n\n",
                );
            });
            sse.event(|f| {
                f.extend_from_slice(
                    b"event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":",
                );
                push_u64(f, a.output_tokens);
                f.extend_from_slice(b"}}\n\n");
            });
            sse.event(|f| {
                f.extend_from_slice(b"event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n");
            });
        }
        Endpoint::Complete => sse.event(|f| {
            f.extend_from_slice(b"event: completion\ndata: {\"type\":\"completion\",\"id\":\"");
            f.extend_from_slice(a.id.as_bytes());
            f.extend_from_slice(
                b"\",\"completion\":\"\",\"stop_reason\":\"stop_sequence\",\"model\":\"",
            );
            f.extend_from_slice(a.model);
            f.extend_from_slice(b"\"}\n\n");
        }),
        Endpoint::ChatCompletions | Endpoint::Completions => {
            let (object, last_choice): (&[u8], &[u8]) = if a.endpoint == Endpoint::ChatCompletions {
                (
                    b"chat.completion.chunk",
                    b"{\"index\":0,\"delta\":{},\"finish_reason\":\"stop\"}]}\n\n",
                )
            } else {
                (
                    b"text_completion",
                    b"{\"text\":\"\",\"index\":0,\"logprobs\":null,\"finish_reason\":\"length\"}]}\n\n",
                )
            };
            sse.event(|f| {
                f.extend_from_slice(b"data: ");
                openai_prefix(a, object, f);
                f.extend_from_slice(last_choice);
            });
            sse.event(|f| {
                f.extend_from_slice(b"data: ");
                openai_prefix(a, object, f);
                f.extend_from_slice(b"],");
                openai_usage(a, f);
                f.extend_from_slice(b"}\n\n");
            });
            sse.event(|f| f.extend_from_slice(b"data: [DONE]\n\n"));
        }
    }
    sse.finish();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn integers() {
        let mut out = Vec::new();
        push_u64(&mut out, 0);
        out.push(b',');
        push_u64(&mut out, u64::MAX);
        out.push(b',');
        push_hex(&mut out, 0);
        out.push(b',');
        push_hex(&mut out, 0x1a2f);
        assert_eq!(out, b"0,18446744073709551615,0,1a2f");
    }

    #[test]
    fn ids_have_the_real_shape_and_differ() {
        let a = Id::new(Endpoint::Messages);
        let b = Id::new(Endpoint::Messages);
        assert_ne!(a.as_bytes(), b.as_bytes());
        assert_eq!(a.as_bytes().len(), "msg_01XFDUDYJgAACzvnptvVoYEL".len());
        assert!(a.as_bytes().starts_with(b"msg_01"));
        assert!(a
            .as_bytes()
            .iter()
            .all(|b| b.is_ascii_alphanumeric() || *b == b'_'));
        let c = Id::new(Endpoint::ChatCompletions);
        assert_eq!(
            c.as_bytes().len(),
            "chatcmpl-B9MBs8CjcvOU2jLn4n570S5qMJKcT".len()
        );
    }

    #[test]
    fn openai_text_completion_whole_body() {
        let a = Answer {
            endpoint: Endpoint::Completions,
            id: Id::new(Endpoint::Completions),
            model: b"m",
            created: 7,
            input_tokens: 3,
            output_tokens: 2,
        };
        let mut out = Vec::new();
        whole(&a, b"t0 t1 ", &mut out);
        let id = String::from_utf8_lossy(a.id.as_bytes()).into_owned();
        let expected = format!(
            r#"{{"id":"{id}","object":"text_completion","created":7,"model":"m","choices":[{{"text":"t0 t1 ","index":0,"logprobs":null,"finish_reason":"length"}}],"usage":{{"prompt_tokens":3,"completion_tokens":2,"total_tokens":5}}}}"#
        );
        assert_eq!(String::from_utf8_lossy(&out), expected);
    }
}
