//! A minimal HTTP/1.1 client: exactly what a load driver needs and nothing it would pay for.
//!
//! * The request is built once (head and body in one buffer) and sent with one `write_all`.
//! * One connection per worker, kept alive across requests, with `TCP_NODELAY` so neither the
//!   request nor small stream frames wait on Nagle's algorithm or delayed ACKs.
//! * Responses: the status line, `Content-Length`, `Transfer-Encoding` and `Connection` are read;
//!   everything else in the head is skipped. Bodies framed by `Content-Length`, by chunked
//!   encoding (decoded incrementally, so each chunk's data reaches the caller the moment it is
//!   read) or by the end of the connection.
//! * Every piece of body data is handed to a sink together with the instant of the `read` that
//!   brought it, which is what stream timing (time to first marker, gaps) is measured against.
//!
//! Nothing here allocates per request beyond the connection's reusable read buffer.

use std::fmt;
use std::io;
use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::Instant;

/// Largest response head accepted.
const MAX_HEAD: usize = 64 * 1024;
/// Longest chunk-size or trailer line accepted.
const MAX_LINE: usize = 4 * 1024;
/// Bytes asked of each `read`.
const READ_SIZE: usize = 16 * 1024;

/// Where to send: the socket address (resolved once) and what goes in the request line.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub addr: SocketAddr,
    /// `host[:port]` as written in the URL, for the `Host` header.
    pub authority: String,
    /// Path and query, starting with `/`.
    pub path: String,
}

/// Splits `http://host[:port][/path][?query]` into host, port, authority and path.
pub fn split_url(url: &str) -> Result<(String, u16, String, String), String> {
    let rest = match url.strip_prefix("http://") {
        Some(rest) => rest,
        None if url.starts_with("https://") => {
            return Err("https is not supported: the driver speaks plain HTTP/1.1".into())
        }
        None => return Err(format!("{url:?}: the URL must start with http://")),
    };
    let (authority, path) = match rest.find(['/', '?', '#']) {
        Some(i) => rest.split_at(i),
        None => (rest, "/"),
    };
    let path = path.split('#').next().unwrap_or_default();
    let path = if path.starts_with('/') {
        path.to_owned()
    } else {
        format!("/{path}")
    };
    if path.bytes().any(|b| b <= b' ' || b == 0x7f) {
        return Err(format!(
            "{url:?}: the path must not contain spaces or control characters"
        ));
    }
    if authority.is_empty() || authority.contains('@') {
        return Err(format!("{url:?}: expected http://host[:port]/path"));
    }
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (host, after) = v6
            .split_once(']')
            .ok_or_else(|| format!("{url:?}: unclosed [ in the host"))?;
        let port = match after {
            "" => None,
            p => Some(
                p.strip_prefix(':')
                    .ok_or_else(|| format!("{url:?}: bad port"))?,
            ),
        };
        (host, port)
    } else {
        match authority.rsplit_once(':') {
            Some((host, port)) => (host, Some(port)),
            None => (authority, None),
        }
    };
    let port = match port {
        None => 80,
        Some(p) => p
            .parse::<u16>()
            .map_err(|_| format!("{url:?}: bad port {p:?}"))?,
    };
    if host.is_empty() {
        return Err(format!("{url:?}: empty host"));
    }
    Ok((host.to_owned(), port, authority.to_owned(), path))
}

/// Parses the URL and resolves its host once; the run only ever connects to that address.
pub async fn resolve(url: &str) -> Result<Endpoint, String> {
    let (host, port, authority, path) = split_url(url)?;
    let mut addrs = tokio::net::lookup_host((host.as_str(), port))
        .await
        .map_err(|e| format!("cannot resolve {host}: {e}"))?;
    let addr = addrs
        .next()
        .ok_or_else(|| format!("{host} resolves to no address"))?;
    Ok(Endpoint {
        addr,
        authority,
        path,
    })
}

