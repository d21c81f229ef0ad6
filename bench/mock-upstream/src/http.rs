//! Just enough HTTP/1.1 for a load test: request heads with `Content-Length` bodies, keep-alive
//! and pipelining, `Expect: 100-continue`; responses with `Content-Length` or chunked bodies.
//!
//! The parser reads only what the mock uses (method, path, version, `Content-Length`,
//! `Connection`, `Expect`, `Transfer-Encoding`) and rejects anything it cannot frame safely.
//! Everything is done on the byte buffer the connection reads into, without allocating.

use crate::provider::{push_u64, Endpoint};

/// Largest request head accepted (431 beyond).
pub const MAX_HEAD: usize = 64 * 1024;
/// Largest request body accepted (413 beyond): room for 100k-token prompts with margin.
pub const MAX_BODY: usize = 64 * 1024 * 1024;
/// Most header lines accepted.
const MAX_HEADERS: usize = 128;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Get,
    Post,
    Other,
}

/// What the request path names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Health,
    Api(Endpoint),
    Unknown,
}

/// A parsed request head.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Head {
    pub method: Method,
    pub target: Target,
    /// Bytes from the start of the buffer to the first body byte (leading blank lines included).
    pub head_len: usize,
    pub content_length: usize,
    /// The connection stays open after the response.
    pub keep_alive: bool,
    /// The client speaks HTTP/1.0: no chunked responses, keep-alive only when asked for.
    pub http10: bool,
    /// `Expect: 100-continue`: the client waits for an interim response before the body.
    pub expect_continue: bool,
}

/// Why a request head was refused; every one of these closes the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HeadError {
    /// 400: not valid HTTP/1.x.
    Malformed(&'static str),
    /// 431: the head is larger than [`MAX_HEAD`] or has too many lines.
    HeadTooLarge,
    /// 413: `Content-Length` is larger than [`MAX_BODY`].
    BodyTooLarge,
    /// 501: a request `Transfer-Encoding` (chunked request bodies are not implemented).
    TransferEncoding,
}

impl HeadError {
    pub fn status(self) -> u16 {
        match self {
            HeadError::Malformed(_) => 400,
            HeadError::HeadTooLarge => 431,
            HeadError::BodyTooLarge => 413,
            HeadError::TransferEncoding => 501,
        }
    }

    pub fn message(self) -> &'static str {
        match self {
            HeadError::Malformed(why) => why,
            HeadError::HeadTooLarge => "request head too large",
            HeadError::BodyTooLarge => "request body too large",
            HeadError::TransferEncoding => {
                "request Transfer-Encoding is not supported; send Content-Length"
            }
        }
    }
}

/// Parses the request head at the start of `buf`. `Ok(None)`: the head is not complete yet.
pub fn parse_head(buf: &[u8]) -> Result<Option<Head>, HeadError> {
    // RFC 9112 §2.2: ignore blank lines before the request line.
    let skip = buf
        .iter()
        .position(|&b| b != b'\r' && b != b'\n')
        .unwrap_or(buf.len());
    let Some(end) = head_end(&buf[skip..]) else {
        return if buf.len() > MAX_HEAD {
            Err(HeadError::HeadTooLarge)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(HeadError::HeadTooLarge);
    }
    let mut lines = buf[skip..skip + end]
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));

    let request_line = lines.next().unwrap_or_default();
    let mut parts = request_line.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(version), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(HeadError::Malformed("bad request line"));
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err(HeadError::Malformed("bad method"));
    }
    let http10 = match version {
        b"HTTP/1.1" => false,
        b"HTTP/1.0" => true,
        _ => return Err(HeadError::Malformed("unsupported HTTP version")),
    };
    let target = route(target)?;

    let mut content_length: Option<usize> = None;
    let (mut close, mut keep_alive, mut expect_continue) = (false, false, false);
    let mut count = 0;
    for line in lines {
        if line.is_empty() {
            break; // the blank line that ends the head
        }
        count += 1;
        if count > MAX_HEADERS {
            return Err(HeadError::HeadTooLarge);
        }
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return Err(HeadError::Malformed("header line without a colon"));
        };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.is_empty() || !name.iter().all(|&b| is_tchar(b)) {
            // Also catches obsolete line folding (a line starting with white space).
            return Err(HeadError::Malformed("bad header name"));
        }
        if name.eq_ignore_ascii_case(b"content-length") {
            let n = parse_length(value)?;
            if content_length.is_some_and(|old| old != n) {
                return Err(HeadError::Malformed("conflicting Content-Length headers"));
            }
            content_length = Some(n);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return Err(HeadError::TransferEncoding);
        } else if name.eq_ignore_ascii_case(b"connection") {
            for token in value.split(|&b| b == b',').map(trim) {
                close |= token.eq_ignore_ascii_case(b"close");
                keep_alive |= token.eq_ignore_ascii_case(b"keep-alive");
            }
        } else if name.eq_ignore_ascii_case(b"expect") {
            expect_continue = value.eq_ignore_ascii_case(b"100-continue");
        }
    }
    let content_length = content_length.unwrap_or(0);
    if content_length > MAX_BODY {
        return Err(HeadError::BodyTooLarge);
    }
    Ok(Some(Head {
        method: match method {
            b"GET" => Method::Get,
            b"POST" => Method::Post,
            _ => Method::Other,
        },
        target,
        head_len: skip + end,
        content_length,
        keep_alive: if http10 { keep_alive && !close } else { !close },
        http10,
        expect_continue: expect_continue && !http10,
    }))
}

