//! `/v1/chat/{chat_invokable}` request bodies (spec 3.5): `ChatRequest` of the original, with
//! pydantic's error objects.
//!
//! `payload.content` is `Union[constrained str (≤ 400 000), list[Message] (1..100)]` and
//! `payload.model` is `KindAnthropicModel | KindLiteLlmModel`: as pydantic's smart unions do, a
//! value that fits no member reports one error per member, the member's label appended to `loc`
//! (`constrained-str`, `list[Message]`, `enum[KindAnthropicModel]`, `enum[KindLiteLlmModel]`).

use serde_json::Value;

use super::code::{read_messages_between, Message, ANTHROPIC_MODELS, LITELLM_MODELS};
use super::{ChoiceKind, Errors, Len, Loc, Str, ValidationError};

/// `payload.provider`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChatProvider {
    /// `anthropic`
    Anthropic,
    /// `litellm`
    Litellm,
}

impl ChatProvider {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ChatProvider::Anthropic => "anthropic",
            ChatProvider::Litellm => "litellm",
        }
    }
}

/// `payload.content`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ChatContent {
    /// A prompt for Anthropic's legacy text completions.
    Text(String),
    /// Chat messages.
    Messages(Vec<Message>),
}

/// `payload.params` (`AnthropicParams`), defaults filled in.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatParams {
    /// Stop sequences (1..10, each ≤ 225 characters).
    pub stop_sequences: Vec<String>,
    /// 0..1, default 0.2.
    pub temperature: f64,
    /// 1..8192, default 8192.
    pub max_tokens_to_sample: i64,
}

/// `payload` (`PromptPayload`).
#[derive(Debug, Clone, PartialEq)]
pub struct ChatPayload {
    /// The prompt.
    pub content: ChatContent,
    /// `anthropic`, `litellm`, or none (Anthropic).
    pub provider: Option<ChatProvider>,
    /// The model name, default `claude-2.0`.
    pub model: String,
    /// Sampling parameters, only when the client sent them.
    pub params: Option<ChatParams>,
    /// A custom model's endpoint.
    pub model_endpoint: Option<String>,
    /// A custom model's key.
    pub model_api_key: Option<String>,
    /// A custom model's identifier.
    pub model_identifier: Option<String>,
}

/// A validated `ChatRequest`.
#[derive(Debug, Clone, PartialEq)]
pub struct ChatRequest {
    /// `prompt_components[0].type`.
    pub r#type: String,
    /// `prompt_components[0].metadata.source`.
    pub source: String,
    /// `prompt_components[0].metadata.version`.
    pub version: String,
    /// `prompt_components[0].payload`.
    pub payload: ChatPayload,
    /// Stream raw text.
    pub stream: bool,
}

const PROVIDER_EXPECTED: &str =
    "<KindModelProvider.ANTHROPIC: 'anthropic'> or <KindModelProvider.LITELLM: 'litellm'>";

fn quoted_choices(options: &[&str]) -> String {
    let quoted: Vec<String> = options.iter().map(|o| format!("'{o}'")).collect();
    match quoted.split_last() {
        Some((last, rest)) if !rest.is_empty() => format!("{} or {last}", rest.join(", ")),
        Some((last, _)) => last.clone(),
        None => String::new(),
    }
}

