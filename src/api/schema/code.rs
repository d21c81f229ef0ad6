//! `/v2/code/completions` (also `/v2/completions`) and `/v2/code/generations` bodies (spec 3.1,
//! 3.2), validated like the original's pydantic models in `api/v2/code/typing.py`.
//!
//! The body is a discriminated union on `prompt_version`: `CompletionsRequestV1 | V2 | V3`
//! (`GenerationsRequest...` for generations), declared with `Body(discriminator="prompt_version")`,
//! a *field-name* discriminator. pydantic v2 does not fall back to a variant's default tag, so an
//! omitted `prompt_version` is `union_tag_not_found` (`Unable to extract tag using discriminator
//! 'prompt_version'`) even though `V1` declares `prompt_version: Literal[1] = 1`. Tags are looked
//! up like Python dict keys, so `true` and `2.0` select variants 1 and 2 while `"2"`, `false` and
//! `null` are `union_tag_invalid` with expected tags `1, 2, 3`. Errors inside the chosen variant
//! carry the tag in `loc`: `["body", 2, "current_file", "file_name"]` (`"2.0"` for a float tag).
//!
//! `model_name` is checked against `model_provider` by the original's field validator: only when
//! `model_name` is present and `model_provider` validated to a provider, the name must be in
//! (models of that provider) ∩ (models of the use case), else `value_error` `model X is not
//! supported by use case code completions and provider P`. An explicit `"model_name": null` with a
//! provider is checked too and fails as `model None is not supported ...`, as in the original.

use serde_json::Value;

use super::body::missing_body;
use super::{py_str, ChoiceKind, Choices, Errors, Len, Loc, Str, ValidationError};

/// `KindModelProvider` (spec 4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ModelProvider {
    /// `anthropic`
    Anthropic,
    /// `vertex-ai`
    VertexAi,
    /// `litellm`
    Litellm,
    /// `codestral` (Mistral's API)
    Codestral,
    /// `fireworks_ai`
    FireworksAi,
}

impl ModelProvider {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            ModelProvider::Anthropic => "anthropic",
            ModelProvider::VertexAi => "vertex-ai",
            ModelProvider::Litellm => "litellm",
            ModelProvider::Codestral => "codestral",
            ModelProvider::FireworksAi => "fireworks_ai",
        }
    }

    /// The models of this provider (`PROVIDERS_MODELS_MAP`).
    pub const fn models(self) -> &'static [&'static str] {
        match self {
            ModelProvider::Anthropic => ANTHROPIC_MODELS,
            ModelProvider::VertexAi => VERTEX_MODELS,
            ModelProvider::Litellm | ModelProvider::Codestral | ModelProvider::FireworksAi => {
                LITELLM_MODELS
            }
        }
    }
}

const MODEL_PROVIDERS: Choices<ModelProvider> = Choices {
    kind: ChoiceKind::Enum,
    options: &[
        ("anthropic", ModelProvider::Anthropic),
        ("vertex-ai", ModelProvider::VertexAi),
        ("litellm", ModelProvider::Litellm),
        ("codestral", ModelProvider::Codestral),
        ("fireworks_ai", ModelProvider::FireworksAi),
    ],
    expected: "'anthropic', 'vertex-ai', 'litellm', 'codestral' or 'fireworks_ai'",
};

/// `KindAnthropicModel`.
pub const ANTHROPIC_MODELS: &[&str] = &[
    "claude-2.0",
    "claude-2.1",
    "claude-3-opus-20240229",
    "claude-3-sonnet-20240229",
    "claude-3-5-sonnet-20240620",
    "claude-3-haiku-20240307",
    "claude-3-5-haiku-20241022",
    "claude-3-5-sonnet-20241022",
];

/// `KindVertexTextModel`.
pub const VERTEX_MODELS: &[&str] = &[
    "code-bison",
    "code-bison@002",
    "code-gecko",
    "code-gecko@002",
    "text-bison",
    "text-bison@002",
    "chat-bison",
    "codechat-bison",
    "textembedding-gecko",
    "textembedding-gecko@003",
    "codestral@2405",
];

/// `KindLiteLlmModel`.
pub const LITELLM_MODELS: &[&str] = &[
    "codegemma",
    "codellama",
    "codestral",
    "mistral",
    "mixtral",
    "deepseekcoder",
    "claude_3",
    "claude_3.5",
    "gpt",
    "qwen2p5-coder-7b",
];

