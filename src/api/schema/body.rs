//! Request bytes to a JSON value, the way the original does it.
//!
//! FastAPI reads a body only when it is non-empty, decodes it with Python's `json.loads` (via
//! Starlette's `request.json()`), and answers a `JSONDecodeError` with a 422 whose single error is
//! `{"type": "json_invalid", "loc": ["body", <position>], "msg": "JSON decode error", "input": {},
//! "ctx": {"error": <Python's message>}}`, the position counted in characters of the decoded
//! text. An empty body, like a body that is JSON `null`, is a missing required body:
//! `{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}`. Any other failure
//! while reading (bytes that do not decode, nesting past Python's recursion limit) escapes as a
//! generic error, which FastAPI answers `400 {"detail": "There was an error parsing the body"}`.
//!
//! Valid JSON takes the fast path through `serde_json`. Only when `serde_json` refuses a body does
//! a second scanner, a transcription of CPython's `_json.c`, run over it to find the position and
//! message Python would report, or to accept what Python accepts beyond `serde_json` (nesting
//! deeper than 128, lone `\uD800` escapes, which become U+FFFD here).
//!
//! Deliberate difference: Python also accepts `NaN`, `Infinity`, `-Infinity` and numbers that
//! overflow a double; a `serde_json::Value` cannot hold them, so such bodies are refused as
//! [`BodyError::Unparsable`] (the original mostly ends those requests with a 500 when it tries to
//! echo the value in an error).

use std::borrow::Cow;
use std::cell::Cell;

use serde_json::{Map, Number, Value};

/// Why a body could not be turned into a value.
#[derive(Debug, Clone, PartialEq)]
pub enum BodyError {
    /// Answer `422 {"detail": <these>}`.
    Invalid(Vec<Value>),
    /// Answer `400 {"detail": "There was an error parsing the body"}`: the bytes do not decode,
    /// nest too deep, or hold a number JSON cannot carry.
    Unparsable,
}

impl BodyError {
    /// The `detail` of FastAPI's 400 for [`BodyError::Unparsable`].
    pub const UNPARSABLE_DETAIL: &'static str = "There was an error parsing the body";
}

/// Nesting Python's `json` survives under FastAPI: its recursion limit of 1000 less the frames
/// already on the stack when the body is parsed (an estimate; deeper bodies are `Unparsable`).
pub const MAX_DEPTH: usize = 950;

/// FastAPI's error for an absent (empty or `null`) required body.
pub fn missing_body() -> Value {
    let mut m = Map::new();
    m.insert("type".to_owned(), Value::from("missing"));
    m.insert("loc".to_owned(), Value::Array(vec![Value::from("body")]));
    m.insert("msg".to_owned(), Value::from("Field required"));
    m.insert("input".to_owned(), Value::Null);
    Value::Object(m)
}

/// FastAPI's error for a body `json.loads` refuses.
pub fn json_invalid(position: usize, message: &str) -> Value {
    let mut m = Map::new();
    m.insert("type".to_owned(), Value::from("json_invalid"));
    m.insert(
        "loc".to_owned(),
        Value::Array(vec![Value::from("body"), Value::from(position)]),
    );
    m.insert("msg".to_owned(), Value::from("JSON decode error"));
    m.insert("input".to_owned(), Value::Object(Map::new()));
    let mut ctx = Map::new();
    ctx.insert("error".to_owned(), Value::from(message));
    m.insert("ctx".to_owned(), Value::Object(ctx));
    Value::Object(m)
}

/// Whether FastAPI would parse a body with this `Content-Type` as JSON: when there is none, or
/// when its media type (as Python's `email.message` reads it) is `application/json` or
/// `application/*+json`. Other bodies reach validation as raw bytes; see
/// [`read_body_with_content_type`].
pub fn is_json_content_type(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else {
        return true;
    };
    let media = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if media.matches('/').count() != 1 {
        return false;
    }
    match media.split_once('/') {
        Some(("application", sub)) => sub == "json" || sub.ends_with("+json"),
        _ => false,
    }
}