/// RFC 9110 token characters (methods and header names).
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// The complete request (head and body) as one buffer, sent as is for every request.
///
/// `headers` are `Name: value` lines added after `Host`; a `Host` or `Content-Type` among them
/// replaces the default one. `Content-Length` is always computed here; framing headers
/// (`Content-Length`, `Transfer-Encoding`, `Connection`) may not be given.
pub fn build_request(
    ep: &Endpoint,
    method: &str,
    headers: &[String],
    body: Option<&[u8]>,
) -> Result<Vec<u8>, String> {
    if !is_token(method) {
        return Err(format!("bad method {method:?}"));
    }
    let mut extra = String::new();
    let (mut has_host, mut has_type) = (false, false);
    for h in headers {
        let (name, value) = h
            .split_once(':')
            .ok_or_else(|| format!("header {h:?}: expected 'Name: value'"))?;
        let value = value.trim_matches([' ', '\t']);
        if !is_token(name) || value.bytes().any(|b| b == b'\r' || b == b'\n' || b == 0) {
            return Err(format!("header {h:?}: bad name or value"));
        }
        for framing in ["content-length", "transfer-encoding", "connection"] {
            if name.eq_ignore_ascii_case(framing) {
                return Err(format!("header {name:?} is set by the driver"));
            }
        }
        has_host |= name.eq_ignore_ascii_case("host");
        has_type |= name.eq_ignore_ascii_case("content-type");
        extra.push_str(name);
        extra.push_str(": ");
        extra.push_str(value);
        extra.push_str("\r\n");
    }
    let mut head = format!("{method} {} HTTP/1.1\r\n", ep.path);
    if !has_host {
        head.push_str("host: ");
        head.push_str(&ep.authority);
        head.push_str("\r\n");
    }
    let needs_length = body.is_some() || matches!(method, "POST" | "PUT" | "PATCH");
    if body.is_some() && !has_type {
        head.push_str("content-type: application/json\r\n");
    }
    if needs_length {
        head.push_str(&format!(
            "content-length: {}\r\n",
            body.map_or(0, <[u8]>::len)
        ));
    }
    head.push_str(&extra);
    head.push_str("\r\n");
    let mut request = head.into_bytes();
    if let Some(body) = body {
        request.extend_from_slice(body);
    }
    Ok(request)
}

/// How a response body is delimited.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Framing {
    /// No body (204, 304).
    Empty,
    Length(u64),
    Chunked,
    /// Until the server closes the connection.
    Close,
}

/// What the driver reads from a response head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub status: u16,
    /// Bytes of the head, blank line included.
    pub len: usize,
    pub framing: Framing,
    /// The server keeps the connection open after this response.
    pub keep_alive: bool,
}

