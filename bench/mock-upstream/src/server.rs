//! Accept loop and the per-connection request/response cycle.
//!
//! One task per connection. Each connection owns three buffers that it reuses for every request:
//! what it has read, the response being written, and a scratch frame for chunk sizes. A request is
//! answered with one `write_all` (whole answers, and streams in `instant`/`latency` mode) or one
//! `write_all` per due delta (`paced` streams), so every SSE frame leaves the process the moment
//! it is due; with `TCP_NODELAY` it also leaves the host at once.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::time::{self, Instant};

use crate::config::{Config, Mode};
use crate::http::{self, Connection, Head, HeadError, Method, Target};
use crate::provider::{self, Answer, Endpoint, Id, SseWriter};
use crate::scan;

/// Buffers grow on demand; above this they are given back after the request, so a few huge
/// prompts do not pin memory on every idle keep-alive connection.
const KEEP_CAPACITY: usize = 64 * 1024;
const INITIAL_CAPACITY: usize = 8 * 1024;

/// Accepts connections forever. Accept errors (out of file descriptors, aborted handshakes) are
/// reported and survived: a load test must not kill its upstream.
pub async fn serve(listener: TcpListener, cfg: Arc<Config>) {
    loop {
        match listener.accept().await {
            Ok((socket, _peer)) => {
                if let Err(e) = socket.set_nodelay(true) {
                    eprintln!("mock-upstream: TCP_NODELAY: {e}");
                }
                let cfg = Arc::clone(&cfg);
                tokio::spawn(async move {
                    // I/O errors only mean the client went away; nothing to report.
                    let _ = Conn::new(socket, cfg).run().await;
                });
            }
            Err(e) => {
                eprintln!("mock-upstream: accept: {e}");
                time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

struct Conn {
    socket: TcpStream,
    cfg: Arc<Config>,
    /// Bytes read and not yet consumed (may hold pipelined requests).
    input: Vec<u8>,
    /// The response being assembled.
    out: Vec<u8>,
    /// One SSE event, before it is wrapped in a chunk.
    frame: Vec<u8>,
}

impl Conn {
    fn new(socket: TcpStream, cfg: Arc<Config>) -> Self {
        Conn {
            socket,
            cfg,
            input: Vec::with_capacity(INITIAL_CAPACITY),
            out: Vec::with_capacity(INITIAL_CAPACITY),
            frame: Vec::with_capacity(512),
        }
    }

    async fn run(&mut self) -> io::Result<()> {
        loop {
            let head = loop {
                match http::parse_head(&self.input) {
                    Ok(Some(head)) => break head,
                    Ok(None) => {}
                    Err(err) => return self.refuse(err).await,
                }
                if self.read_more().await? == 0 {
                    return Ok(()); // closed between requests, or mid-head: nothing to answer
                }
            };

            let total = head.head_len + head.content_length;
            if self.input.len() < total {
                if head.expect_continue {
                    self.socket.write_all(http::CONTINUE).await?;
                }
                // Grow by doubling past 1 MiB rather than trusting a huge Content-Length up front.
                self.input.reserve((total - self.input.len()).min(1 << 20));
                while self.input.len() < total {
                    if self.read_more().await? == 0 {
                        return Ok(()); // body cut short
                    }
                }
            }

            let keep_alive = respond(
                &mut self.socket,
                &self.cfg,
                &head,
                &self.input[head.head_len..total],
                &mut self.out,
                &mut self.frame,
            )
            .await?;
            if !keep_alive {
                close_gracefully(&mut self.socket).await;
                return Ok(());
            }

            self.input.drain(..total);
            if self.input.capacity() > KEEP_CAPACITY {
                self.input.shrink_to(self.input.len().max(INITIAL_CAPACITY));
            }
            if self.out.capacity() > KEEP_CAPACITY {
                self.out = Vec::with_capacity(INITIAL_CAPACITY);
            }
            if self.frame.capacity() > KEEP_CAPACITY {
                self.frame = Vec::with_capacity(512);
            }
        }
    }

    async fn read_more(&mut self) -> io::Result<usize> {
        if self.input.capacity() - self.input.len() < 1024 {
            self.input.reserve(INITIAL_CAPACITY);
        }
        self.socket.read_buf(&mut self.input).await
    }

    /// Answers a request that cannot be framed, then closes.
    async fn refuse(&mut self, err: HeadError) -> io::Result<()> {
        self.out.clear();
        let body = error_body(None, "invalid_request_error", err.message());
        http::push_whole(&mut self.out, err.status(), &body, Connection::Close, None);
        self.socket.write_all(&self.out).await?;
        close_gracefully(&mut self.socket).await;
        Ok(())
    }
}

/// Writes the response to one request. Returns whether the connection stays open.
async fn respond(
    socket: &mut TcpStream,
    cfg: &Config,
    head: &Head,
    body: &[u8],
    out: &mut Vec<u8>,
    frame: &mut Vec<u8>,
) -> io::Result<bool> {
    out.clear();
    let connection = Connection::for_head(head);
    match (head.target, head.method) {
        (Target::Health, Method::Get) => {
            http::push_whole(out, 200, b"{\"status\":\"ok\"}", connection, None);
        }
        (Target::Health, _) => {
            let body = error_body(None, "invalid_request_error", "method not allowed");
            http::push_whole(out, 405, &body, connection, Some(b"GET"));
        }
        (Target::Api(_), Method::Get | Method::Other) => {
            let body = error_body(None, "invalid_request_error", "method not allowed");
            http::push_whole(out, 405, &body, connection, Some(b"POST"));
        }
        (Target::Unknown, _) => {
            let body = error_body(None, "not_found_error", "not found");
            http::push_whole(out, 404, &body, connection, None);
        }
        (Target::Api(endpoint), Method::Post) => {
            if !scan::looks_like_object(body) {
                let msg = "request body must be a JSON object";
                let body = error_body(Some(endpoint), "invalid_request_error", msg);
                http::push_whole(out, 400, &body, Connection::Close, None);
                socket.write_all(out).await?;
                return Ok(false);
            }
            return answer(socket, cfg, head, endpoint, body, out, frame).await;
        }
    }
    socket.write_all(out).await?;
    Ok(connection != Connection::Close)
}

/// The provider answer: whole JSON, or an SSE stream (instant, or paced delta by delta).
async fn answer(
    socket: &mut TcpStream,
    cfg: &Config,
    head: &Head,
    endpoint: Endpoint,
    body: &[u8],
    out: &mut Vec<u8>,
    frame: &mut Vec<u8>,
) -> io::Result<bool> {
    let found = scan::scan(body);
    let answer = Answer {
        endpoint,
        id: Id::new(endpoint),
        model: found
            .model
            .and_then(|range| body.get(range))
            .unwrap_or(endpoint.default_model()),
        created: provider::unix_now(),
        input_tokens: (body.len() as u64 / 4).max(1),
        output_tokens: u64::from(cfg.deltas),
    };
    if !cfg.latency.is_zero() {
        time::sleep(cfg.latency).await;
    }

    let connection = Connection::for_head(head);
    if !found.stream {
        frame.clear();
        provider::whole(&answer, &cfg.full_text, frame);
        http::push_whole(out, 200, frame, connection, None);
        socket.write_all(out).await?;
        return Ok(connection != Connection::Close);
    }

    // An HTTP/1.0 client cannot take a chunked body: the stream ends when the connection does.
    let chunked = !head.http10;
    let connection = if chunked {
        connection
    } else {
        Connection::Close
    };
    http::push_stream_head(out, chunked, connection);
    let mut sse = SseWriter::new(out, frame, chunked);
    provider::preamble(&answer, &mut sse);

    let n = cfg.deltas;
    if cfg.mode != Mode::Paced {
        for i in 0..n {
            provider::delta(&answer, i, &mut sse);
        }
        provider::epilogue(&answer, &mut sse);
        socket.write_all(sse.bytes()).await?;
        return Ok(connection != Connection::Close);
    }

    // Paced: delta i is due at start + i × interval, measured from one fixed start so that a
    // late wake-up does not push the following deltas back (no drift; late deltas catch up).
    // Delta 0 goes out with the head and preamble; the closing events with the last delta.
    let start = Instant::now();
    for i in 0..n {
        if i > 0 {
            time::sleep_until(start + cfg.interval.saturating_mul(i)).await;
        }
        provider::delta(&answer, i, &mut sse);
        if i + 1 == n {
            provider::epilogue(&answer, &mut sse);
        }
        socket.write_all(sse.bytes()).await?;
        sse.clear();
    }
    if n == 0 {
        provider::epilogue(&answer, &mut sse);
        socket.write_all(sse.bytes()).await?;
    }
    Ok(connection != Connection::Close)
}

/// A provider-shaped JSON error body. Messages are fixed ASCII without quotes.
fn error_body(endpoint: Option<Endpoint>, kind: &str, message: &str) -> Vec<u8> {
    let mut body = Vec::with_capacity(128);
    if endpoint.is_some_and(|e| !e.is_anthropic()) {
        body.extend_from_slice(b"{\"error\":{\"message\":\"");
        body.extend_from_slice(message.as_bytes());
        body.extend_from_slice(b"\",\"type\":\"");
        body.extend_from_slice(kind.as_bytes());
        body.extend_from_slice(b"\",\"param\":null,\"code\":null}}");
    } else {
        body.extend_from_slice(b"{\"type\":\"error\",\"error\":{\"type\":\"");
        body.extend_from_slice(kind.as_bytes());
        body.extend_from_slice(b"\",\"message\":\"");
        body.extend_from_slice(message.as_bytes());
        body.extend_from_slice(b"\"}}");
    }
    body
}

/// Half-closes, then drains what the client still sends for a moment, so the kernel does not
/// answer unread input with a reset that could destroy the response in flight.
async fn close_gracefully(socket: &mut TcpStream) {
    if socket.shutdown().await.is_err() {
        return;
    }
    let deadline = Instant::now() + Duration::from_secs(1);
    let mut sink = [0u8; 4096];
    let mut drained = 0usize;
    while drained < 1 << 20 {
        match time::timeout_at(deadline, socket.read(&mut sink)).await {
            Ok(Ok(n)) if n > 0 => drained += n,
            _ => break,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::error::Error;
    use std::net::SocketAddr;

    type TestResult<T = ()> = Result<T, Box<dyn Error>>;

    /// Guards every read so a bug fails the test instead of hanging it (not a timing assertion).
    const GUARD: Duration = Duration::from_secs(10);

    const SSE_HEAD: &str = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ntransfer-encoding: chunked\r\n\r\n";

    async fn start(cfg: Config) -> TestResult<SocketAddr> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        tokio::spawn(serve(listener, Arc::new(cfg)));
        Ok(addr)
    }

    fn instant(deltas: u32) -> Config {
        Config::new(Mode::Instant, Duration::ZERO, deltas, Duration::ZERO)
    }

    fn post(path: &str, body: &str) -> String {
        format!(
            "POST {path} HTTP/1.1\r\nhost: mock\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            body.len()
        )
    }

    /// A raw HTTP/1.1 client that checks framing strictly.
    struct Client {
        stream: TcpStream,
        buf: Vec<u8>,
    }

    impl Client {
        async fn connect(addr: SocketAddr) -> TestResult<Self> {
            Ok(Client {
                stream: TcpStream::connect(addr).await?,
                buf: Vec::new(),
            })
        }

        async fn send(&mut self, raw: &str) -> TestResult {
            self.stream.write_all(raw.as_bytes()).await?;
            Ok(())
        }

        /// Reads until `pred` finds what it wants in the buffer; EOF first is an error.
        async fn read_until(&mut self, pred: impl Fn(&[u8]) -> Option<usize>) -> TestResult<usize> {
            loop {
                if let Some(n) = pred(&self.buf) {
                    return Ok(n);
                }
                let n = time::timeout(GUARD, self.stream.read_buf(&mut self.buf)).await??;
                if n == 0 {
                    return Err(format!(
                        "EOF with {:?} unparsed",
                        String::from_utf8_lossy(&self.buf)
                    )
                    .into());
                }
            }
        }

        fn take(&mut self, n: usize) -> Vec<u8> {
            self.buf.drain(..n).collect()
        }

        /// The response head, blank line included.
        async fn head(&mut self) -> TestResult<String> {
            let n = self
                .read_until(|b| find(b, b"\r\n\r\n").map(|p| p + 4))
                .await?;
            Ok(String::from_utf8(self.take(n))?)
        }

        /// A whole response: head and `Content-Length` body.
        async fn whole(&mut self) -> TestResult<(String, String)> {
            let head = self.head().await?;
            let len: usize = header(&head, "content-length")
                .ok_or("no content-length")?
                .parse()?;
            self.read_until(|b| (b.len() >= len).then_some(len)).await?;
            Ok((head, String::from_utf8(self.take(len))?))
        }

        /// A chunked response: head and the chunks, without the final empty one.
        async fn chunked(&mut self) -> TestResult<(String, Vec<String>)> {
            let head = self.head().await?;
            let mut chunks = Vec::new();
            loop {
                let line = self.read_until(|b| find(b, b"\r\n")).await?;
                let size_line = String::from_utf8(self.take(line + 2))?;
                let size = usize::from_str_radix(size_line.trim_end_matches("\r\n"), 16)?;
                self.read_until(|b| (b.len() >= size + 2).then_some(0))
                    .await?;
                let data = self.take(size);
                if self.take(2) != b"\r\n" {
                    return Err("chunk not followed by CRLF".into());
                }
                if size == 0 {
                    return Ok((head, chunks));
                }
                chunks.push(String::from_utf8(data)?);
            }
        }

        /// True when the server has closed the connection (after any unread bytes).
        async fn closed(&mut self) -> TestResult<bool> {
            let mut rest = Vec::new();
            time::timeout(GUARD, self.stream.read_to_end(&mut rest)).await??;
            Ok(rest.is_empty() && self.buf.is_empty())
        }
    }

    fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
        hay.windows(needle.len()).position(|w| w == needle)
    }

    fn header<'h>(head: &'h str, name: &str) -> Option<&'h str> {
        head.split("\r\n").find_map(|line| {
            let (n, v) = line.split_once(':')?;
            n.eq_ignore_ascii_case(name).then_some(v.trim())
        })
    }

    /// The string value after `"key":"` in `json`.
    fn string_field<'j>(json: &'j str, key: &str) -> Option<&'j str> {
        let start = json.find(&format!("\"{key}\":\""))? + key.len() + 4;
        let len = json.get(start..)?.find('"')?;
        json.get(start..start + len)
    }

    /// The number after `"key":` in `json`.
    fn number_field(json: &str, key: &str) -> Option<u64> {
        let start = json.find(&format!("\"{key}\":"))? + key.len() + 3;
        let rest = json.get(start..)?;
        let len = rest.find(|c: char| !c.is_ascii_digit())?;
        rest.get(..len)?.parse().ok()
    }

    /// Event name of one Anthropic SSE frame, checking that the chunk holds exactly one event.
    fn event_name(chunk: &str) -> TestResult<&str> {
        let event = chunk
            .strip_suffix("\n\n")
            .filter(|e| !e.contains("\n\n"))
            .ok_or_else(|| format!("chunk is not exactly one event: {chunk:?}"))?;
        let (first, data) = event.split_once('\n').ok_or("no data line")?;
        if !data.starts_with("data: {") {
            return Err(format!("bad data line in {chunk:?}").into());
        }
        Ok(first.strip_prefix("event: ").ok_or("no event line")?)
    }

    #[tokio::test]
    async fn anthropic_whole_answer_is_byte_exact() -> TestResult {
        let addr = start(instant(3)).await?;
        let mut client = Client::connect(addr).await?;
        let body = r#"{"model":"claude-test","max_tokens":16,"messages":[{"role":"user","content":"hi"}]}"#;
        client.send(&post("/v1/messages", body)).await?;
        let (head, answer) = client.whole().await?;

        let id = string_field(&answer, "id").ok_or("no id")?;
        assert!(id.starts_with("msg_01") && id.len() == 28, "{id}");
        let expected = format!(
            r#"{{"id":"{id}","type":"message","role":"assistant","model":"claude-test","content":[{{"type":"text","text":"t0 t1 t2 "}}],"stop_reason":"end_turn","stop_sequence":null,"usage":{{"input_tokens":{},"output_tokens":3}}}}"#,
            body.len() / 4
        );
        assert_eq!(answer, expected);
        assert_eq!(
            head,
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
                expected.len()
            )
        );

        // Same connection (keep-alive); no model in the request: the default is echoed.
        client
            .send(&post("/v1/messages", r#"{"max_tokens":1}"#))
            .await?;
        let (_, answer) = client.whole().await?;
        assert_eq!(
            string_field(&answer, "model"),
            Some("claude-3-5-sonnet-20240620")
        );
        Ok(())
    }

    #[tokio::test]
    async fn other_whole_answers_have_the_provider_shape() -> TestResult {
        let addr = start(instant(2)).await?;
        let mut client = Client::connect(addr).await?;

        let body =
            r#"{"model":"gpt-test","messages":[{"role":"user","content":"hello"}],"stream":false}"#;
        client.send(&post("/v1/chat/completions", body)).await?;
        let (_, answer) = client.whole().await?;
        let id = string_field(&answer, "id").ok_or("no id")?;
        let created = number_field(&answer, "created").ok_or("no created")?;
        let n = body.len() / 4;
        assert_eq!(
            answer,
            format!(
                r#"{{"id":"{id}","object":"chat.completion","created":{created},"model":"gpt-test","choices":[{{"index":0,"message":{{"role":"assistant","content":"t0 t1 "}},"finish_reason":"stop"}}],"usage":{{"prompt_tokens":{n},"completion_tokens":2,"total_tokens":{}}}}}"#,
                n + 2
            )
        );
        assert!(id.starts_with("chatcmpl-"));

        let body = r#"{"model":"claude-2.1","prompt":"\n\nHuman: hi\n\nAssistant:"}"#;
        client.send(&post("/v1/complete", body)).await?;
        let (_, answer) = client.whole().await?;
        let id = string_field(&answer, "id").ok_or("no id")?;
        assert!(id.starts_with("compl_01"));
        assert_eq!(
            answer,
            format!(
                r#"{{"type":"completion","id":"{id}","completion":"t0 t1 ","stop_reason":"stop_sequence","model":"claude-2.1"}}"#
            )
        );
        Ok(())
    }

    #[tokio::test]
    async fn anthropic_stream_has_the_real_event_order() -> TestResult {
        let addr = start(instant(4)).await?;
        let mut client = Client::connect(addr).await?;
        let body = r#"{"model":"claude-test","stream":true,"max_tokens":16,"messages":[]}"#;
        client.send(&post("/v1/messages", body)).await?;
        let (head, chunks) = client.chunked().await?;
        assert_eq!(head, SSE_HEAD);

        let names = chunks
            .iter()
            .map(|c| event_name(c))
            .collect::<TestResult<Vec<_>>>()?;
        let mut expected = vec!["message_start", "content_block_start", "ping"];
        expected.extend(["content_block_delta"; 4]);
        expected.extend(["content_block_stop", "message_delta", "message_stop"]);
        assert_eq!(names, expected);

        let id = string_field(&chunks[0], "id").ok_or("no id")?;
        assert_eq!(
            chunks[0],
            format!(
                "event: message_start\ndata: {{\"type\":\"message_start\",\"message\":{{\"id\":\"{id}\",\"type\":\"message\",\"role\":\"assistant\",\"content\":[],\"model\":\"claude-test\",\"stop_reason\":null,\"stop_sequence\":null,\"usage\":{{\"input_tokens\":{},\"output_tokens\":1}}}}}}\n\n",
                body.len() / 4
            )
        );
        assert_eq!(chunks[2], "event: ping\ndata: {\"type\": \"ping\"}\n\n");
        for (i, chunk) in chunks[3..7].iter().enumerate() {
            assert_eq!(
                *chunk,
                format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"t{i} \"}}}}\n\n")
            );
        }
        assert_eq!(
            chunks[8],
            "event: message_delta\ndata: {\"type\":\"message_delta\",\"delta\":{\"stop_reason\":\"end_turn\",\"stop_sequence\":null},\"usage\":{\"output_tokens\":4}}\n\n"
        );
        assert_eq!(
            chunks[9],
            "event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"
        );
        Ok(())
    }

    #[tokio::test]
    async fn openai_stream_ends_with_done() -> TestResult {
        let addr = start(instant(3)).await?;
        let mut client = Client::connect(addr).await?;
        let body = r#"{"model":"gpt-test","stream": true,"stream_options":{"include_usage":true},"messages":[]}"#;
        client.send(&post("/v1/chat/completions", body)).await?;
        let (head, chunks) = client.chunked().await?;
        assert_eq!(head, SSE_HEAD);
        assert_eq!(chunks.len(), 1 + 3 + 1 + 1 + 1);

        let id = string_field(&chunks[0], "id").ok_or("no id")?;
        let created = number_field(&chunks[0], "created").ok_or("no created")?;
        let prefix = format!("data: {{\"id\":\"{id}\",\"object\":\"chat.completion.chunk\",\"created\":{created},\"model\":\"gpt-test\",\"choices\":[");
        assert_eq!(
            chunks[0],
            format!("{prefix}{{\"index\":0,\"delta\":{{\"role\":\"assistant\",\"content\":\"\"}},\"finish_reason\":null}}]}}\n\n")
        );
        for (i, chunk) in chunks[1..4].iter().enumerate() {
            assert_eq!(
                *chunk,
                format!("{prefix}{{\"index\":0,\"delta\":{{\"content\":\"t{i} \"}},\"finish_reason\":null}}]}}\n\n")
            );
        }
        assert_eq!(
            chunks[4],
            format!("{prefix}{{\"index\":0,\"delta\":{{}},\"finish_reason\":\"stop\"}}]}}\n\n")
        );
        let n = body.len() / 4;
        assert_eq!(
            chunks[5],
            format!(
                "{prefix}],\"usage\":{{\"prompt_tokens\":{n},\"completion_tokens\":3,\"total_tokens\":{}}}}}\n\n",
                n + 3
            )
        );
        assert_eq!(chunks[6], "data: [DONE]\n\n");

        // The connection stays usable after a stream: a text-completions stream next.
        client
            .send(&post(
                "/v1/completions",
                r#"{"model":"m","prompt":"x","stream":true}"#,
            ))
            .await?;
        let (_, chunks) = client.chunked().await?;
        assert!(chunks[0].contains(r#""object":"text_completion","#));
        assert!(chunks[0].ends_with(
            "\"choices\":[{\"text\":\"t0 \",\"index\":0,\"logprobs\":null,\"finish_reason\":null}]}\n\n"
        ));
        assert!(
            chunks[3].contains(r#"{"text":"","index":0,"logprobs":null,"finish_reason":"length"}"#)
        );
        assert!(chunks[4].contains(r#""choices":[],"usage":{"#));
        assert_eq!(chunks.last().map(String::as_str), Some("data: [DONE]\n\n"));
        Ok(())
    }

    #[tokio::test]
    async fn paced_mode_delivers_every_delta_in_order() -> TestResult {
        let cfg = Config::new(Mode::Paced, Duration::ZERO, 5, Duration::from_millis(1));
        let addr = start(cfg).await?;
        let mut client = Client::connect(addr).await?;

        client
            .send(&post("/v1/messages", r#"{"stream":true}"#))
            .await?;
        let (_, chunks) = client.chunked().await?;
        let deltas: Vec<&String> = chunks
            .iter()
            .filter(|c| c.starts_with("event: content_block_delta"))
            .collect();
        assert_eq!(deltas.len(), 5);
        for (i, d) in deltas.iter().enumerate() {
            assert!(d.contains(&format!("\"text\":\"t{i} \"")), "{d}");
        }
        assert_eq!(chunks.len(), 3 + 5 + 3);
        assert!(chunks[10].starts_with("event: message_stop"));

        client
            .send(&post("/v1/chat/completions", r#"{"stream":true}"#))
            .await?;
        let (_, chunks) = client.chunked().await?;
        let texts: Vec<String> = chunks
            .iter()
            .filter_map(|c| string_field(c, "content"))
            .filter(|t| !t.is_empty())
            .map(str::to_owned)
            .collect();
        assert_eq!(texts, ["t0 ", "t1 ", "t2 ", "t3 ", "t4 "]);
        assert_eq!(chunks.last().map(String::as_str), Some("data: [DONE]\n\n"));
        Ok(())
    }

    #[tokio::test]
    async fn malformed_requests_get_400_and_close() -> TestResult {
        let addr = start(instant(1)).await?;

        let mut client = Client::connect(addr).await?;
        client.send("NONSENSE\r\n\r\n").await?;
        let (head, body) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert_eq!(header(&head, "connection"), Some("close"));
        assert!(body.starts_with("{\"type\":\"error\""));
        assert!(client.closed().await?);

        let mut client = Client::connect(addr).await?;
        client
            .send(&post("/v1/chat/completions", "not json"))
            .await?;
        let (head, body) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 400 Bad Request\r\n"), "{head}");
        assert!(body.starts_with("{\"error\":{\"message\":"), "{body}");
        assert!(client.closed().await?);

        let mut client = Client::connect(addr).await?;
        client
            .send("POST /v1/messages HTTP/1.1\r\ntransfer-encoding: chunked\r\n\r\n")
            .await?;
        let (head, _) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 501 "), "{head}");
        assert!(client.closed().await?);
        Ok(())
    }

    #[tokio::test]
    async fn health_routes_pipelining_and_expect_continue() -> TestResult {
        let addr = start(instant(1)).await?;
        let mut client = Client::connect(addr).await?;

        // Three pipelined requests in one write, answered in order on one connection.
        client
            .send("GET /health HTTP/1.1\r\nhost: m\r\n\r\nGET /nowhere HTTP/1.1\r\n\r\nGET /v1/messages HTTP/1.1\r\n\r\n")
            .await?;
        let (head, body) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(body, "{\"status\":\"ok\"}");
        let (head, _) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 404 Not Found\r\n"));
        let (head, _) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 405 Method Not Allowed\r\n"));
        assert_eq!(header(&head, "allow"), Some("POST"));

        let body = r#"{"model":"x"}"#;
        client
            .send(&format!(
                "POST /v1/messages HTTP/1.1\r\nexpect: 100-continue\r\ncontent-length: {}\r\n\r\n",
                body.len()
            ))
            .await?;
        assert_eq!(client.head().await?, "HTTP/1.1 100 Continue\r\n\r\n");
        client.send(body).await?;
        let (head, answer) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        assert_eq!(string_field(&answer, "model"), Some("x"));
        Ok(())
    }

    #[tokio::test]
    async fn http10_stream_is_delimited_by_close() -> TestResult {
        let addr = start(instant(2)).await?;
        let mut client = Client::connect(addr).await?;
        let body = r#"{"stream":true}"#;
        client
            .send(&format!(
                "POST /v1/messages HTTP/1.0\r\ncontent-length: {}\r\n\r\n{body}",
                body.len()
            ))
            .await?;
        let head = client.head().await?;
        assert_eq!(header(&head, "transfer-encoding"), None);
        assert_eq!(header(&head, "connection"), Some("close"));
        let mut rest = Vec::new();
        time::timeout(GUARD, client.stream.read_to_end(&mut rest)).await??;
        client.buf.extend_from_slice(&rest);
        let text = String::from_utf8(std::mem::take(&mut client.buf))?;
        assert!(text.starts_with("event: message_start\n"));
        assert!(text.ends_with("event: message_stop\ndata: {\"type\":\"message_stop\"}\n\n"));
        Ok(())
    }

    #[tokio::test]
    async fn client_leaving_mid_stream_does_not_hurt_the_server() -> TestResult {
        let cfg = Config::new(Mode::Paced, Duration::ZERO, 1000, Duration::from_millis(1));
        let addr = start(cfg).await?;
        let mut client = Client::connect(addr).await?;
        client
            .send(&post("/v1/messages", r#"{"stream":true}"#))
            .await?;
        assert_eq!(client.head().await?, SSE_HEAD);
        drop(client);

        let mut client = Client::connect(addr).await?;
        client.send("GET /health HTTP/1.1\r\n\r\n").await?;
        let (head, _) = client.whole().await?;
        assert!(head.starts_with("HTTP/1.1 200 OK\r\n"));
        Ok(())
    }
}