/// Bytes to a value, as FastAPI does for a required JSON body. `Ok(Value::Null)` for a body that
/// is JSON `null`: the endpoint parsers report it as the missing body.
pub fn read_body(bytes: &[u8]) -> Result<Value, BodyError> {
    if bytes.is_empty() {
        return Err(BodyError::Invalid(vec![missing_body()]));
    }
    let text = decode(bytes).ok_or(BodyError::Unparsable)?;
    if let Ok(v) = serde_json::from_str::<Value>(&text) {
        return Ok(v);
    }
    match scan_document(&text) {
        Ok(v) => Ok(v),
        Err(Fail::Syntax(message, byte_pos)) => Err(BodyError::Invalid(vec![json_invalid(
            char_position(&text, byte_pos),
            message,
        )])),
        Err(Fail::TooDeep | Fail::NonFinite) => Err(BodyError::Unparsable),
    }
}

/// [`read_body`] for a request with this `Content-Type`: a non-empty body FastAPI would not
/// parse as JSON is handed to validation as its text, which the endpoint parsers then refuse
/// with `model_attributes_type` carrying that text as `input`, as the original does.
pub fn read_body_with_content_type(
    bytes: &[u8],
    content_type: Option<&str>,
) -> Result<Value, BodyError> {
    if bytes.is_empty() || is_json_content_type(content_type) {
        return read_body(bytes);
    }
    match std::str::from_utf8(bytes) {
        Ok(s) => Ok(Value::String(s.to_owned())),
        Err(_) => Err(BodyError::Unparsable),
    }
}

/// Bytes to a value, with every failure as 422 error objects: [`read_body`], except that an
/// [`BodyError::Unparsable`] body (which the original answers with a 400) is reported as one
/// `json_invalid` error at position 0 whose `ctx.error` is
/// [`BodyError::UNPARSABLE_DETAIL`]. Use [`read_body`] to answer exactly.
pub fn parse_body(bytes: &[u8]) -> Result<Value, Vec<Value>> {
    match read_body(bytes) {
        Ok(v) => Ok(v),
        Err(BodyError::Invalid(errors)) => Err(errors),
        Err(BodyError::Unparsable) => Err(vec![json_invalid(0, BodyError::UNPARSABLE_DETAIL)]),
    }
}

/// `json.detect_encoding` followed by `bytes.decode`: UTF-8 (a BOM is dropped), or UTF-16/32
/// recognised by BOM or by the zero bytes of an ASCII first character. `None` when the bytes do
/// not decode (Python's `surrogatepass` would let encoded lone surrogates through; they are
/// refused here).
fn decode(b: &[u8]) -> Option<Cow<'_, str>> {
    const BOM8: &[u8] = &[0xEF, 0xBB, 0xBF];
    if b.starts_with(&[0, 0, 0xFE, 0xFF]) {
        return decode_utf32(b.get(4..)?, true);
    }
    if b.starts_with(&[0xFF, 0xFE, 0, 0]) {
        return decode_utf32(b.get(4..)?, false);
    }
    if b.starts_with(&[0xFE, 0xFF]) {
        return decode_utf16(b.get(2..)?, true);
    }
    if b.starts_with(&[0xFF, 0xFE]) {
        return decode_utf16(b.get(2..)?, false);
    }
    if let Some(rest) = b.strip_prefix(BOM8) {
        return std::str::from_utf8(rest).ok().map(Cow::Borrowed);
    }
    match *b {
        [0, b1, _, _, ..] => {
            if b1 != 0 {
                decode_utf16(b, true)
            } else {
                decode_utf32(b, true)
            }
        }
        [_, 0, b2, b3, ..] => {
            if b2 != 0 || b3 != 0 {
                decode_utf16(b, false)
            } else {
                decode_utf32(b, false)
            }
        }
        [0, _] => decode_utf16(b, true),
        [_, 0] => decode_utf16(b, false),
        _ => std::str::from_utf8(b).ok().map(Cow::Borrowed),
    }
}

fn decode_utf16(b: &[u8], big_endian: bool) -> Option<Cow<'static, str>> {
    let pairs = b.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return None;
    }
    let units = pairs.map(|c| {
        let pair = [
            c.first().copied().unwrap_or(0),
            c.get(1).copied().unwrap_or(0),
        ];
        if big_endian {
            u16::from_be_bytes(pair)
        } else {
            u16::from_le_bytes(pair)
        }
    });
    char::decode_utf16(units)
        .collect::<Result<String, _>>()
        .ok()
        .map(Cow::Owned)
}

