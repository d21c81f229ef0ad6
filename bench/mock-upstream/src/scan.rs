//! Cheap look-ups in a request body, without parsing the JSON.
//!
//! The mock only needs two facts from a request: does it ask for `"stream": true`, and which
//! `"model"` does it name (echoed back so the gateway sees its own model id). Prompts can be
//! hundreds of kilobytes, so instead of a JSON parser this module jumps from one `"` to the next
//! (eight bytes at a time) and looks at what follows each quote. A key is recognised by the `:`
//! after its closing quote; escaped quotes inside strings (`\"`) never match because the byte after
//! the opening quote would be a backslash. The first matching key wins, which is the top-level one
//! for every request a gateway sends.

use std::ops::Range;

/// Longest model name echoed back; anything longer falls back to the endpoint's default.
const MAX_MODEL_LEN: usize = 256;

/// What [`scan`] found in a request body.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Scan {
    /// The body has `"stream": true`.
    pub stream: bool,
    /// Byte range of the `"model"` string value, escapes left as they are (still valid JSON
    /// string content, so it can be copied between quotes verbatim).
    pub model: Option<Range<usize>>,
}

/// One pass over `body` that finds the `stream` flag and the `model` value.
pub fn scan(body: &[u8]) -> Scan {
    let mut found = Scan::default();
    let (mut seen_stream, mut seen_model) = (false, false);
    let mut from = 0;
    while let Some(q) = find_quote(body, from) {
        let rest = body.get(q + 1..).unwrap_or_default();
        if !seen_stream && rest.starts_with(b"stream\"") {
            if let Some(v) = value_start(body, q + 1 + b"stream\"".len()) {
                seen_stream = true;
                found.stream = body.get(v..).is_some_and(|b| b.starts_with(b"true"));
            }
        } else if !seen_model && rest.starts_with(b"model\"") {
            if let Some(v) = value_start(body, q + 1 + b"model\"".len()) {
                seen_model = true;
                found.model = string_value(body, v);
            }
        }
        if seen_stream && seen_model {
            break;
        }
        from = q + 1;
    }
    found
}

/// The body is, at a glance, a JSON object: `{ … }` give or take surrounding white space.
pub fn looks_like_object(body: &[u8]) -> bool {
    let trimmed = body.trim_ascii();
    trimmed.first() == Some(&b'{') && trimmed.last() == Some(&b'}')
}

/// After a key's closing quote at `i - 1`: skip white space, a `:`, white space; return where the
/// value starts. `None` when there is no `:` (the quoted text was a value, not a key).
fn value_start(body: &[u8], i: usize) -> Option<usize> {
    let i = skip_ws(body, i);
    if body.get(i) != Some(&b':') {
        return None;
    }
    Some(skip_ws(body, i + 1))
}

fn skip_ws(body: &[u8], mut i: usize) -> usize {
    while matches!(body.get(i), Some(b' ' | b'\t' | b'\r' | b'\n')) {
        i += 1;
    }
    i
}

/// The content of the JSON string starting with the quote at `start`, if it is short and sane.
fn string_value(body: &[u8], start: usize) -> Option<Range<usize>> {
    if body.get(start) != Some(&b'"') {
        return None;
    }
    let mut j = start + 1;
    loop {
        match *body.get(j)? {
            b'"' => return Some(start + 1..j),
            b'\\' => j += 2,
            c if c < 0x20 => return None,
            _ => j += 1,
        }
        if j - start > MAX_MODEL_LEN {
            return None;
        }
    }
}

/// Position of the first `"` at or after `from`. Tests eight bytes per step (SWAR zero-byte
/// trick), which keeps large prompts cheap without a SIMD dependency.
fn find_quote(hay: &[u8], from: usize) -> Option<usize> {
    const LO: u64 = 0x0101_0101_0101_0101;
    const HI: u64 = 0x8080_8080_8080_8080;
    const QUOTES: u64 = LO * b'"' as u64;
    let tail = hay.get(from..)?;
    let mut words = tail.chunks_exact(8);
    let mut offset = from;
    for word in words.by_ref() {
        let mut bytes = [0u8; 8];
        bytes.copy_from_slice(word);
        let x = u64::from_le_bytes(bytes) ^ QUOTES;
        // Non-zero exactly when some byte of `x` is zero, i.e. some byte of `word` is a quote.
        if x.wrapping_sub(LO) & !x & HI != 0 {
            return word.iter().position(|&b| b == b'"').map(|p| offset + p);
        }
        offset += 8;
    }
    words
        .remainder()
        .iter()
        .position(|&b| b == b'"')
        .map(|p| offset + p)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn model(body: &str) -> Option<String> {
        let s = scan(body.as_bytes());
        s.model
            .and_then(|r| body.get(r))
            .map(std::string::ToString::to_string)
    }

    #[test]
    fn finds_stream_true_in_all_spellings() {
        assert!(scan(br#"{"stream":true}"#).stream);
        assert!(scan(b"{\"model\":\"x\",\n  \"stream\" :\ttrue }").stream);
        assert!(!scan(br#"{"stream":false}"#).stream);
        assert!(!scan(br#"{"messages":[]}"#).stream);
        assert!(!scan(br#"{"stream_options":{"include_usage":true}}"#).stream);
        assert!(scan(br#"{"stream_options":{"include_usage":true},"stream":true}"#).stream);
    }

    #[test]
    fn ignores_keys_inside_strings() {
        let body = r#"{"messages":[{"content":"say \"stream\": true and \"model\": \"evil\""}],"model":"good","stream":false}"#;
        assert!(!scan(body.as_bytes()).stream);
        assert_eq!(model(body).as_deref(), Some("good"));
        let body = r#"{"content":"stream","stream":true}"#;
        assert!(scan(body.as_bytes()).stream);
    }

    #[test]
    fn extracts_model_verbatim() {
        assert_eq!(
            model(r#"{"model": "claude-3-5-sonnet-20240620"}"#).as_deref(),
            Some("claude-3-5-sonnet-20240620")
        );
        assert_eq!(model(r#"{"model":"a\"b\\"}"#).as_deref(), Some(r#"a\"b\\"#));
        assert_eq!(model(r#"{"model":""}"#).as_deref(), Some(""));
        assert_eq!(model(r#"{"model":42}"#), None);
        assert_eq!(model(r#"{"model":"unterminated"#), None);
        let long = format!(r#"{{"model":"{}"}}"#, "m".repeat(MAX_MODEL_LEN + 1));
        assert_eq!(model(&long), None);
    }

    #[test]
    fn find_quote_matches_naive_search() {
        let hay = br#"0123456789abcdef"ghijklmnopqrstuvwxyz"0123"#;
        for from in 0..=hay.len() + 1 {
            let naive = hay
                .get(from..)
                .and_then(|t| t.iter().position(|&b| b == b'"'))
                .map(|p| p + from);
            assert_eq!(find_quote(hay, from), naive, "from {from}");
        }
    }

    #[test]
    fn object_shape() {
        assert!(looks_like_object(b" {\"a\":1}\n"));
        assert!(!looks_like_object(b""));
        assert!(!looks_like_object(b"[1]"));
        assert!(!looks_like_object(b"{\"a\":1"));
    }
}