/// `KindUseCase`: which model set `model_name` is checked against.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum UseCase {
    /// `code completions`
    CodeCompletions,
    /// `code generations`
    CodeGenerations,
}

impl UseCase {
    /// The name used in messages.
    pub const fn as_str(self) -> &'static str {
        match self {
            UseCase::CodeCompletions => "code completions",
            UseCase::CodeGenerations => "code generations",
        }
    }

    /// The models of this use case (`USE_CASES_MODELS_MAP`).
    pub const fn models(self) -> &'static [&'static str] {
        match self {
            UseCase::CodeCompletions => &[
                "claude-3-5-sonnet-20240620",
                "claude-2.1",
                "code-gecko@002",
                "codegemma",
                "codellama",
                "codestral",
                "deepseekcoder",
                "mistral",
                "mixtral",
                "claude_3",
                "gpt",
                "qwen2p5-coder-7b",
            ],
            UseCase::CodeGenerations => &[
                "claude-2.0",
                "claude-2.1",
                "code-bison@002",
                "claude-3-opus-20240229",
                "claude-3-sonnet-20240229",
                "claude-3-5-sonnet-20240620",
                "claude-3-haiku-20240307",
                "claude-3-5-haiku-20241022",
                "claude-3-5-sonnet-20241022",
                "codegemma",
                "codellama",
                "codestral",
                "deepseekcoder",
                "mistral",
                "mixtral",
                "claude_3",
                "gpt",
                "claude_3.5",
            ],
        }
    }

    /// Whether `model_name` may be used with `provider` for this use case.
    pub fn supports(self, provider: ModelProvider, model_name: &str) -> bool {
        self.models().contains(&model_name) && provider.models().contains(&model_name)
    }
}

/// Chat roles of a v3 prompt message (`Role`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Role {
    /// `system`
    System,
    /// `user`
    User,
    /// `assistant`
    Assistant,
}

impl Role {
    /// The wire string.
    pub const fn as_str(self) -> &'static str {
        match self {
            Role::System => "system",
            Role::User => "user",
            Role::Assistant => "assistant",
        }
    }
}

const ROLES: Choices<Role> = Choices {
    kind: ChoiceKind::Enum,
    options: &[
        ("system", Role::System),
        ("user", Role::User),
        ("assistant", Role::Assistant),
    ],
    expected: "'system', 'user' or 'assistant'",
};

/// One chat message of a client-built prompt (`Message`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
}

/// A client-built prompt: text (prompt version 2) or chat messages (prompt version 3).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Prompt {
    /// `str`
    Text(String),
    /// `list[Message]`
    Messages(Vec<Message>),
}

/// The file being edited (`CurrentFile`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CurrentFile {
    /// Stripped, at most 255 characters.
    pub file_name: String,
    /// The editor's language id, at most 255 characters.
    pub language_identifier: Option<String>,
    /// At most 100 000 characters.
    pub content_above_cursor: String,
    /// At most 100 000 characters.
    pub content_below_cursor: String,
}

/// One experiment a client took part in (`ExperimentTelemetry`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ExperimentTelemetry {
    /// Experiment name.
    pub name: String,
    /// Variant number.
    pub variant: i64,
}

/// Client-side counters (`Telemetry`); they only feed metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Telemetry {
    /// At most 50 characters.
    pub model_engine: Option<String>,
    /// At most 50 characters.
    pub model_name: Option<String>,
    /// At most 50 characters.
    pub lang: Option<String>,
    /// Experiments.
    pub experiments: Option<Vec<ExperimentTelemetry>>,
    /// Requests made.
    pub requests: i64,
    /// Suggestions accepted.
    pub accepts: i64,
    /// Errors seen.
    pub errors: i64,
}

/// Extra code context sent by the client (`CodeContextPayload`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeContextPayload {
    /// At most 1024 characters.
    pub r#type: String,
    /// At most 1024 characters.
    pub name: String,
    /// At most 500 000 characters in v2 bodies, 100 000 in v3/v4 components.
    pub content: String,
}