fn decode_utf32(b: &[u8], big_endian: bool) -> Option<Cow<'static, str>> {
    let quads = b.chunks_exact(4);
    if !quads.remainder().is_empty() {
        return None;
    }
    quads
        .map(|c| {
            let mut quad = [0u8; 4];
            quad.copy_from_slice(c);
            let code = if big_endian {
                u32::from_be_bytes(quad)
            } else {
                u32::from_le_bytes(quad)
            };
            char::from_u32(code)
        })
        .collect::<Option<String>>()
        .map(Cow::Owned)
}

/// The character index of a byte offset (Python reports positions in characters).
fn char_position(text: &str, byte_pos: usize) -> usize {
    let b = text.as_bytes();
    b.get(..byte_pos)
        .unwrap_or(b)
        .iter()
        .filter(|&&c| (c & 0xC0) != 0x80)
        .count()
}

// ---------------------------------------------------------------------------------------------
// CPython's `json` scanner (`Modules/_json.c`, 3.11), transcribed for positions and messages.
// ---------------------------------------------------------------------------------------------

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Fail {
    /// A `JSONDecodeError`: message and byte offset.
    Syntax(&'static str, usize),
    /// Nesting past [`MAX_DEPTH`] (`RecursionError` in Python).
    TooDeep,
    /// `NaN`, `Infinity` or an overflowing number.
    NonFinite,
}

const EXPECTING_VALUE: &str = "Expecting value";

fn is_ws(c: u8) -> bool {
    matches!(c, b' ' | b'\t' | b'\n' | b'\r')
}

struct Scanner<'s> {
    s: &'s str,
    b: &'s [u8],
    /// Python parses `NaN` and friends and goes on; so does the scanner (with a `null` in their
    /// place) so that a later syntax error still wins, and refuses the body only at the end.
    non_finite: Cell<bool>,
}

/// An open container while scanning: the items so far, or the members so far and the key whose
/// value is being scanned.
enum Open {
    Array(Vec<Value>),
    Object(Map<String, Value>, String),
}

/// `json.loads(text)`: one value between optional whitespace. CPython recurses into containers
/// (`_parse_object_unicode`, `_parse_array_unicode`); this loop keeps its own stack instead, so
/// deep bodies cannot exhaust a thread's stack, and checks in the same order.
pub(super) fn scan_document(text: &str) -> Result<Value, Fail> {
    let sc = Scanner {
        s: text,
        b: text.as_bytes(),
        non_finite: Cell::new(false),
    };
    let mut stack: Vec<Open> = Vec::new();
    let mut idx = sc.skip_ws(0);
    loop {
        // A value starts at `idx`: scan a scalar, or open a container and go on to its first value.
        let (mut value, mut end) = match sc.at(idx) {
            Some(open @ (b'{' | b'[')) => {
                if stack.len() >= MAX_DEPTH {
                    return Err(Fail::TooDeep);
                }
                let first = sc.skip_ws(idx + 1);
                if open == b'[' {
                    if sc.at(first) == Some(b']') {
                        (Value::Array(Vec::new()), first + 1)
                    } else {
                        stack.push(Open::Array(Vec::new()));
                        idx = first;
                        continue;
                    }
                } else if sc.at(first) == Some(b'}') {
                    (Value::Object(Map::new()), first + 1)
                } else {
                    let (key, next) = sc.scan_key(first)?;
                    stack.push(Open::Object(Map::new(), key));
                    idx = next;
                    continue;
                }
            }
            _ => sc.scan_scalar(idx)?,
        };
        // A value ended at `end`: hand it to the innermost open container, closing as many as
        // end here, until one expects another value (or the document is complete).
        loop {
            let after = sc.skip_ws(end);
            match stack.last_mut() {
                None => {
                    if after != sc.b.len() {
                        return Err(Fail::Syntax("Extra data", after));
                    }
                    if sc.non_finite.get() {
                        return Err(Fail::NonFinite);
                    }
                    return Ok(value);
                }
                Some(Open::Array(items)) => {
                    items.push(value);
                    match sc.at(after) {
                        Some(b']') => {
                            value = Value::Array(std::mem::take(items));
                            stack.pop();
                            end = after + 1;
                        }
                        Some(b',') => {
                            idx = sc.skip_ws(after + 1);
                            break;
                        }
                        _ => return Err(Fail::Syntax("Expecting ',' delimiter", after)),
                    }
                }
                Some(Open::Object(map, key)) => {
                    map.insert(std::mem::take(key), value);
                    match sc.at(after) {
                        Some(b'}') => {
                            value = Value::Object(std::mem::take(map));
                            stack.pop();
                            end = after + 1;
                        }
                        Some(b',') => {
                            let (next_key, next) = sc.scan_key(sc.skip_ws(after + 1))?;
                            *key = next_key;
                            idx = next;
                            break;
                        }
                        _ => return Err(Fail::Syntax("Expecting ',' delimiter", after)),
                    }
                }
            }
        }
    }
}

