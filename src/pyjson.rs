//! JSON exactly as Python's `json.dumps(obj)` writes it with its defaults.
//!
//! Several wire formats of the original are produced by `json.dumps` rather than by a web
//! framework: the v4 SSE `data:` lines, the chat NDJSON lines and the mock model's echo. Clients
//! and byte-exact tests see its particular form: `", "` between items, `": "` after keys, and
//! every non-ASCII character escaped as `\uXXXX` (surrogate pairs beyond the BMP).
//! Floats follow Python's `repr`: `1.0`, not `1`.

use serde_json::Value;

/// `json.dumps(value)`.
pub fn dumps(value: &Value) -> String {
    let mut out = String::with_capacity(64);
    write_value(&mut out, value);
    out
}

/// Append `json.dumps(value)` to `out`.
pub fn write_value(out: &mut String, value: &Value) {
    match value {
        Value::Null => out.push_str("null"),
        Value::Bool(true) => out.push_str("true"),
        Value::Bool(false) => out.push_str("false"),
        Value::Number(n) => {
            if let Some(i) = n.as_i64() {
                out.push_str(&i.to_string());
            } else if let Some(u) = n.as_u64() {
                out.push_str(&u.to_string());
            } else if let Some(f) = n.as_f64() {
                write_float(out, f);
            }
        }
        Value::String(s) => write_str(out, s),
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_value(out, item);
            }
            out.push(']');
        }
        Value::Object(map) => {
            out.push('{');
            for (i, (k, v)) in map.iter().enumerate() {
                if i > 0 {
                    out.push_str(", ");
                }
                write_str(out, k);
                out.push_str(": ");
                write_value(out, v);
            }
            out.push('}');
        }
    }
}

fn write_float(out: &mut String, f: f64) {
    if f.is_nan() {
        out.push_str("NaN");
    } else if f.is_infinite() {
        out.push_str(if f > 0.0 { "Infinity" } else { "-Infinity" });
    } else if f == f.trunc() && f.abs() < 1e16 {
        out.push_str(&format!("{f:.1}"));
    } else {
        // Rust's shortest round-trip form matches Python's repr for ordinary magnitudes.
        out.push_str(&format!("{f}"));
    }
}

/// A JSON string literal with `ensure_ascii=True`.
pub fn write_str(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\u{08}' => out.push_str("\\b"),
            '\u{0c}' => out.push_str("\\f"),
            c if (c as u32) < 0x20 || (c as u32) > 0x7e => {
                let mut buf = [0u16; 2];
                for unit in c.encode_utf16(&mut buf) {
                    out.push_str(&format!("\\u{unit:04x}"));
                }
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn matches_python_json_dumps() {
        // Expected strings are what CPython 3.11 prints for the same objects.
        assert_eq!(
            dumps(&json!({"choices": [{"delta": {"content": "def f():\n"}, "index": 0}]})),
            r#"{"choices": [{"delta": {"content": "def f():\n"}, "index": 0}]}"#
        );
        assert_eq!(dumps(&json!(null)), "null");
        assert_eq!(
            dumps(&json!({"a": 1.0, "b": 0.5, "c": -3})),
            r#"{"a": 1.0, "b": 0.5, "c": -3}"#
        );
        assert_eq!(dumps(&json!("é😀\u{7f}")), r#""\u00e9\ud83d\ude00\u007f""#);
        assert_eq!(dumps(&json!("tab\there\"q\"\\")), r#""tab\there\"q\"\\""#);
        assert_eq!(dumps(&json!([])), "[]");
        assert_eq!(dumps(&json!({})), "{}");
    }
}