/// A validated v2 completions or generations body (`SuggestionsRequest` and its versioned
/// subclasses). Defaults are the original's: absent `stream` is `Some(false)`, absent
/// `choices_count` is `Some(0)`; an explicit `null` gives `None`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeSuggestionsRequest {
    /// 1, 2 or 3 (the discriminator).
    pub prompt_version: u8,
    /// Stripped, at most 255 characters.
    pub project_path: Option<String>,
    /// Project id.
    pub project_id: Option<i64>,
    /// The file being edited.
    pub current_file: CurrentFile,
    /// Which provider to route to.
    pub model_provider: Option<ModelProvider>,
    /// Self-hosted model endpoint.
    pub model_endpoint: Option<String>,
    /// Self-hosted model API key.
    pub model_api_key: Option<String>,
    /// Self-hosted model identifier.
    pub model_identifier: Option<String>,
    /// Stripped, at most 50 characters, valid for the provider and use case.
    pub model_name: Option<String>,
    /// At most 10 entries.
    pub telemetry: Vec<Telemetry>,
    /// Stream the answer (default `Some(false)`).
    pub stream: Option<bool>,
    /// Vertex candidate count (default `Some(0)`).
    pub choices_count: Option<i64>,
    /// At most 100 entries.
    pub context: Vec<CodeContextPayload>,
    /// Registry prompt id.
    pub prompt_id: Option<String>,
    /// Version 1: always `None`. Completions: v2 optional text, v3 optional messages.
    /// Generations: v2 text, v3 messages, both required.
    pub prompt: Option<Prompt>,
}

/// A `/v2/code/completions` body.
pub type CodeCompletionsRequest = CodeSuggestionsRequest;
/// A `/v2/code/generations` body.
pub type CodeGenerationsRequest = CodeSuggestionsRequest;

/// Validate a `/v2/code/completions` body (the value [`super::read_body`] made of it).
pub fn parse_code_completions(body: &Value) -> Result<CodeCompletionsRequest, Vec<Value>> {
    parse_suggestions(body, UseCase::CodeCompletions)
}

/// Validate a `/v2/code/generations` body (the value [`super::read_body`] made of it).
pub fn parse_code_generations(body: &Value) -> Result<CodeGenerationsRequest, Vec<Value>> {
    parse_suggestions(body, UseCase::CodeGenerations)
}

const PROMPT_VERSION: &str = "'prompt_version'";