impl Scanner<'_> {
    fn at(&self, i: usize) -> Option<u8> {
        self.b.get(i).copied()
    }

    fn skip_ws(&self, mut i: usize) -> usize {
        while self.at(i).is_some_and(is_ws) {
            i += 1;
        }
        i
    }

    fn matches(&self, i: usize, word: &[u8]) -> bool {
        self.b.get(i..i + word.len()) == Some(word)
    }

    /// A member name at `idx`, its `:` and the whitespace after it; returns the name and where
    /// the member's value starts.
    fn scan_key(&self, idx: usize) -> Result<(String, usize), Fail> {
        if self.at(idx) != Some(b'"') {
            return Err(Fail::Syntax(
                "Expecting property name enclosed in double quotes",
                idx,
            ));
        }
        let (key, next) = self.scan_string(idx + 1)?;
        let colon = self.skip_ws(next);
        if self.at(colon) != Some(b':') {
            return Err(Fail::Syntax("Expecting ':' delimiter", colon));
        }
        Ok((key, self.skip_ws(colon + 1)))
    }

    /// `scan_once_unicode` for anything but a container.
    fn scan_scalar(&self, idx: usize) -> Result<(Value, usize), Fail> {
        let Some(c) = self.at(idx) else {
            return Err(Fail::Syntax(EXPECTING_VALUE, idx));
        };
        match c {
            b'"' => {
                let (s, end) = self.scan_string(idx + 1)?;
                return Ok((Value::String(s), end));
            }
            b'n' if self.matches(idx, b"null") => return Ok((Value::Null, idx + 4)),
            b't' if self.matches(idx, b"true") => return Ok((Value::Bool(true), idx + 4)),
            b'f' if self.matches(idx, b"false") => return Ok((Value::Bool(false), idx + 5)),
            b'N' if self.matches(idx, b"NaN") => return Ok(self.non_finite(idx + 3)),
            b'I' if self.matches(idx, b"Infinity") => return Ok(self.non_finite(idx + 8)),
            b'-' if self.matches(idx, b"-Infinity") => return Ok(self.non_finite(idx + 9)),
            _ => {}
        }
        self.scan_number(idx)
    }

    /// `_match_number_unicode`.
    fn scan_number(&self, start: usize) -> Result<(Value, usize), Fail> {
        let digit = |i: usize| self.at(i).is_some_and(|c| c.is_ascii_digit());
        let len = self.b.len();
        let mut idx = start;
        if self.at(idx) == Some(b'-') {
            idx += 1;
            if idx >= len {
                return Err(Fail::Syntax(EXPECTING_VALUE, start));
            }
        }
        match self.at(idx) {
            Some(b'1'..=b'9') => {
                idx += 1;
                while digit(idx) {
                    idx += 1;
                }
            }
            Some(b'0') => idx += 1,
            _ => return Err(Fail::Syntax(EXPECTING_VALUE, start)),
        }
        let mut is_float = false;
        if idx + 1 < len && self.at(idx) == Some(b'.') && digit(idx + 1) {
            is_float = true;
            idx += 2;
            while digit(idx) {
                idx += 1;
            }
        }
        if idx + 1 < len && matches!(self.at(idx), Some(b'e' | b'E')) {
            let e_start = idx;
            idx += 1;
            if idx + 1 < len && matches!(self.at(idx), Some(b'-' | b'+')) {
                idx += 1;
            }
            while digit(idx) {
                idx += 1;
            }
            if digit(idx - 1) {
                is_float = true;
            } else {
                idx = e_start;
            }
        }
        let text = self.s.get(start..idx).unwrap_or("0");
        let number = if is_float {
            text.parse::<f64>().ok().and_then(Number::from_f64)
        } else if let Ok(i) = text.parse::<i64>() {
            Some(Number::from(i))
        } else if let Ok(u) = text.parse::<u64>() {
            Some(Number::from(u))
        } else {
            // Python keeps big integers exact; serde_json (without arbitrary precision) makes
            // them doubles, and so does this scanner.
            text.parse::<f64>().ok().and_then(Number::from_f64)
        };
        match number {
            Some(n) => Ok((Value::Number(n), idx)),
            None => Ok(self.non_finite(idx)),
        }
    }

    fn non_finite(&self, end: usize) -> (Value, usize) {
        self.non_finite.set(true);
        (Value::Null, end)
    }

    /// `scanstring_unicode`: the string whose opening quote is at `end - 1`; returns the text and
    /// the index after the closing quote.
    fn scan_string(&self, mut end: usize) -> Result<(String, usize), Fail> {
        const UNTERMINATED: &str = "Unterminated string starting at";
        const BAD_U: &str = "Invalid \\uXXXX escape";
        let begin = end - 1;
        let len = self.b.len();
        let mut out = String::new();
        loop {
            let mut next = end;
            let mut c = 0u8;
            while let Some(d) = self.at(next) {
                c = d;
                if d == b'"' || d == b'\\' {
                    break;
                }
                if d <= 0x1f {
                    return Err(Fail::Syntax("Invalid control character at", next));
                }
                next += 1;
            }
            if next >= len || (c != b'"' && c != b'\\') {
                return Err(Fail::Syntax(UNTERMINATED, begin));
            }
            out.push_str(self.s.get(end..next).unwrap_or(""));
            next += 1;
            if c == b'"' {
                return Ok((out, next));
            }
            let Some(esc) = self.at(next) else {
                return Err(Fail::Syntax(UNTERMINATED, begin));
            };
            if esc != b'u' {
                end = next + 1;
                let ch = match esc {
                    b'"' => '"',
                    b'\\' => '\\',
                    b'/' => '/',
                    b'b' => '\u{8}',
                    b'f' => '\u{c}',
                    b'n' => '\n',
                    b'r' => '\r',
                    b't' => '\t',
                    _ => return Err(Fail::Syntax("Invalid \\escape", end - 2)),
                };
                out.push(ch);
                continue;
            }
            next += 1;
            end = next + 4;
            if end >= len {
                return Err(Fail::Syntax(BAD_U, next - 1));
            }
            let mut code = self.hex4(next).ok_or(Fail::Syntax(BAD_U, end - 5))?;
            next = end;
            if (0xD800..=0xDBFF).contains(&code)
                && end + 6 < len
                && self.at(next) == Some(b'\\')
                && self.at(next + 1) == Some(b'u')
            {
                let low = self
                    .hex4(next + 2)
                    .ok_or(Fail::Syntax(BAD_U, end + 6 - 5))?;
                if (0xDC00..=0xDFFF).contains(&low) {
                    code = 0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00);
                    end += 6;
                }
            }
            out.push(char::from_u32(code).unwrap_or('\u{FFFD}'));
        }
    }

    fn hex4(&self, i: usize) -> Option<u32> {
        let digits = self.s.get(i..i + 4)?;
        if !digits.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        u32::from_str_radix(digits, 16).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn err(bytes: &[u8]) -> Value {
        match parse_body(bytes) {
            Err(mut e) if e.len() == 1 => e.remove(0),
            other => Value::String(format!("unexpected {other:?}")),
        }
    }

    fn at(bytes: &[u8]) -> (i64, String) {
        let e = err(bytes);
        (
            e["loc"][1].as_i64().unwrap_or(-1),
            e["ctx"]["error"].as_str().unwrap_or("").to_owned(),
        )
    }

    #[test]
    fn empty_body_is_missing() {
        assert_eq!(
            err(b""),
            json!({"type": "missing", "loc": ["body"], "msg": "Field required", "input": null})
        );
    }

    #[test]
    fn malformed_json_is_fastapis_json_invalid() {
        assert_eq!(
            err(b"{\"a\": }"),
            json!({"type": "json_invalid", "loc": ["body", 6], "msg": "JSON decode error",
                   "input": {}, "ctx": {"error": "Expecting value"}})
        );
    }

    #[test]
    fn python_messages_and_positions() {
        let cases: &[(&[u8], i64, &str)] = &[
            (b"   ", 3, "Expecting value"),
            (b"abc", 0, "Expecting value"),
            (b"{", 1, "Expecting property name enclosed in double quotes"),
            (b"[", 1, "Expecting value"),
            (
                b"{\"a\":1,}",
                7,
                "Expecting property name enclosed in double quotes",
            ),
            (
                b"{'a': 1}",
                1,
                "Expecting property name enclosed in double quotes",
            ),
            (b"{\"a\" 1}", 5, "Expecting ':' delimiter"),
            (b"{\"a\":1 \"b\":2}", 7, "Expecting ',' delimiter"),
            (b"[1 2]", 3, "Expecting ',' delimiter"),
            (b"[1,]", 3, "Expecting value"),
            (b"{\"a\":1} x", 8, "Extra data"),
            (b"01", 1, "Extra data"),
            (b"1.", 1, "Extra data"),
            (b"-", 0, "Expecting value"),
            (b"\"abc", 0, "Unterminated string starting at"),
            (b"[\"a\\", 1, "Unterminated string starting at"),
            (b"\"a\nb\"", 2, "Invalid control character at"),
            (b"\"\\x\"", 1, "Invalid \\escape"),
            (b"\"\\u12\"", 2, "Invalid \\uXXXX escape"),
            (b"\"\\u12zz\"", 2, "Invalid \\uXXXX escape"),
            (b"\"\\ud800\\u12zz\"", 8, "Invalid \\uXXXX escape"),
            ("{\"é\": x}".as_bytes(), 6, "Expecting value"),
            (b"nul", 0, "Expecting value"),
            (b"tru", 0, "Expecting value"),
        ];
        for (body, pos, msg) in cases {
            assert_eq!(
                at(body),
                (*pos, (*msg).to_owned()),
                "{}",
                String::from_utf8_lossy(body)
            );
        }
    }

    #[test]
    fn what_python_accepts_beyond_serde() {
        let deep = format!("{}{}", "[".repeat(300), "]".repeat(300));
        assert!(parse_body(deep.as_bytes()).is_ok());
        assert_eq!(parse_body(b"[\"\\ud800x\"]"), Ok(json!(["\u{FFFD}x"])));
        assert_eq!(parse_body(b"\"\\ud83d\\ude00\""), Ok(json!("\u{1F600}")));
        assert_eq!(parse_body(b"\xEF\xBB\xBF{\"a\": 1}"), Ok(json!({"a": 1})));
        let utf16: Vec<u8> = "{\"a\": \"é\"}"
            .encode_utf16()
            .flat_map(u16::to_le_bytes)
            .collect();
        assert_eq!(parse_body(&utf16), Ok(json!({"a": "é"})));
    }

    #[test]
    fn unparsable_bodies() {
        let too_deep = "[".repeat(MAX_DEPTH + 1);
        assert_eq!(read_body(too_deep.as_bytes()), Err(BodyError::Unparsable));
        assert_eq!(read_body(b"\xff\xfe\xfd"), Err(BodyError::Unparsable));
        assert_eq!(read_body(b"{\"a\": NaN}"), Err(BodyError::Unparsable));
        assert_eq!(
            at(b"{\"a\": NaN"),
            (9, "Expecting ',' delimiter".to_owned())
        );
        assert_eq!(read_body(b"[1e400]"), Err(BodyError::Unparsable));
        assert_eq!(read_body(b"null"), Ok(Value::Null));
    }

    #[test]
    fn content_types() {
        assert!(is_json_content_type(None));
        assert!(is_json_content_type(Some("application/json")));
        assert!(is_json_content_type(Some(
            "Application/JSON; charset=utf-8"
        )));
        assert!(is_json_content_type(Some("application/vnd.api+json")));
        assert!(!is_json_content_type(Some("text/plain")));
        assert!(!is_json_content_type(Some(
            "application/x-www-form-urlencoded"
        )));
        assert!(!is_json_content_type(Some("json")));
        assert_eq!(
            read_body_with_content_type(b"{}", Some("text/plain")),
            Ok(json!("{}"))
        );
    }
}
