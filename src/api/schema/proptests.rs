//! Property tests: no input makes a parser panic, and every failure is a non-empty list of
//! well-formed FastAPI error objects. Inputs are arbitrary JSON values, arbitrary bytes, and
//! valid bodies with arbitrary values grafted anywhere into them (which reach the deep fields
//! that fully random values rarely do).

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use serde_json::{json, Map, Number, Value};

use super::body::{parse_body, read_body, scan_document, BodyError};
use super::code::{parse_code_completions, parse_code_generations};
use super::components::parse_completion_request;

const KEYS: &[&str] = &[
    "prompt_version",
    "current_file",
    "file_name",
    "content_above_cursor",
    "content_below_cursor",
    "language_identifier",
    "model_provider",
    "model_name",
    "telemetry",
    "stream",
    "choices_count",
    "context",
    "prompt",
    "prompt_id",
    "project_id",
    "project_path",
    "requests",
    "accepts",
    "errors",
    "experiments",
    "name",
    "variant",
    "type",
    "payload",
    "metadata",
    "source",
    "version",
    "prompt_components",
    "prompt_enhancer",
    "role",
    "content",
];

const STRINGS: &[&str] = &[
    "",
    " ",
    "1",
    " 12 ",
    "+1",
    "1_0",
    "1.0",
    "yes",
    "off",
    "anthropic",
    "vertex-ai",
    "codestral",
    "claude-2.1",
    "code-gecko@002",
    "code_editor_completion",
    "code_editor_generation",
    "code_context",
    "system",
    "user",
    "é",
    "\u{2003}x\u{2003}",
];

fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-5i64..5).prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>().prop_map(|f| Number::from_f64(f).map_or(Value::Null, Value::Number)),
        prop::sample::select(STRINGS).prop_map(Value::from),
        ".{0,12}".prop_map(Value::from),
        (0usize..300).prop_map(|n| Value::from("a".repeat(n))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(5, 96, 8, |inner| {
        let key = prop_oneof![prop::sample::select(KEYS).prop_map(str::to_owned), ".{0,6}"];
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..8).prop_map(Value::Array),
            prop::collection::vec((key, inner), 0..8)
                .prop_map(|kv| Value::Object(kv.into_iter().collect::<Map<_, _>>())),
        ]
    })
}

fn valid_bodies() -> Vec<Value> {
    let cf = json!({"file_name": "main.py", "content_above_cursor": "def f():",
                    "content_below_cursor": "", "language_identifier": "python"});
    vec![
        json!({"prompt_version": 1, "project_path": "g/g", "project_id": 1, "current_file": cf,
               "model_provider": "anthropic", "model_name": "claude-2.1",
               "telemetry": [{"model_engine": "e", "requests": 1, "accepts": 0, "errors": 0,
                              "experiments": [{"name": "n", "variant": 1}]}],
               "stream": false, "choices_count": 1,
               "context": [{"type": "file", "name": "a.py", "content": "x"}], "prompt_id": "p"}),
        json!({"prompt_version": 2, "current_file": cf, "prompt": "p"}),
        json!({"prompt_version": 3, "current_file": cf,
               "prompt": [{"role": "user", "content": "c"}]}),
        json!({"prompt_components": [
            {"type": "code_editor_completion",
             "payload": {"file_name": "a", "content_above_cursor": "", "content_below_cursor": "",
                         "model_provider": "anthropic", "prompt": [{"role": "user", "content": "c"}]},
             "metadata": {"source": "s", "version": "v"}},
            {"type": "code_editor_generation",
             "payload": {"file_name": "a", "content_above_cursor": "", "content_below_cursor": "",
                         "prompt": "p", "prompt_enhancer": {"k": [1]}}},
            {"type": "code_context", "payload": {"type": "t", "name": "n", "content": "c"}}
        ]}),
    ]
}