fn parse_suggestions(
    body: &Value,
    use_case: UseCase,
) -> Result<CodeSuggestionsRequest, Vec<Value>> {
    if body.is_null() {
        return Err(vec![missing_body()]);
    }
    let root = Loc::root("body");
    let mut e = Errors::new();
    let Some(f) = e.model(body, &root) else {
        return Err(e.into_values());
    };
    let Some(tag) = f.get("prompt_version") else {
        e.push(ValidationError::union_tag_not_found(
            &root,
            body,
            PROMPT_VERSION,
        ));
        return Err(e.into_values());
    };
    let Some(version) = prompt_version_tag(tag) else {
        e.push(ValidationError::union_tag_invalid(
            &root,
            body,
            PROMPT_VERSION,
            &py_str(tag),
            "1, 2, 3",
        ));
        return Err(e.into_values());
    };
    // pydantic puts the tag object itself into `loc`: an int (`true` counts as 1) as a number,
    // a float as its `repr` string.
    let float_tag;
    let l = match tag {
        Value::Number(n) if !n.is_i64() => {
            float_tag = py_str(tag);
            root.key(&float_tag)
        }
        _ => root.index(version),
    };

    let project_path = e.optional(f, "project_path", &l, None, |e, v, l| {
        e.string(v, l, Str::strip_max(255))
    });
    let project_id = e.optional(f, "project_id", &l, None, |e, v, l| e.int(v, l));
    let current_file = e.required(f, "current_file", &l, read_current_file);
    let model_provider = e.optional(f, "model_provider", &l, None, |e, v, l| {
        e.one_of(v, l, &MODEL_PROVIDERS)
    });
    let model_endpoint = e.optional(f, "model_endpoint", &l, None, any_string);
    let model_api_key = e.optional(f, "model_api_key", &l, None, any_string);
    let model_identifier = e.optional(f, "model_identifier", &l, None, any_string);
    let model_name = read_model_name(&mut e, f.get("model_name"), &l, model_provider, use_case);
    let telemetry = e.defaulted(f, "telemetry", &l, Vec::new(), |e, v, l| {
        e.list(v, l, Len::max(10), read_telemetry)
    });
    let stream = e.optional(f, "stream", &l, Some(false), |e, v, l| e.boolean(v, l));
    let choices_count = e.optional(f, "choices_count", &l, Some(0), |e, v, l| e.int(v, l));
    let context = e.defaulted(f, "context", &l, Vec::new(), |e, v, l| {
        e.list(v, l, Len::max(100), |e, v, l| {
            read_code_context(e, v, l, 500_000)
        })
    });
    let prompt_id = e.optional(f, "prompt_id", &l, None, any_string);
    let prompt = match (use_case, version) {
        (_, 1) => Some(None),
        (UseCase::CodeCompletions, 2) => e
            .optional(f, "prompt", &l, None, any_string)
            .map(|p| p.map(Prompt::Text)),
        (UseCase::CodeCompletions, _) => e
            .optional(f, "prompt", &l, None, read_messages)
            .map(|p| p.map(Prompt::Messages)),
        (UseCase::CodeGenerations, 2) => e
            .required(f, "prompt", &l, any_string)
            .map(|p| Some(Prompt::Text(p))),
        (UseCase::CodeGenerations, _) => e
            .required(f, "prompt", &l, read_messages)
            .map(|p| Some(Prompt::Messages(p))),
    };

    e.finish(|| CodeSuggestionsRequest {
        prompt_version: u8::try_from(version).unwrap_or(1),
        project_path: project_path.flatten(),
        project_id: project_id.flatten(),
        current_file: current_file.unwrap_or_default(),
        model_provider: model_provider.flatten(),
        model_endpoint: model_endpoint.flatten(),
        model_api_key: model_api_key.flatten(),
        model_identifier: model_identifier.flatten(),
        model_name: model_name.flatten(),
        telemetry: telemetry.unwrap_or_default(),
        stream: stream.flatten(),
        choices_count: choices_count.flatten(),
        context: context.unwrap_or_default(),
        prompt_id: prompt_id.flatten(),
        prompt: prompt.flatten(),
    })
}

/// The variant a `prompt_version` tag selects. pydantic looks tags up the way a Python dict
/// does, so besides the integers 1, 2 and 3 it accepts `true` (== 1) and `1.0`, `2.0`, `3.0`;
/// `"2"` and `false` select nothing.
fn prompt_version_tag(tag: &Value) -> Option<i64> {
    let version = match tag {
        Value::Bool(true) => 1,
        Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => i,
            (None, Some(f)) if f == 1.0 || f == 2.0 || f == 3.0 => f as i64,
            _ => return None,
        },
        _ => return None,
    };
    (1..=3).contains(&version).then_some(version)
}

/// `model_name: Optional[Annotated[str, StringConstraints(strip_whitespace=True,
/// max_length=50)]] = None` with the `_validate_model_name` field validator, which sees
/// `model_provider` only when that field validated.
fn read_model_name(
    e: &mut Errors,
    value: Option<&Value>,
    loc: &Loc<'_>,
    provider: Option<Option<ModelProvider>>,
    use_case: UseCase,
) -> Option<Option<String>> {
    let Some(v) = value else {
        return Some(None);
    };
    let l = loc.key("model_name");
    let name = match v {
        Value::Null => None,
        _ => Some(e.string(v, &l, Str::strip_max(50))?),
    };
    if let Some(Some(provider)) = provider {
        let shown = name.as_deref().unwrap_or("None");
        if name.is_none() || !use_case.supports(provider, shown) {
            e.push(ValidationError::value_error(
                &l,
                v,
                &format!(
                    "model {shown} is not supported by use case {} and provider {}",
                    use_case.as_str(),
                    provider.as_str()
                ),
            ));
            return None;
        }
    }
    Some(name)
}