/// Length of the head (blank line included) at the start of `buf`, if it is all there.
/// Lines end with CRLF; a bare LF is tolerated.
fn head_end(buf: &[u8]) -> Option<usize> {
    let mut line_start = 0;
    loop {
        let nl = line_start + buf.get(line_start..)?.iter().position(|&b| b == b'\n')?;
        let line = &buf[line_start..nl];
        if line.is_empty() || line == b"\r" {
            return Some(nl + 1);
        }
        line_start = nl + 1;
    }
}

/// Maps the request target (origin form, or absolute form from a proxy) to a [`Target`].
fn route(target: &[u8]) -> Result<Target, HeadError> {
    let path = if let Some(rest) = target
        .strip_prefix(b"http://")
        .or_else(|| target.strip_prefix(b"https://"))
    {
        rest.iter()
            .position(|&b| b == b'/')
            .map_or(&b"/"[..], |p| &rest[p..])
    } else if target.first() == Some(&b'/') {
        target
    } else {
        return Err(HeadError::Malformed("bad request target"));
    };
    let path = path
        .iter()
        .position(|&b| b == b'?')
        .map_or(path, |q| &path[..q]);
    Ok(if path == b"/health" {
        Target::Health
    } else if let Some(endpoint) = Endpoint::from_path(path) {
        Target::Api(endpoint)
    } else {
        Target::Unknown
    })
}

fn parse_length(value: &[u8]) -> Result<usize, HeadError> {
    if value.is_empty() || !value.iter().all(u8::is_ascii_digit) {
        return Err(HeadError::Malformed("bad Content-Length"));
    }
    value.iter().try_fold(0usize, |n, &d| {
        n.checked_mul(10)
            .and_then(|n| n.checked_add(usize::from(d - b'0')))
            .ok_or(HeadError::BodyTooLarge)
    })
}

fn trim(value: &[u8]) -> &[u8] {
    let start = value
        .iter()
        .position(|&b| b != b' ' && b != b'\t')
        .unwrap_or(value.len());
    let end = value
        .iter()
        .rposition(|&b| b != b' ' && b != b'\t')
        .map_or(start, |p| p + 1);
    value.get(start..end).unwrap_or_default()
}

/// RFC 9110 token characters (method and header names).
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What the response says about the connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Connection {
    /// HTTP/1.1 default: nothing to say, the connection stays open.
    Persistent,
    /// HTTP/1.0 client that asked for keep-alive: say yes.
    KeepAlive,
    /// The server closes after this response.
    Close,
}

impl Connection {
    pub fn for_head(head: &Head) -> Self {
        match (head.keep_alive, head.http10) {
            (false, _) => Connection::Close,
            (true, false) => Connection::Persistent,
            (true, true) => Connection::KeepAlive,
        }
    }

    fn push(self, out: &mut Vec<u8>) {
        match self {
            Connection::Persistent => {}
            Connection::KeepAlive => out.extend_from_slice(b"connection: keep-alive\r\n"),
            Connection::Close => out.extend_from_slice(b"connection: close\r\n"),
        }
    }
}

/// The interim response to `Expect: 100-continue`.
pub const CONTINUE: &[u8] = b"HTTP/1.1 100 Continue\r\n\r\n";

fn push_status(out: &mut Vec<u8>, status: u16) {
    out.extend_from_slice(match status {
        200 => b"HTTP/1.1 200 OK\r\n",
        400 => b"HTTP/1.1 400 Bad Request\r\n",
        404 => b"HTTP/1.1 404 Not Found\r\n",
        405 => b"HTTP/1.1 405 Method Not Allowed\r\n",
        413 => b"HTTP/1.1 413 Payload Too Large\r\n",
        431 => b"HTTP/1.1 431 Request Header Fields Too Large\r\n",
        501 => b"HTTP/1.1 501 Not Implemented\r\n",
        _ => b"HTTP/1.1 500 Internal Server Error\r\n",
    });
}