/// Parses the response head at the start of `buf`; `Ok(None)` while it is incomplete.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, &'static str> {
    let Some(len) = head_end(buf) else {
        return if buf.len() > MAX_HEAD {
            Err("response head too large")
        } else {
            Ok(None)
        };
    };
    let text = buf.get(..len).unwrap_or_default();
    let mut lines = text
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let (http11, rest) = if let Some(rest) = status_line.strip_prefix(b"HTTP/1.1 ") {
        (true, rest)
    } else if let Some(rest) = status_line.strip_prefix(b"HTTP/1.0 ") {
        (false, rest)
    } else {
        return Err("bad status line");
    };
    let status = match rest.get(..3) {
        Some(&[a, b, c])
            if a.is_ascii_digit()
                && b.is_ascii_digit()
                && c.is_ascii_digit()
                && matches!(rest.get(3), None | Some(b' ')) =>
        {
            u16::from(a - b'0') * 100 + u16::from(b - b'0') * 10 + u16::from(c - b'0')
        }
        _ => return Err("bad status code"),
    };

    let mut length: Option<u64> = None;
    let mut transfer: Option<bool> = None; // Some(chunked is the final coding)
    let (mut close, mut keep) = (false, false);
    for line in lines {
        if line.is_empty() {
            break;
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err("header line without a colon");
        };
        let (name, value) = line.split_at(colon);
        let value = value.get(1..).unwrap_or_default().trim_ascii();
        if name.eq_ignore_ascii_case(b"content-length") {
            if value.is_empty() || value.len() > 19 || !value.iter().all(u8::is_ascii_digit) {
                return Err("bad Content-Length");
            }
            let n = value
                .iter()
                .fold(0u64, |n, &d| n * 10 + u64::from(d - b'0'));
            if length.is_some_and(|old| old != n) {
                return Err("conflicting Content-Length");
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            let last = value.rsplit(|&b| b == b',').next().unwrap_or_default();
            transfer = Some(last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',') {
                let token = token.trim_ascii();
                close |= token.eq_ignore_ascii_case(b"close");
                keep |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        }
    }
    // RFC 9112 §6.3, for the requests this driver sends (never HEAD or CONNECT).
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if let Some(chunked) = transfer {
        if chunked {
            Framing::Chunked
        } else {
            Framing::Close
        }
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    let keep_alive = framing != Framing::Close && !close && (http11 || keep);
    Ok(Some(Head {
        status,
        len,
        framing,
        keep_alive,
    }))
}

/// Length of the head (blank line included) when it is complete. Lines end with CRLF or LF.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut start = 0;
    loop {
        let nl = start + buf.get(start..)?.iter().position(|&b| b == b'\n')?;
        let line = buf.get(start..nl)?;
        if line.is_empty() || line == b"\r" {
            return Some(nl + 1);
        }
        start = nl + 1;
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DecodeState {
    Length(u64),
    ChunkSize,
    ChunkData(u64),
    /// The CRLF after a chunk's data.
    ChunkEnd,
    Trailer,
    Close,
    Done,
}

/// Incremental body decoder: fed whatever bytes are available, it passes body data out at once
/// and keeps its place (even in the middle of a chunk-size line) for the next read.
#[derive(Clone, Debug)]
pub struct Decoder {
    state: DecodeState,
}

impl Decoder {
    pub fn new(framing: Framing) -> Self {
        let state = match framing {
            Framing::Empty => DecodeState::Done,
            Framing::Length(n) => DecodeState::Length(n),
            Framing::Chunked => DecodeState::ChunkSize,
            Framing::Close => DecodeState::Close,
        };
        Decoder { state }
    }

    /// The body ends with the connection.
    pub fn is_close_delimited(&self) -> bool {
        self.state == DecodeState::Close
    }

    /// Consumes what it can of `input`, handing body data to `out`. Returns the bytes consumed
    /// and whether the body is complete (bytes after the end are left unconsumed).
    pub fn feed(
        &mut self,
        input: &[u8],
        out: &mut impl FnMut(&[u8]),
    ) -> Result<(usize, bool), &'static str> {
        let mut used = 0;
        loop {
            let avail = input.get(used..).unwrap_or_default();
            match self.state {
                DecodeState::Done => return Ok((used, true)),
                DecodeState::Close => {
                    if !avail.is_empty() {
                        out(avail);
                    }
                    return Ok((input.len(), false));
                }
                DecodeState::Length(0) => self.state = DecodeState::Done,
                DecodeState::Length(rem) | DecodeState::ChunkData(rem) => {
                    if avail.is_empty() {
                        return Ok((used, false));
                    }
                    let take = usize::try_from(rem).unwrap_or(usize::MAX).min(avail.len());
                    let (data, _) = avail.split_at(take);
                    out(data);
                    used += take;
                    let left = rem - take as u64;
                    self.state = match self.state {
                        DecodeState::Length(_) => DecodeState::Length(left),
                        _ if left == 0 => DecodeState::ChunkEnd,
                        _ => DecodeState::ChunkData(left),
                    };
                }
                DecodeState::ChunkEnd => match avail {
                    [] | [b'\r'] => return Ok((used, false)),
                    [b'\n', ..] => {
                        used += 1;
                        self.state = DecodeState::ChunkSize;
                    }
                    [b'\r', b'\n', ..] => {
                        used += 2;
                        self.state = DecodeState::ChunkSize;
                    }
                    _ => return Err("chunk data not followed by CRLF"),
                },
                DecodeState::ChunkSize | DecodeState::Trailer => {
                    let Some(nl) = avail.iter().position(|&b| b == b'\n') else {
                        return if avail.len() > MAX_LINE {
                            Err("chunk-size or trailer line too long")
                        } else {
                            Ok((used, false))
                        };
                    };
                    let line = avail.get(..nl).unwrap_or_default();
                    let line = line.strip_suffix(b"\r").unwrap_or(line);
                    used += nl + 1;
                    self.state = if self.state == DecodeState::Trailer {
                        if line.is_empty() {
                            DecodeState::Done
                        } else {
                            DecodeState::Trailer
                        }
                    } else {
                        match chunk_size(line)? {
                            0 => DecodeState::Trailer,
                            n => DecodeState::ChunkData(n),
                        }
                    };
                }
            }
        }
    }
}

/// The size in a chunk-size line (`1a2f`, `1a2f;ext=1`).
fn chunk_size(line: &[u8]) -> Result<u64, &'static str> {
    let digits = line
        .split(|&b| b == b';')
        .next()
        .unwrap_or_default()
        .trim_ascii();
    if digits.is_empty() || digits.len() > 15 {
        return Err("bad chunk size");
    }
    digits.iter().try_fold(0u64, |n, &b| {
        let d = match b {
            b'0'..=b'9' => b - b'0',
            b'a'..=b'f' => b - b'a' + 10,
            b'A'..=b'F' => b - b'A' + 10,
            _ => return Err("bad chunk size"),
        };
        Ok((n << 4) | u64::from(d))
    })
}

/// A completed exchange.
#[derive(Clone, Copy, Debug)]
pub struct Response {
    pub status: u16,
    /// Just before the request was written.
    pub sent_at: Instant,
    /// Decoded body bytes.
    pub body_len: u64,
    /// The connection can carry another request.
    pub reusable: bool,
}

#[derive(Debug)]
pub enum FailureKind {
    Io(io::Error),
    /// The server closed the connection (before the response, or in the middle of its body).
    Closed,
    Protocol(&'static str),
}

/// A failed exchange; the connection must not be used again.
#[derive(Debug)]
pub struct Failure {
    pub kind: FailureKind,
    /// No byte of a response had arrived: on a reused keep-alive connection this is the server
    /// having closed it while idle, and the request may be retried on a fresh one.
    pub before_response: bool,
    /// The response head had been read (a failure in the body).
    pub after_head: bool,
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let when = if self.after_head {
            "in the body"
        } else if self.before_response {
            "before the response"
        } else {
            "in the head"
        };
        match &self.kind {
            FailureKind::Io(e) => write!(f, "i/o error {when}: {}", e.kind()),
            FailureKind::Closed => write!(f, "connection closed {when}"),
            FailureKind::Protocol(why) => write!(f, "protocol error {when}: {why}"),
        }
    }
}

/// One keep-alive client connection with its reusable read buffer.
#[derive(Debug)]
pub struct Conn {
    stream: TcpStream,
    buf: Vec<u8>,
    /// Bytes of `buf` already consumed.
    pos: usize,
    /// Requests completed on this connection.
    served: u64,
    /// When the last `read` returned.
    last_read: Instant,
}

impl Conn {
    pub async fn connect(addr: SocketAddr) -> io::Result<Conn> {
        let stream = TcpStream::connect(addr).await?;
        stream.set_nodelay(true)?;
        Ok(Conn {
            stream,
            buf: Vec::with_capacity(READ_SIZE),
            pos: 0,
            served: 0,
            last_read: Instant::now(),
        })
    }

    /// Requests completed on this connection so far.
    pub fn served(&self) -> u64 {
        self.served
    }

    /// Sends `request` and reads the whole response, handing each piece of body data to `sink`
    /// with the instant it was read. 1xx interim responses are skipped.
    pub async fn exchange<F: FnMut(&[u8], Instant)>(
        &mut self,
        request: &[u8],
        sink: &mut F,
    ) -> Result<Response, Failure> {
        let fail = |kind, before_response, after_head| Failure {
            kind,
            before_response,
            after_head,
        };
        self.buf.clear();
        self.pos = 0;
        let sent_at = Instant::now();
        if let Err(e) = self.stream.write_all(request).await {
            return Err(fail(FailureKind::Io(e), true, false));
        }

        let mut got_bytes = false;
        let head = loop {
            match parse_head(self.buf.get(self.pos..).unwrap_or_default()) {
                Ok(Some(head)) => {
                    self.pos += head.len;
                    if (100..200).contains(&head.status) {
                        if head.status == 101 {
                            let kind = FailureKind::Protocol("unexpected 101 Switching Protocols");
                            return Err(fail(kind, false, false));
                        }
                        continue;
                    }
                    break head;
                }
                Ok(None) => {}
                Err(why) => return Err(fail(FailureKind::Protocol(why), false, false)),
            }
            match self.fill().await {
                Ok(0) => return Err(fail(FailureKind::Closed, !got_bytes, false)),
                Ok(_) => got_bytes = true,
                Err(e) => return Err(fail(FailureKind::Io(e), !got_bytes, false)),
            }
        };

        let mut decoder = Decoder::new(head.framing);
        let mut body_len = 0u64;
        loop {
            let at = self.last_read;
            let input = self.buf.get(self.pos..).unwrap_or_default();
            let fed = decoder.feed(input, &mut |data: &[u8]| {
                body_len += data.len() as u64;
                sink(data, at);
            });
            let (used, done) = match fed {
                Ok(fed) => fed,
                Err(why) => return Err(fail(FailureKind::Protocol(why), false, true)),
            };
            self.pos += used;
            if done {
                break;
            }
            match self.fill().await {
                Ok(0) if decoder.is_close_delimited() => break,
                Ok(0) => return Err(fail(FailureKind::Closed, false, true)),
                Ok(_) => {}
                Err(e) => return Err(fail(FailureKind::Io(e), false, true)),
            }
        }
        // Bytes after the response were never asked for (no pipelining): do not trust the
        // connection with another request.
        let reusable = head.keep_alive && self.pos == self.buf.len();
        self.served += 1;
        Ok(Response {
            status: head.status,
            sent_at,
            body_len,
            reusable,
        })
    }

    /// Reads more bytes after those not yet consumed; `Ok(0)` at end of stream.
    async fn fill(&mut self) -> io::Result<usize> {
        if self.pos >= self.buf.len() {
            self.buf.clear();
            self.pos = 0;
        } else if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        if self.buf.len() > MAX_HEAD + MAX_LINE {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                "unframeable response bytes piling up",
            ));
        }
        if self.buf.capacity() - self.buf.len() < READ_SIZE / 4 {
            self.buf.reserve(READ_SIZE);
        }
        let n = self.stream.read_buf(&mut self.buf).await?;
        self.last_read = Instant::now();
        Ok(n)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(
            split_url("http://127.0.0.1:9000/v1/messages?beta=true").unwrap(),
            (
                "127.0.0.1".into(),
                9000,
                "127.0.0.1:9000".into(),
                "/v1/messages?beta=true".into()
            )
        );
        assert_eq!(
            split_url("http://localhost").unwrap(),
            ("localhost".into(), 80, "localhost".into(), "/".into())
        );
        assert_eq!(
            split_url("http://[::1]:8080/x").unwrap(),
            ("::1".into(), 8080, "[::1]:8080".into(), "/x".into())
        );
        assert_eq!(split_url("http://h:1?q").unwrap().3, "/?q");
        for bad in [
            "https://h/",
            "ftp://h/",
            "http://",
            "http://h:x/",
            "http://h:70000/",
            "http://u@h/",
            "http://h/a b",
            "http://[::1/",
        ] {
            assert!(split_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn request_bytes() {
        let ep = Endpoint {
            addr: "127.0.0.1:1".parse().unwrap(),
            authority: "127.0.0.1:1".into(),
            path: "/v1/messages".into(),
        };
        let req = build_request(&ep, "POST", &["x-a: 1".into()], Some(b"{}")).unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "POST /v1/messages HTTP/1.1\r\nhost: 127.0.0.1:1\r\ncontent-type: application/json\r\ncontent-length: 2\r\nx-a: 1\r\n\r\n{}"
        );
        let req = build_request(&ep, "GET", &["Host: other".into()], None).unwrap();
        assert_eq!(
            String::from_utf8(req).unwrap(),
            "GET /v1/messages HTTP/1.1\r\nHost: other\r\n\r\n"
        );
        assert!(build_request(&ep, "POST", &["content-length: 3".into()], None).is_err());
        assert!(build_request(&ep, "POST", &["nocolon".into()], None).is_err());
        assert!(build_request(&ep, "POST", &["a: b\r\nc: d".into()], None).is_err());
        assert!(build_request(&ep, "P T", &[], None).is_err());
    }

    #[test]
    fn response_heads() {
        let h = parse_head(b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\n\r\nhello")
            .unwrap()
            .unwrap();
        assert_eq!(
            h,
            Head {
                status: 200,
                len: 38,
                framing: Framing::Length(5),
                keep_alive: true
            }
        );
        let h = parse_head(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: gzip, chunked\r\nconnection: close\r\n\r\n",
        )
        .unwrap()
        .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Chunked, false));
        let h = parse_head(b"HTTP/1.1 200 OK\ncontent-type: text/event-stream\n\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Close, false));
        let h = parse_head(b"HTTP/1.0 204 No Content\r\nconnection: keep-alive\r\n\r\n")
            .unwrap()
            .unwrap();
        assert_eq!((h.framing, h.keep_alive), (Framing::Empty, true));
        let h = parse_head(b"HTTP/1.0 200 OK\r\ncontent-length: 0\r\n\r\n")
            .unwrap()
            .unwrap();
        assert!(!h.keep_alive);
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\n"), Ok(None));
        assert_eq!(parse_head(b""), Ok(None));
        for bad in [
            &b"HTTP/2 200 OK\r\n\r\n"[..],
            b"HTTP/1.1 20 OK\r\n\r\n",
            b"HTTP/1.1 2000 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nbad\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    fn decode_in_pieces(framing: Framing, wire: &[u8], piece: usize) -> (Vec<u8>, bool, usize) {
        let mut d = Decoder::new(framing);
        let mut body = Vec::new();
        let mut pending: Vec<u8> = Vec::new();
        let mut total_used = 0;
        // Fed once before any byte, as `exchange` does right after the head.
        let pieces = std::iter::once(&[][..]).chain(wire.chunks(piece.max(1)));
        for p in pieces {
            pending.extend_from_slice(p);
            let (used, done) = d
                .feed(&pending, &mut |data: &[u8]| body.extend_from_slice(data))
                .unwrap();
            pending.drain(..used);
            total_used += used;
            if done {
                return (body, true, total_used);
            }
        }
        (body, false, total_used)
    }

    #[test]
    fn chunked_decoding_survives_any_split() {
        let wire = b"5\r\nhello\r\n1;ext=x\r\n \r\nA\r\n0123456789\r\n0\r\ntrailer: y\r\n\r\nNEXT";
        let body_end = wire.len() - 4;
        for piece in 1..=wire.len() {
            let (body, done, used) = decode_in_pieces(Framing::Chunked, wire, piece);
            assert!(done, "piece {piece}");
            assert_eq!(body, b"hello 0123456789", "piece {piece}");
            assert_eq!(used, body_end, "piece {piece}");
        }
        // Bare LF line ends are tolerated.
        let (body, done, _) = decode_in_pieces(Framing::Chunked, b"2\nab\n0\n\n", 1);
        assert!(done);
        assert_eq!(body, b"ab");
    }

    #[test]
    fn length_and_close_decoding() {
        let (body, done, used) = decode_in_pieces(Framing::Length(3), b"abcdef", 2);
        assert_eq!((body.as_slice(), done, used), (&b"abc"[..], true, 3));
        let (body, done, _) = decode_in_pieces(Framing::Length(0), b"", 1);
        assert!(done && body.is_empty());
        let (body, done, _) = decode_in_pieces(Framing::Close, b"to the end", 3);
        assert_eq!((body.as_slice(), done), (&b"to the end"[..], false));
        let (_, done, _) = decode_in_pieces(Framing::Empty, b"", 1);
        assert!(done);
    }

    #[test]
    fn chunked_errors() {
        let mut d = Decoder::new(Framing::Chunked);
        assert!(d.feed(b"zz\r\n", &mut |_| {}).is_err());
        let mut d = Decoder::new(Framing::Chunked);
        assert!(d.feed(b"2\r\nabX", &mut |_| {}).is_err());
        let mut d = Decoder::new(Framing::Chunked);
        assert!(d.feed(&[b'1'; MAX_LINE + 1], &mut |_| {}).is_err());
        let mut d = Decoder::new(Framing::Chunked);
        assert!(d.feed(b"1234567890abcdef0\r\n", &mut |_| {}).is_err());
    }
}