/// Every JSON pointer inside `v` (the root included).
fn pointers(v: &Value, at: String, out: &mut Vec<String>) {
    match v {
        Value::Object(m) => {
            for (k, x) in m {
                pointers(
                    x,
                    format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                    out,
                );
            }
        }
        Value::Array(a) => {
            for (i, x) in a.iter().enumerate() {
                pointers(x, format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
    out.push(at);
}

/// Equal, except that doubles may differ in the last digit: serde_json's default float parser
/// is not correctly rounded, the scanner's (like Python's) is.
fn same_json(a: Option<&Value>, b: Option<&Value>) -> bool {
    match (a, b) {
        (None, None) => true,
        (Some(Value::Number(x)), Some(Value::Number(y))) if x.is_f64() || y.is_f64() => {
            let (x, y) = (x.as_f64().unwrap_or(0.0), y.as_f64().unwrap_or(0.0));
            // A few units in the last place apart: serde_json's default float parsing is not
            // correctly rounded (the scanner's, like Python's, is), and for subnormals one unit
            // is far more than a relative epsilon.
            x == y || (x.signum() == y.signum() && x.to_bits().abs_diff(y.to_bits()) <= 4)
        }
        (Some(Value::Array(x)), Some(Value::Array(y))) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same_json(Some(x), Some(y)))
        }
        (Some(Value::Object(x)), Some(Value::Object(y))) => {
            x.len() == y.len()
                && x.iter()
                    .zip(y)
                    .all(|((kx, x), (ky, y))| kx == ky && same_json(Some(x), Some(y)))
        }
        (a, b) => a == b,
    }
}

fn check_errors(errors: &[Value]) -> Result<(), TestCaseError> {
    prop_assert!(!errors.is_empty());
    for e in errors {
        let Some(o) = e.as_object() else {
            return Err(TestCaseError::fail(format!("not an object: {e}")));
        };
        prop_assert!(o.get("type").is_some_and(Value::is_string), "{e}");
        prop_assert!(
            o.get("msg")
                .is_some_and(|m| m.as_str().is_some_and(|m| !m.is_empty())),
            "{e}"
        );
        prop_assert!(o.contains_key("input"), "{e}");
        prop_assert!(!o.contains_key("url"), "{e}");
        prop_assert!(o.get("ctx").is_none_or(Value::is_object), "{e}");
        let loc = o.get("loc").and_then(Value::as_array);
        prop_assert!(
            loc.is_some_and(|l| l.first() == Some(&json!("body"))),
            "{e}"
        );
        prop_assert!(
            loc.is_some_and(|l| l.iter().all(|s| s.is_string() || s.is_i64())),
            "{e}"
        );
        let keys: Vec<&str> = o.keys().map(String::as_str).collect();
        let expected: &[&str] = if o.contains_key("ctx") {
            &["type", "loc", "msg", "input", "ctx"]
        } else {
            &["type", "loc", "msg", "input"]
        };
        prop_assert_eq!(keys, expected);
    }
    Ok(())
}

fn check_all_parsers(v: &Value) -> Result<(), TestCaseError> {
    if let Err(e) = parse_code_completions(v) {
        check_errors(&e)?;
    }
    if let Err(e) = parse_code_generations(v) {
        check_errors(&e)?;
    }
    if let Err(e) = parse_completion_request(v) {
        check_errors(&e)?;
    }
    Ok(())
}

proptest! {
    #[test]
    fn arbitrary_values_never_panic(v in json_value()) {
        check_all_parsers(&v)?;
    }

    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        match parse_body(&bytes) {
            Ok(v) => check_all_parsers(&v)?,
            Err(e) => check_errors(&e)?,
        }
    }

    #[test]
    fn json_like_bytes_never_panic(
        parts in prop::collection::vec(
            prop::sample::select(&[
                "{", "}", "[", "]", ",", ":", "\"", "\\", " ", "\n", "a", "1", "0", "-", ".", "e",
                "true", "null", "\\u", "\\ud800", "\\u00e9", "\"k\":", "é", "\u{1}", "NaN",
                "\"prompt_version\":", "\"prompt_components\":",
            ][..]),
            0..40,
        )
    ) {
        let text = parts.concat();
        match parse_body(text.as_bytes()) {
            Ok(v) => check_all_parsers(&v)?,
            Err(e) => check_errors(&e)?,
        }
    }

    #[test]
    fn grafted_bodies_never_panic(
        base in prop::sample::select(valid_bodies()),
        grafts in prop::collection::vec((any::<prop::sample::Index>(), json_value()), 1..4),
    ) {
        let mut body = base;
        for (at, graft) in grafts {
            let mut all = Vec::new();
            pointers(&body, String::new(), &mut all);
            let pointer = at.get(&all).clone();
            if let Some(slot) = body.pointer_mut(&pointer) {
                *slot = graft;
            }
        }
        check_all_parsers(&body)?;
    }

    /// The cold-path scanner agrees with serde_json on everything serde_json accepts.
    #[test]
    fn scanner_agrees_with_serde_json(v in json_value(), pretty in any::<bool>()) {
        let text = if pretty {
            serde_json::to_string_pretty(&v)
        } else {
            serde_json::to_string(&v)
        };
        let Ok(text) = text else {
            return Err(TestCaseError::fail("serialisation failed"));
        };
        let reparsed = serde_json::from_str::<Value>(&text).ok();
        let scanned = scan_document(&text).ok();
        prop_assert!(same_json(scanned.as_ref(), reparsed.as_ref()), "{scanned:?} != {reparsed:?}");
        prop_assert_eq!(read_body(text.as_bytes()).ok(), reparsed);
    }

    /// Whatever serde_json refuses, the scanner refuses too (or accepts only what Python does).
    #[test]
    fn scanner_refuses_what_serde_refuses(
        parts in prop::collection::vec(
            prop::sample::select(&[
                "{", "}", "[", "]", ",", ":", "\"", "\\", " ", "a", "1", "0", "-", ".", "e", "E",
                "+", "true", "nul", "\\u", "\\u00e9", "\"k\":", "\t", "01",
            ][..]),
            0..30,
        )
    ) {
        let text = parts.concat();
        if serde_json::from_str::<Value>(&text).is_err() {
            let scanned = scan_document(&text);
            prop_assert!(scanned.is_err(), "{text:?} -> {scanned:?}");
        }
        if let Err(BodyError::Invalid(e)) = read_body(text.as_bytes()) {
            check_errors(&e)?;
        }
    }
}