/// A `float`, lax (numbers, booleans, numeric strings).
fn float(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<f64> {
    let parsed = match v {
        Value::Number(n) => n.as_f64(),
        Value::Bool(b) => Some(if *b { 1.0 } else { 0.0 }),
        Value::String(s) => match s.trim().parse::<f64>() {
            Ok(f) => Some(f),
            Err(_) => {
                e.push(ValidationError::new(
                    "float_parsing",
                    l,
                    "Input should be a valid number, unable to parse string as a number",
                    v,
                ));
                return None;
            }
        },
        _ => None,
    };
    if parsed.is_none() {
        e.push(ValidationError::new(
            "float_type",
            l,
            "Input should be a valid number",
            v,
        ));
    }
    parsed
}

fn read_params(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<ChatParams> {
    let f = e.model(v, l)?;
    let stop = e.defaulted(
        f,
        "stop_sequences",
        l,
        vec!["\n\nHuman".to_string(), "Observation:".to_string()],
        |e, v, l| {
            e.list(v, l, Len::between(1, 10), |e, v, l| {
                e.string(v, l, Str::max(225))
            })
        },
    );
    let temperature = e.defaulted(f, "temperature", l, 0.2, |e, v, l| {
        let x = float(e, v, l);
        e.bounded(x, v, l, (0.0, Value::from(0.0)), (1.0, Value::from(1.0)))
    });
    let max_tokens = e.defaulted(f, "max_tokens_to_sample", l, 8192, |e, v, l| {
        let x = e.int(v, l);
        e.bounded(x, v, l, (1, Value::from(1)), (8192, Value::from(8192)))
    });
    Some(ChatParams {
        stop_sequences: stop?,
        temperature: temperature?,
        max_tokens_to_sample: max_tokens?,
    })
}

/// `Union[constrained-str, list[Message]]`, smart mode.
fn read_content(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<ChatContent> {
    let str_loc = l.key("constrained-str");
    let list_loc = l.key("list[Message]");
    let mark = e.len();
    if let Value::String(_) = v {
        if let Some(s) = e.string(v, &str_loc, Str::max(400_000)) {
            return Some(ChatContent::Text(s));
        }
        e.push(ValidationError::list_type(&list_loc, v));
        return None;
    }
    e.push(ValidationError::string_type(&str_loc, v));
    let after_str = e.len();
    match read_messages_between(e, v, &list_loc, Len::between(1, 100)) {
        Some(messages) => {
            e.truncate(mark);
            Some(ChatContent::Messages(messages))
        }
        None => {
            debug_assert!(e.len() >= after_str);
            None
        }
    }
}

/// `KindAnthropicModel | KindLiteLlmModel`.
fn read_model(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<String> {
    if let Value::String(s) = v {
        if ANTHROPIC_MODELS.contains(&s.as_str()) || LITELLM_MODELS.contains(&s.as_str()) {
            return Some(s.clone());
        }
    }
    e.push(ValidationError::choice(
        ChoiceKind::Enum,
        &l.key("enum[KindAnthropicModel]"),
        v,
        &quoted_choices(ANTHROPIC_MODELS),
    ));
    e.push(ValidationError::choice(
        ChoiceKind::Enum,
        &l.key("enum[KindLiteLlmModel]"),
        v,
        &quoted_choices(LITELLM_MODELS),
    ));
    None
}

fn read_provider(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<ChatProvider> {
    match v.as_str() {
        Some("anthropic") => Some(ChatProvider::Anthropic),
        Some("litellm") => Some(ChatProvider::Litellm),
        _ => {
            e.push(ValidationError::choice(
                ChoiceKind::Literal,
                l,
                v,
                PROVIDER_EXPECTED,
            ));
            None
        }
    }
}

fn optional_string(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<String> {
    e.string(v, l, Str::ANY)
}

fn read_payload(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<ChatPayload> {
    let f = e.model(v, l)?;
    let content = e.required(f, "content", l, read_content);
    let provider = e.optional(f, "provider", l, None, read_provider);
    let model = e.optional(f, "model", l, Some("claude-2.0".to_string()), read_model);
    let params = e.optional(f, "params", l, None, read_params);
    let endpoint = e.optional(f, "model_endpoint", l, None, optional_string);
    let api_key = e.optional(f, "model_api_key", l, None, optional_string);
    let identifier = e.optional(f, "model_identifier", l, None, optional_string);
    Some(ChatPayload {
        content: content?,
        provider: provider?,
        // An explicit `null` model keeps pydantic's None; the endpoint treats it as the default.
        model: model?.unwrap_or_else(|| "claude-2.0".to_string()),
        params: params?,
        model_endpoint: endpoint?,
        model_api_key: api_key?,
        model_identifier: identifier?,
    })
}

struct Component {
    r#type: String,
    source: String,
    version: String,
    payload: ChatPayload,
}

fn read_component(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Component> {
    let f = e.model(v, l)?;
    let r#type = e.required(f, "type", l, |e, v, l| e.string(v, l, Str::max(100)));
    let metadata = e.required(f, "metadata", l, |e, v, l| {
        let m = e.model(v, l)?;
        let source = e.required(m, "source", l, |e, v, l| e.string(v, l, Str::max(100)));
        let version = e.required(m, "version", l, |e, v, l| e.string(v, l, Str::max(100)));
        Some((source?, version?))
    });
    let payload = e.required(f, "payload", l, read_payload);
    let (source, version) = metadata?;
    Some(Component {
        r#type: r#type?,
        source,
        version,
        payload: payload?,
    })
}

/// Validate a body as the original's `ChatRequest`.
pub fn parse_chat_request(body: &Value) -> Result<ChatRequest, Vec<Value>> {
    let mut e = Errors::new();
    let loc = Loc::root("body");
    let Some(f) = e.model(body, &loc) else {
        return Err(e.into_values());
    };
    let components = e.required(f, "prompt_components", &loc, |e, v, l| {
        e.list(v, l, Len::between(1, 1), read_component)
    });
    let stream = e.optional(f, "stream", &loc, Some(false), |e, v, l| e.boolean(v, l));
    if !e.is_empty() {
        return Err(e.into_values());
    }
    let (Some(Some(component)), Some(stream)) = (components.map(|c| c.into_iter().next()), stream)
    else {
        return Err(e.into_values());
    };
    Ok(ChatRequest {
        r#type: component.r#type,
        source: component.source,
        version: component.version,
        payload: component.payload,
        stream: stream.unwrap_or(false),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(payload: Value) -> Value {
        json!({"prompt_components": [{"type": "prompt",
            "metadata": {"source": "gitlab-rails-sm", "version": "16.5.0-ee"}, "payload": payload}]})
    }

    #[test]
    fn valid_bodies_get_defaults() {
        let r = parse_chat_request(&body(json!({"content": "hi"}))).unwrap();
        assert_eq!(r.payload.model, "claude-2.0");
        assert_eq!(r.payload.provider, None);
        assert_eq!(r.payload.params, None);
        assert_eq!(r.payload.content, ChatContent::Text("hi".into()));
        let r = parse_chat_request(&body(json!({"content": [{"role": "user", "content": "x"}],
            "provider": "litellm", "model": "mistral", "params": {"temperature": 0.3}})))
        .unwrap();
        let p = r.payload.params.unwrap();
        assert_eq!(p.max_tokens_to_sample, 8192);
        assert_eq!(p.stop_sequences, vec!["\n\nHuman", "Observation:"]);
        assert_eq!(p.temperature, 0.3);
    }

    #[test]
    fn errors_are_pydantics() {
        // The original's test: missing metadata.version and payload.content.
        let v = json!({"prompt_components": [{"type": "prompt", "metadata": {"source": "gitlab-rails-sm"},
            "payload": {"provider": "anthropic", "model": "claude-2.0"}}]});
        let err = parse_chat_request(&v).unwrap_err();
        assert_eq!(
            Value::Array(err),
            json!([
                {"type": "missing", "loc": ["body", "prompt_components", 0, "metadata", "version"],
                 "msg": "Field required", "input": {"source": "gitlab-rails-sm"}},
                {"type": "missing", "loc": ["body", "prompt_components", 0, "payload", "content"],
                 "msg": "Field required", "input": {"provider": "anthropic", "model": "claude-2.0"}}
            ])
        );
        let two = json!({"prompt_components": [1, 2]});
        let err = parse_chat_request(&two).unwrap_err();
        assert_eq!(err.len(), 1);
        assert_eq!(err[0]["type"], "too_long");
        assert_eq!(
            err[0]["msg"],
            "List should have at most 1 item after validation, not 2"
        );

        let err = parse_chat_request(&body(
            json!({"content": "x", "provider": "openai", "model": "gpt-5", "params": {"temperature": 2, "max_tokens_to_sample": 0}}),
        ))
        .unwrap_err();
        let kinds: Vec<(&str, Value)> = err
            .iter()
            .map(|e| (e["type"].as_str().unwrap(), e["loc"].clone()))
            .collect();
        let p = |rest: &[&str]| {
            let mut l = vec![
                json!("body"),
                json!("prompt_components"),
                json!(0),
                json!("payload"),
            ];
            l.extend(rest.iter().map(|s| json!(s)));
            Value::Array(l)
        };
        assert_eq!(
            kinds,
            vec![
                ("literal_error", p(&["provider"])),
                ("enum", p(&["model", "enum[KindAnthropicModel]"])),
                ("enum", p(&["model", "enum[KindLiteLlmModel]"])),
                ("less_than_equal", p(&["params", "temperature"])),
                ("greater_than_equal", p(&["params", "max_tokens_to_sample"])),
            ]
        );
        assert_eq!(err[3]["msg"], "Input should be less than or equal to 1.0");
        assert_eq!(err[4]["ctx"], json!({"ge": 1}));

        let err = parse_chat_request(&body(json!({"content": 5}))).unwrap_err();
        assert_eq!(err[0]["loc"], p(&["content", "constrained-str"]));
        assert_eq!(err[1]["loc"], p(&["content", "list[Message]"]));
        let err = parse_chat_request(&body(json!({"content": []}))).unwrap_err();
        assert_eq!(err[1]["type"], "too_short");
    }
}