/// Head of a response whose body follows whole, with `Content-Length`.
pub fn push_whole_head(
    out: &mut Vec<u8>,
    status: u16,
    content_type: &[u8],
    content_length: usize,
    connection: Connection,
    allow: Option<&[u8]>,
) {
    push_status(out, status);
    out.extend_from_slice(b"content-type: ");
    out.extend_from_slice(content_type);
    out.extend_from_slice(b"\r\ncontent-length: ");
    push_u64(out, content_length as u64);
    out.extend_from_slice(b"\r\n");
    if let Some(allow) = allow {
        out.extend_from_slice(b"allow: ");
        out.extend_from_slice(allow);
        out.extend_from_slice(b"\r\n");
    }
    connection.push(out);
    out.extend_from_slice(b"\r\n");
}

/// Head of an SSE response: chunked, or (HTTP/1.0) delimited by closing the connection.
pub fn push_stream_head(out: &mut Vec<u8>, chunked: bool, connection: Connection) {
    push_status(out, 200);
    out.extend_from_slice(b"content-type: text/event-stream\r\ncache-control: no-cache\r\n");
    if chunked {
        out.extend_from_slice(b"transfer-encoding: chunked\r\n");
    }
    connection.push(out);
    out.extend_from_slice(b"\r\n");
}

/// Appends a whole response: head and body.
pub fn push_whole(
    out: &mut Vec<u8>,
    status: u16,
    body: &[u8],
    connection: Connection,
    allow: Option<&[u8]>,
) {
    push_whole_head(
        out,
        status,
        b"application/json",
        body.len(),
        connection,
        allow,
    );
    out.extend_from_slice(body);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn head(raw: &str) -> Result<Option<Head>, HeadError> {
        parse_head(raw.as_bytes())
    }

    #[test]
    fn parses_a_post_with_body_length() {
        let raw = "POST /v1/messages?beta=true HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\n\r\n{\"a\":1}";
        let h = head(raw);
        assert_eq!(
            h,
            Ok(Some(Head {
                method: Method::Post,
                target: Target::Api(Endpoint::Messages),
                head_len: raw.len() - 7,
                content_length: 12,
                keep_alive: true,
                http10: false,
                expect_continue: false,
            }))
        );
    }

    #[test]
    fn waits_for_the_whole_head() {
        assert_eq!(head("GET /health HTTP/1.1\r\nHost: x\r\n"), Ok(None));
        assert_eq!(head(""), Ok(None));
        assert_eq!(head("\r\n"), Ok(None));
    }

    #[test]
    fn connection_rules() {
        let h = head("GET /health HTTP/1.1\r\nConnection: Close\r\n\r\n");
        assert!(matches!(
            h,
            Ok(Some(Head {
                keep_alive: false,
                ..
            }))
        ));
        let h = head("GET /health HTTP/1.0\r\n\r\n");
        assert!(matches!(
            h,
            Ok(Some(Head {
                keep_alive: false,
                http10: true,
                ..
            }))
        ));
        let h = head("GET /health HTTP/1.0\r\nconnection: keep-alive\r\n\r\n");
        assert!(matches!(
            h,
            Ok(Some(Head {
                keep_alive: true,
                http10: true,
                ..
            }))
        ));
        let raw = "\r\nGET http://h:1/health HTTP/1.1\nExpect: 100-continue\n\n";
        let h = head(raw);
        assert!(matches!(
            h,
            Ok(Some(Head { target: Target::Health, expect_continue: true, head_len, .. }))
                if head_len == raw.len()
        ));
    }

    #[test]
    fn rejects_what_it_cannot_frame() {
        let bad = [
            "GARBAGE\r\n\r\n",
            "GET /health HTTP/2.0\r\n\r\n",
            "GET health HTTP/1.1\r\n\r\n",
            "GET  /health HTTP/1.1\r\n\r\n",
            "GET /health HTTP/1.1\r\nNoColon\r\n\r\n",
            "GET /health HTTP/1.1\r\n folded: x\r\n\r\n",
            "POST /v1/messages HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
            "POST /v1/messages HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        ];
        for raw in bad {
            assert!(matches!(head(raw), Err(HeadError::Malformed(_))), "{raw:?}");
        }
        assert_eq!(
            head("POST /v1/messages HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n"),
            Err(HeadError::TransferEncoding)
        );
        assert_eq!(
            head("POST /v1/messages HTTP/1.1\r\nContent-Length: 99999999999999999999999\r\n\r\n"),
            Err(HeadError::BodyTooLarge)
        );
        let huge = format!("GET /health HTTP/1.1\r\nx: {}", "a".repeat(MAX_HEAD));
        assert_eq!(head(&huge), Err(HeadError::HeadTooLarge));
    }
}
