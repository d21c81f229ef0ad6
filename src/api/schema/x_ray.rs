//! `/v1/x-ray/libraries` (spec 3.10, deprecated): the original's `XRayRequest`.
//!
//! ```text
//! {"prompt_components": [exactly one {
//!     "type"?: "x_ray_package_file_prompt" (the default),
//!     "payload": {"prompt": str ≤400 000, "provider": "anthropic", "model": "claude-2.1"},
//!     "metadata"?: {≤10 entries, key ≤100, value ≤255}}]}
//! ```

use serde_json::{Map, Value};

use super::{ChoiceKind, Errors, Len, Loc, Str, ValidationError};

/// The package-file prompt of a validated request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct XRayRequest {
    /// The prompt, already in Anthropic's legacy `Human:`/`Assistant:` form.
    pub prompt: String,
}

const PROVIDER_EXPECTED: &str = "<KindModelProvider.ANTHROPIC: 'anthropic'>";
const MODEL_EXPECTED: &str = "<KindAnthropicModel.CLAUDE_2_1: 'claude-2.1'>";

fn literal(e: &mut Errors, v: &Value, l: &Loc<'_>, accepted: &str, expected: &str) -> Option<()> {
    if v.as_str() == Some(accepted) {
        return Some(());
    }
    e.push(ValidationError::choice(ChoiceKind::Literal, l, v, expected));
    None
}

/// `dict[str(max 100), str(max 255)]`, then the original's validator: at most 10 entries
/// (checked only once every entry is valid, as a pydantic `field_validator` runs after the
/// field's own validation). A key error is at `[..., <key>, "[key]"]`, a value error at
/// `[..., <key>]`.
fn read_metadata(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<()> {
    let map: &Map<String, Value> = e.dict(v, l)?;
    let mut ok = true;
    for (key, value) in map {
        let here = l.key(key);
        ok &= e
            .string(
                &Value::String(key.clone()),
                &here.key("[key]"),
                Str::max(100),
            )
            .is_some();
        ok &= e.string(value, &here, Str::max(255)).is_some();
    }
    if ok && map.len() > 10 {
        e.push(ValidationError::value_error(
            l,
            v,
            "metadata cannot has more than 10 elements",
        ));
        return None;
    }
    ok.then_some(())
}

fn read_component(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<String> {
    let f = e.model(v, l)?;
    let kind = e.defaulted(f, "type", l, (), |e, v, l| {
        literal(
            e,
            v,
            l,
            "x_ray_package_file_prompt",
            "'x_ray_package_file_prompt'",
        )
    });
    let prompt = e.required(f, "payload", l, |e, v, l| {
        let p = e.model(v, l)?;
        let prompt = e.required(p, "prompt", l, |e, v, l| e.string(v, l, Str::max(400_000)));
        let provider = e.required(p, "provider", l, |e, v, l| {
            literal(e, v, l, "anthropic", PROVIDER_EXPECTED)
        });
        let model = e.required(p, "model", l, |e, v, l| {
            literal(e, v, l, "claude-2.1", MODEL_EXPECTED)
        });
        provider?;
        model?;
        prompt
    });
    let metadata = e.optional(f, "metadata", l, None, read_metadata);
    kind?;
    metadata?;
    prompt
}

/// Validate a body as the original's `XRayRequest`.
pub fn parse_x_ray_request(body: &Value) -> Result<XRayRequest, Vec<Value>> {
    let mut e = Errors::new();
    let loc = Loc::root("body");
    let Some(f) = e.model(body, &loc) else {
        return Err(e.into_values());
    };
    let components = e.required(f, "prompt_components", &loc, |e, v, l| {
        e.list(v, l, Len::between(1, 1), read_component)
    });
    match components.and_then(|c| c.into_iter().next()) {
        Some(prompt) if e.is_empty() => Ok(XRayRequest { prompt }),
        _ => Err(e.into_values()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn component(payload: Value) -> Value {
        json!({"prompt_components": [{"type": "x_ray_package_file_prompt", "payload": payload,
            "metadata": {"scannerVersion": "0.0.1"}}]})
    }

    #[test]
    fn a_valid_body_gives_its_prompt() {
        let r = parse_x_ray_request(&component(
            json!({"prompt": "\n\nHuman: libs?\n\nAssistant:",
            "provider": "anthropic", "model": "claude-2.1"}),
        ))
        .unwrap();
        assert_eq!(r.prompt, "\n\nHuman: libs?\n\nAssistant:");
    }

    #[test]
    fn every_failing_field_is_reported() {
        let err = parse_x_ray_request(&json!({"prompt_components": [{"type": "other",
            "payload": {"provider": "vertex-ai", "model": "claude-2.1"},
            "metadata": {"k": "v".repeat(256)}}]}))
        .unwrap_err();
        assert_eq!(
            Value::Array(err),
            json!([
                {"type": "literal_error", "loc": ["body", "prompt_components", 0, "type"],
                 "msg": "Input should be 'x_ray_package_file_prompt'", "input": "other",
                 "ctx": {"expected": "'x_ray_package_file_prompt'"}},
                {"type": "missing", "loc": ["body", "prompt_components", 0, "payload", "prompt"],
                 "msg": "Field required", "input": {"provider": "vertex-ai", "model": "claude-2.1"}},
                {"type": "literal_error", "loc": ["body", "prompt_components", 0, "payload", "provider"],
                 "msg": format!("Input should be {PROVIDER_EXPECTED}"), "input": "vertex-ai",
                 "ctx": {"expected": PROVIDER_EXPECTED}},
                {"type": "string_too_long", "loc": ["body", "prompt_components", 0, "metadata", "k"],
                 "msg": "String should have at most 255 characters", "input": "v".repeat(256),
                 "ctx": {"max_length": 255}}
            ])
        );
        let many: Map<String, Value> = (0..11).map(|i| (format!("k{i}"), json!("v"))).collect();
        let err = parse_x_ray_request(
            &json!({"prompt_components": [{"type": "x_ray_package_file_prompt",
            "payload": {"prompt": "p", "provider": "anthropic", "model": "claude-2.1"},
            "metadata": many}]}),
        )
        .unwrap_err();
        assert_eq!(err[0]["type"], "value_error");
        assert_eq!(
            err[0]["loc"],
            json!(["body", "prompt_components", 0, "metadata"])
        );
        assert_eq!(
            err[0]["msg"],
            "Value error, metadata cannot has more than 10 elements"
        );
        // The type may be left out: it defaults to the only value it may have.
        let r = parse_x_ray_request(&json!({"prompt_components": [{
            "payload": {"prompt": "p", "provider": "anthropic", "model": "claude-2.1"}}]}))
        .unwrap();
        assert_eq!(r.prompt, "p");
        let err = parse_x_ray_request(&json!({"prompt_components": []})).unwrap_err();
        assert_eq!(err[0]["type"], "too_short");
    }
}