/// `Optional[str]` content without constraints.
pub(super) fn any_string(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<String> {
    e.string(v, l, Str::ANY)
}

fn read_current_file(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<CurrentFile> {
    let f = e.model(v, l)?;
    let file_name = e.required(f, "file_name", l, |e, v, l| {
        e.string(v, l, Str::strip_max(255))
    });
    let language_identifier = e.optional(f, "language_identifier", l, None, |e, v, l| {
        e.string(v, l, Str::max(255))
    });
    let content_above_cursor = e.required(f, "content_above_cursor", l, |e, v, l| {
        e.string(v, l, Str::max(100_000))
    });
    let content_below_cursor = e.required(f, "content_below_cursor", l, |e, v, l| {
        e.string(v, l, Str::max(100_000))
    });
    Some(CurrentFile {
        file_name: file_name?,
        language_identifier: language_identifier?,
        content_above_cursor: content_above_cursor?,
        content_below_cursor: content_below_cursor?,
    })
}

fn read_telemetry(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Telemetry> {
    let f = e.model(v, l)?;
    let short = |e: &mut Errors, v: &Value, l: &Loc<'_>| e.string(v, l, Str::max(50));
    let model_engine = e.optional(f, "model_engine", l, None, short);
    let model_name = e.optional(f, "model_name", l, None, short);
    let lang = e.optional(f, "lang", l, None, short);
    let experiments = e.optional(f, "experiments", l, None, |e, v, l| {
        e.list(v, l, Len::ANY, read_experiment)
    });
    let requests = e.required(f, "requests", l, |e, v, l| e.int(v, l));
    let accepts = e.required(f, "accepts", l, |e, v, l| e.int(v, l));
    let errors = e.required(f, "errors", l, |e, v, l| e.int(v, l));
    Some(Telemetry {
        model_engine: model_engine?,
        model_name: model_name?,
        lang: lang?,
        experiments: experiments?,
        requests: requests?,
        accepts: accepts?,
        errors: errors?,
    })
}

fn read_experiment(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<ExperimentTelemetry> {
    let f = e.model(v, l)?;
    let name = e.required(f, "name", l, any_string);
    let variant = e.required(f, "variant", l, |e, v, l| e.int(v, l));
    Some(ExperimentTelemetry {
        name: name?,
        variant: variant?,
    })
}

/// `CodeContextPayload` with the given `content` limit.
pub(super) fn read_code_context(
    e: &mut Errors,
    v: &Value,
    l: &Loc<'_>,
    max_content: usize,
) -> Option<CodeContextPayload> {
    let f = e.model(v, l)?;
    let r#type = e.required(f, "type", l, |e, v, l| e.string(v, l, Str::max(1024)));
    let name = e.required(f, "name", l, |e, v, l| e.string(v, l, Str::max(1024)));
    let content = e.required(f, "content", l, |e, v, l| {
        e.string(v, l, Str::max(max_content))
    });
    Some(CodeContextPayload {
        r#type: r#type?,
        name: name?,
        content: content?,
    })
}

/// `list[Message]`.
pub(super) fn read_messages(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Vec<Message>> {
    e.list(v, l, Len::ANY, read_message)
}

/// `list[Message]` with length bounds.
pub(super) fn read_messages_between(
    e: &mut Errors,
    v: &Value,
    l: &Loc<'_>,
    len: Len,
) -> Option<Vec<Message>> {
    e.list(v, l, len, read_message)
}

fn read_message(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Message> {
    let f = e.model(v, l)?;
    let role = e.required(f, "role", l, |e, v, l| e.one_of(v, l, &ROLES));
    let content = e.required(f, "content", l, any_string);
    Some(Message {
        role: role?,
        content: content?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn body(extra: Value) -> Value {
        let mut b = json!({
            "prompt_version": 1,
            "current_file": {
                "file_name": "main.py",
                "content_above_cursor": "def is_even(n: int) ->",
                "content_below_cursor": ""
            }
        });
        if let (Some(b), Value::Object(extra)) = (b.as_object_mut(), extra) {
            b.extend(extra);
        }
        b
    }

    fn errors(r: Result<CodeSuggestionsRequest, Vec<Value>>) -> Value {
        match r {
            Ok(ok) => json!({ "unexpected": format!("{ok:?}") }),
            Err(e) => Value::Array(e),
        }
    }

    #[test]
    fn minimal_body_and_defaults() {
        let r = parse_code_completions(&body(json!({"choices_count": 2})));
        assert_eq!(
            r,
            Ok(CodeSuggestionsRequest {
                prompt_version: 1,
                current_file: CurrentFile {
                    file_name: "main.py".into(),
                    language_identifier: None,
                    content_above_cursor: "def is_even(n: int) ->".into(),
                    content_below_cursor: String::new(),
                },
                stream: Some(false),
                choices_count: Some(2),
                ..CodeSuggestionsRequest::default()
            })
        );
    }

    #[test]
    fn full_v3_body() {
        let r = parse_code_completions(&body(json!({
            "prompt_version": 3,
            "project_path": "  gitlab-org/gitlab ",
            "project_id": "278964",
            "model_provider": "anthropic",
            "model_name": " claude-3-5-sonnet-20240620 ",
            "telemetry": [{"model_engine": "vertex-ai", "requests": 1, "accepts": 0, "errors": 0,
                           "experiments": [{"name": "x", "variant": 1}]}],
            "stream": "yes",
            "context": [{"type": "file", "name": "a.py", "content": "x = 1"}],
            "prompt": [{"role": "system", "content": "s"}, {"role": "user", "content": "u"}],
            "unknown": {"ignored": true}
        })));
        let Ok(r) = r else {
            assert_eq!(errors(r), json!([]));
            return;
        };
        assert_eq!(r.prompt_version, 3);
        assert_eq!(r.project_path.as_deref(), Some("gitlab-org/gitlab"));
        assert_eq!(r.project_id, Some(278_964));
        assert_eq!(r.model_provider, Some(ModelProvider::Anthropic));
        assert_eq!(r.model_name.as_deref(), Some("claude-3-5-sonnet-20240620"));
        assert_eq!(r.stream, Some(true));
        assert_eq!(r.telemetry.len(), 1);
        assert_eq!(r.context[0].r#type, "file");
        assert_eq!(
            r.prompt,
            Some(Prompt::Messages(vec![
                Message {
                    role: Role::System,
                    content: "s".into()
                },
                Message {
                    role: Role::User,
                    content: "u".into()
                },
            ]))
        );
    }

    #[test]
    fn model_name_not_supported() {
        // tests/api/v2/test_v2_code.py::test_completions_with_validation_error
        let r = parse_code_completions(&json!({
            "current_file": {"file_name": "main.py", "content_above_cursor": "foo",
                             "language_identifier": "python", "content_below_cursor": "}"},
            "prompt_version": 2,
            "model_provider": "codestral",
            "model_name": "dummy_model"
        }));
        assert_eq!(
            errors(r),
            json!([{
                "type": "value_error",
                "loc": ["body", 2, "model_name"],
                "msg": "Value error, model dummy_model is not supported by use case code completions and provider codestral",
                "input": "dummy_model",
                "ctx": {"error": {}}
            }])
        );
        let r = parse_code_generations(&body(json!({
            "model_provider": "vertex-ai", "model_name": "code-gecko@002"
        })));
        assert_eq!(
            errors(r)[0]["msg"],
            "Value error, model code-gecko@002 is not supported by use case code generations and provider vertex-ai"
        );
        let r = parse_code_generations(&body(json!({
            "model_provider": "vertex-ai", "model_name": " code-bison@002"
        })));
        assert!(r.is_ok());
    }

    #[test]
    fn missing_fields() {
        let r = parse_code_completions(
            &json!({"prompt_version": 1, "current_file": {"file_name": "a.py"}}),
        );
        let cf = json!({"file_name": "a.py"});
        assert_eq!(
            errors(r),
            json!([
                {"type": "missing", "loc": ["body", 1, "current_file", "content_above_cursor"],
                 "msg": "Field required", "input": cf},
                {"type": "missing", "loc": ["body", 1, "current_file", "content_below_cursor"],
                 "msg": "Field required", "input": cf}
            ])
        );
        let b = json!({"prompt_version": 2, "current_file": {"file_name": "a.py", "content_above_cursor": "", "content_below_cursor": ""}});
        assert_eq!(
            errors(parse_code_generations(&b)),
            json!([{"type": "missing", "loc": ["body", 2, "prompt"], "msg": "Field required", "input": b}])
        );
    }

    #[test]
    fn string_too_long_and_wrong_types_all_reported() {
        let long = "a".repeat(256);
        let r = parse_code_completions(&json!({
            "prompt_version": 1,
            "project_path": long,
            "project_id": "abc",
            "current_file": {"file_name": 5, "content_above_cursor": "", "content_below_cursor": null},
            "stream": "maybe",
        }));
        assert_eq!(
            errors(r),
            json!([
                {"type": "string_too_long", "loc": ["body", 1, "project_path"],
                 "msg": "String should have at most 255 characters", "input": long,
                 "ctx": {"max_length": 255}},
                {"type": "int_parsing", "loc": ["body", 1, "project_id"],
                 "msg": "Input should be a valid integer, unable to parse string as an integer",
                 "input": "abc"},
                {"type": "string_type", "loc": ["body", 1, "current_file", "file_name"],
                 "msg": "Input should be a valid string", "input": 5},
                {"type": "string_type", "loc": ["body", 1, "current_file", "content_below_cursor"],
                 "msg": "Input should be a valid string", "input": null},
                {"type": "bool_parsing", "loc": ["body", 1, "stream"],
                 "msg": "Input should be a valid boolean, unable to interpret input", "input": "maybe"}
            ])
        );
    }

    #[test]
    fn list_too_long_drops_item_errors() {
        let items: Vec<Value> = (0..11).map(|_| json!({"requests": "x"})).collect();
        let r = parse_code_completions(&body(json!({"telemetry": items})));
        assert_eq!(
            errors(r),
            json!([{
                "type": "too_long", "loc": ["body", 1, "telemetry"],
                "msg": "List should have at most 10 items after validation, not 11",
                "input": items,
                "ctx": {"field_type": "List", "max_length": 10, "actual_length": 11}
            }])
        );
    }

    #[test]
    fn wrong_enum_value() {
        let r = parse_code_completions(&body(json!({"model_provider": "openai"})));
        assert_eq!(
            errors(r),
            json!([{
                "type": "enum", "loc": ["body", 1, "model_provider"],
                "msg": "Input should be 'anthropic', 'vertex-ai', 'litellm', 'codestral' or 'fireworks_ai'",
                "input": "openai",
                "ctx": {"expected": "'anthropic', 'vertex-ai', 'litellm', 'codestral' or 'fireworks_ai'"}
            }])
        );
    }

    #[test]
    fn discriminator_errors() {
        let b = body(json!({"prompt_version": 4}));
        assert_eq!(
            errors(parse_code_completions(&b)),
            json!([{
                "type": "union_tag_invalid", "loc": ["body"],
                "msg": "Input tag '4' found using 'prompt_version' does not match any of the expected tags: 1, 2, 3",
                "input": b,
                "ctx": {"discriminator": "'prompt_version'", "tag": "4", "expected_tags": "1, 2, 3"}
            }])
        );
        let b = body(json!({"prompt_version": "2"}));
        assert_eq!(errors(parse_code_completions(&b))[0]["ctx"]["tag"], "2");
        let b = body(json!({"prompt_version": false}));
        assert_eq!(errors(parse_code_completions(&b))[0]["ctx"]["tag"], "False");
        // Python dict semantics: True == 1 and 2.0 == 2 select variants; a float tag is a string in loc.
        let b = body(json!({"prompt_version": true}));
        assert_eq!(parse_code_completions(&b).map(|r| r.prompt_version), Ok(1));
        let b = json!({"prompt_version": 2.0, "current_file": {}});
        assert_eq!(
            errors(parse_code_completions(&b))[0]["loc"],
            json!(["body", "2.0", "current_file", "file_name"])
        );
        let mut b = body(json!({}));
        if let Some(m) = b.as_object_mut() {
            m.remove("prompt_version");
        }
        assert_eq!(
            errors(parse_code_completions(&b)),
            json!([{
                "type": "union_tag_not_found", "loc": ["body"],
                "msg": "Unable to extract tag using discriminator 'prompt_version'",
                "input": b,
                "ctx": {"discriminator": "'prompt_version'"}
            }])
        );
    }

    #[test]
    fn body_shapes() {
        assert_eq!(
            errors(parse_code_completions(&json!([1]))),
            json!([{"type": "model_attributes_type", "loc": ["body"],
                    "msg": "Input should be a valid dictionary or object to extract fields from",
                    "input": [1]}])
        );
        assert_eq!(
            errors(parse_code_generations(&Value::Null)),
            json!([{"type": "missing", "loc": ["body"], "msg": "Field required", "input": null}])
        );
    }
}
