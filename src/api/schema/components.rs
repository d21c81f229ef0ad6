//! `/v3/code/completions` and `/v4/code/suggestions` bodies (spec 3.3, 3.4), validated like the
//! original's `CompletionRequest` in `api/v3/code/typing.py`:
//! `{"prompt_components": [1..100 components]}`, each component a discriminated union on `type`.
//!
//! The tags are members of the string enum `CodeEditorComponents` used in `Literal[...]`, and
//! pydantic renders expected tags with `repr()`, so an unknown tag reads
//! `Input tag 'x' found using 'type' does not match any of the expected tags:
//! <CodeEditorComponents.COMPLETION: 'code_editor_completion'>, ...`; likewise the payload's
//! `model_provider` is `Literal[ModelProvider.VERTEX_AI, ModelProvider.ANTHROPIC]` and its
//! `literal_error` lists `<ModelProvider.VERTEX_AI: 'vertex-ai'> or <ModelProvider.ANTHROPIC:
//! 'anthropic'>`. A missing `type` is `union_tag_not_found`. Errors inside a component carry the
//! tag: `["body", "prompt_components", 0, "code_editor_completion", "payload", "file_name"]`.
//!
//! The completion payload's `prompt` is `Optional[str | list[Message]]`, a smart union: when
//! neither member fits, pydantic reports both members' errors, labelled `str` and
//! `list[Message]` in `loc`.

use serde_json::{Map, Value};

use super::body::missing_body;
use super::code::{
    any_string, read_code_context, read_messages, CodeContextPayload, ModelProvider, Prompt,
};
use super::{py_str, ChoiceKind, Choices, Errors, Fields, Len, Loc, Str, ValidationError};

/// `MetadataBase` of a component: who sent it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataBase {
    /// At most 255 characters.
    pub source: String,
    /// At most 255 characters.
    pub version: String,
}

/// `EditorContentCompletionPayload`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EditorContentCompletionPayload {
    /// Stripped, at most 255 characters.
    pub file_name: String,
    /// At most 100 000 characters.
    pub content_above_cursor: String,
    /// At most 100 000 characters.
    pub content_below_cursor: String,
    /// At most 255 characters.
    pub language_identifier: Option<String>,
    /// Only `vertex-ai` or `anthropic`.
    pub model_provider: Option<ModelProvider>,
    /// Model name (not checked here).
    pub model_name: Option<String>,
    /// Stream the answer (default `Some(false)`).
    pub stream: Option<bool>,
    /// Vertex candidate count (default `Some(0)`).
    pub choices_count: Option<i64>,
    /// A raw prompt: text or chat messages.
    pub prompt: Option<Prompt>,
}

/// `EditorContentGenerationPayload`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct EditorContentGenerationPayload {
    /// Stripped, at most 255 characters.
    pub file_name: String,
    /// At most 100 000 characters.
    pub content_above_cursor: String,
    /// At most 100 000 characters.
    pub content_below_cursor: String,
    /// At most 255 characters.
    pub language_identifier: Option<String>,
    /// Only `vertex-ai` or `anthropic`.
    pub model_provider: Option<ModelProvider>,
    /// Model name (not checked here).
    pub model_name: Option<String>,
    /// Stream the answer (default `Some(false)`).
    pub stream: Option<bool>,
    /// A raw prompt, at most 400 000 characters.
    pub prompt: Option<String>,
    /// Registry prompt id.
    pub prompt_id: Option<String>,
    /// Template variables for registry prompts (`dict[str, Any]`).
    pub prompt_enhancer: Option<Map<String, Value>>,
}

/// `CodeEditorCompletion`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeEditorCompletion {
    /// What to complete.
    pub payload: EditorContentCompletionPayload,
    /// Who sent it.
    pub metadata: Option<MetadataBase>,
}

/// `CodeEditorGeneration`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CodeEditorGeneration {
    /// What to generate.
    pub payload: EditorContentGenerationPayload,
    /// Who sent it.
    pub metadata: Option<MetadataBase>,
}

/// `CodeContext`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CodeContext {
    /// The context (content at most 100 000 characters).
    pub payload: CodeContextPayload,
    /// Who sent it.
    pub metadata: Option<MetadataBase>,
}

/// One prompt component, by its `type` tag.
#[derive(Debug, Clone, PartialEq)]
pub enum PromptComponent {
    /// `code_editor_completion`
    CodeEditorCompletion(CodeEditorCompletion),
    /// `code_editor_generation`
    CodeEditorGeneration(CodeEditorGeneration),
    /// `code_context`
    CodeContext(CodeContext),
}

impl PromptComponent {
    /// The wire tag.
    pub const fn type_str(&self) -> &'static str {
        match self {
            PromptComponent::CodeEditorCompletion(_) => "code_editor_completion",
            PromptComponent::CodeEditorGeneration(_) => "code_editor_generation",
            PromptComponent::CodeContext(_) => "code_context",
        }
    }

    /// The component's metadata.
    pub fn metadata(&self) -> Option<&MetadataBase> {
        match self {
            PromptComponent::CodeEditorCompletion(c) => c.metadata.as_ref(),
            PromptComponent::CodeEditorGeneration(c) => c.metadata.as_ref(),
            PromptComponent::CodeContext(c) => c.metadata.as_ref(),
        }
    }
}

/// A validated v3/v4 body (`CompletionRequest`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CompletionRequest {
    /// 1 to 100 components; the first one decides the action.
    pub prompt_components: Vec<PromptComponent>,
}

const COMPONENT_TAGS: &str = "<CodeEditorComponents.COMPLETION: 'code_editor_completion'>, \
    <CodeEditorComponents.GENERATION: 'code_editor_generation'>, \
    <CodeEditorComponents.CONTEXT: 'code_context'>";

const PAYLOAD_PROVIDERS: Choices<ModelProvider> = Choices {
    kind: ChoiceKind::Literal,
    options: &[
        ("vertex-ai", ModelProvider::VertexAi),
        ("anthropic", ModelProvider::Anthropic),
    ],
    expected: "<ModelProvider.VERTEX_AI: 'vertex-ai'> or <ModelProvider.ANTHROPIC: 'anthropic'>",
};

/// Validate a `/v3/code/completions` or `/v4/code/suggestions` body (the value
/// [`super::read_body`] made of it).
pub fn parse_completion_request(body: &Value) -> Result<CompletionRequest, Vec<Value>> {
    if body.is_null() {
        return Err(vec![missing_body()]);
    }
    let root = Loc::root("body");
    let mut e = Errors::new();
    let Some(f) = e.model(body, &root) else {
        return Err(e.into_values());
    };
    let components = e.required(f, "prompt_components", &root, |e, v, l| {
        e.list(v, l, Len::between(1, 100), read_component)
    });
    e.finish(|| CompletionRequest {
        prompt_components: components.unwrap_or_default(),
    })
}

#[derive(Clone, Copy)]
enum Tag {
    Completion,
    Generation,
    Context,
}

fn read_component(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<PromptComponent> {
    let f = e.model(v, l)?;
    let Some(tag) = f.get("type") else {
        e.push(ValidationError::union_tag_not_found(l, v, "'type'"));
        return None;
    };
    let (kind, name) = match tag.as_str() {
        Some(name @ "code_editor_completion") => (Tag::Completion, name),
        Some(name @ "code_editor_generation") => (Tag::Generation, name),
        Some(name @ "code_context") => (Tag::Context, name),
        _ => {
            e.push(ValidationError::union_tag_invalid(
                l,
                v,
                "'type'",
                &py_str(tag),
                COMPONENT_TAGS,
            ));
            return None;
        }
    };
    let l = l.key(name);
    Some(match kind {
        Tag::Completion => {
            let payload = e.required(f, "payload", &l, read_completion_payload);
            let metadata = e.optional(f, "metadata", &l, None, read_metadata);
            PromptComponent::CodeEditorCompletion(CodeEditorCompletion {
                payload: payload?,
                metadata: metadata?,
            })
        }
        Tag::Generation => {
            let payload = e.required(f, "payload", &l, read_generation_payload);
            let metadata = e.optional(f, "metadata", &l, None, read_metadata);
            PromptComponent::CodeEditorGeneration(CodeEditorGeneration {
                payload: payload?,
                metadata: metadata?,
            })
        }
        Tag::Context => {
            let payload = e.required(f, "payload", &l, |e, v, l| {
                read_code_context(e, v, l, 100_000)
            });
            let metadata = e.optional(f, "metadata", &l, None, read_metadata);
            PromptComponent::CodeContext(CodeContext {
                payload: payload?,
                metadata: metadata?,
            })
        }
    })
}

fn read_metadata(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<MetadataBase> {
    let f = e.model(v, l)?;
    let source = e.required(f, "source", l, |e, v, l| e.string(v, l, Str::max(255)));
    let version = e.required(f, "version", l, |e, v, l| e.string(v, l, Str::max(255)));
    Some(MetadataBase {
        source: source?,
        version: version?,
    })
}

/// The fields shared by both editor payloads (`EditorContentPayload`), in declaration order.
struct EditorContent {
    file_name: Option<String>,
    content_above_cursor: Option<String>,
    content_below_cursor: Option<String>,
    language_identifier: Option<Option<String>>,
    model_provider: Option<Option<ModelProvider>>,
    model_name: Option<Option<String>>,
    stream: Option<Option<bool>>,
}

fn read_editor_content(e: &mut Errors, f: Fields<'_>, l: &Loc<'_>) -> EditorContent {
    EditorContent {
        file_name: e.required(f, "file_name", l, |e, v, l| {
            e.string(v, l, Str::strip_max(255))
        }),
        content_above_cursor: e.required(f, "content_above_cursor", l, |e, v, l| {
            e.string(v, l, Str::max(100_000))
        }),
        content_below_cursor: e.required(f, "content_below_cursor", l, |e, v, l| {
            e.string(v, l, Str::max(100_000))
        }),
        language_identifier: e.optional(f, "language_identifier", l, None, |e, v, l| {
            e.string(v, l, Str::max(255))
        }),
        model_provider: e.optional(f, "model_provider", l, None, |e, v, l| {
            e.one_of(v, l, &PAYLOAD_PROVIDERS)
        }),
        model_name: e.optional(f, "model_name", l, None, any_string),
        stream: e.optional(f, "stream", l, Some(false), |e, v, l| e.boolean(v, l)),
    }
}

fn read_completion_payload(
    e: &mut Errors,
    v: &Value,
    l: &Loc<'_>,
) -> Option<EditorContentCompletionPayload> {
    let f = e.model(v, l)?;
    let c = read_editor_content(e, f, l);
    let choices_count = e.optional(f, "choices_count", l, Some(0), |e, v, l| e.int(v, l));
    let prompt = e.optional(f, "prompt", l, None, read_prompt_union);
    Some(EditorContentCompletionPayload {
        file_name: c.file_name?,
        content_above_cursor: c.content_above_cursor?,
        content_below_cursor: c.content_below_cursor?,
        language_identifier: c.language_identifier?,
        model_provider: c.model_provider?,
        model_name: c.model_name?,
        stream: c.stream?,
        choices_count: choices_count?,
        prompt: prompt?,
    })
}

/// `str | list[Message]` in smart mode: a string is taken as is; otherwise the list member is
/// tried, and when it fails too both members' errors are reported under their labels.
fn read_prompt_union(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Prompt> {
    if let Value::String(s) = v {
        return Some(Prompt::Text(s.clone()));
    }
    let mark = e.len();
    e.push(ValidationError::string_type(&l.key("str"), v));
    let messages = read_messages(e, v, &l.key("list[Message]"))?;
    e.truncate(mark);
    Some(Prompt::Messages(messages))
}

fn read_generation_payload(
    e: &mut Errors,
    v: &Value,
    l: &Loc<'_>,
) -> Option<EditorContentGenerationPayload> {
    let f = e.model(v, l)?;
    let c = read_editor_content(e, f, l);
    let prompt = e.optional(f, "prompt", l, None, |e, v, l| {
        e.string(v, l, Str::max(400_000))
    });
    let prompt_id = e.optional(f, "prompt_id", l, None, any_string);
    let prompt_enhancer = e.optional(f, "prompt_enhancer", l, None, |e, v, l| {
        e.dict(v, l).cloned()
    });
    Some(EditorContentGenerationPayload {
        file_name: c.file_name?,
        content_above_cursor: c.content_above_cursor?,
        content_below_cursor: c.content_below_cursor?,
        language_identifier: c.language_identifier?,
        model_provider: c.model_provider?,
        model_name: c.model_name?,
        stream: c.stream?,
        prompt: prompt?,
        prompt_id: prompt_id?,
        prompt_enhancer: prompt_enhancer?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(body: &Value) -> Value {
        match parse_completion_request(body) {
            Ok(ok) => json!({ "unexpected": format!("{ok:?}") }),
            Err(e) => Value::Array(e),
        }
    }

    fn completion(payload: Value) -> Value {
        json!({"prompt_components": [{"type": "code_editor_completion", "payload": payload}]})
    }

    #[test]
    fn valid_components() {
        let body = json!({"prompt_components": [
            {"type": "code_editor_generation",
             "payload": {"file_name": " a.py ", "content_above_cursor": "x", "content_below_cursor": "",
                         "model_provider": "anthropic", "prompt_enhancer": {"user_instruction": "y"}},
             "metadata": {"source": "GitLab EE", "version": "17.8.0"}},
            {"type": "code_context", "payload": {"type": "file", "name": "b.py", "content": "z"}},
            {"type": "code_editor_completion",
             "payload": {"file_name": "a.py", "content_above_cursor": "", "content_below_cursor": "",
                         "prompt": [{"role": "user", "content": "hi"}], "stream": 1}}
        ]});
        let r = parse_completion_request(&body);
        let Ok(r) = r else {
            assert_eq!(errors(&body), json!([]));
            return;
        };
        assert_eq!(r.prompt_components.len(), 3);
        let types: Vec<_> = r
            .prompt_components
            .iter()
            .map(PromptComponent::type_str)
            .collect();
        assert_eq!(
            types,
            [
                "code_editor_generation",
                "code_context",
                "code_editor_completion"
            ]
        );
        match &r.prompt_components[0] {
            PromptComponent::CodeEditorGeneration(g) => {
                assert_eq!(g.payload.file_name, "a.py");
                assert_eq!(g.payload.model_provider, Some(ModelProvider::Anthropic));
                assert_eq!(g.payload.stream, Some(false));
                assert_eq!(
                    g.payload.prompt_enhancer,
                    Some(Map::from_iter([(
                        "user_instruction".to_owned(),
                        json!("y")
                    )]))
                );
                assert_eq!(
                    g.metadata.as_ref().map(|m| m.version.as_str()),
                    Some("17.8.0")
                );
            }
            other => assert_eq!(format!("{other:?}"), "generation"),
        }
        match &r.prompt_components[2] {
            PromptComponent::CodeEditorCompletion(c) => {
                assert_eq!(c.payload.stream, Some(true));
                assert_eq!(c.payload.choices_count, Some(0));
                assert!(matches!(c.payload.prompt, Some(Prompt::Messages(ref m)) if m.len() == 1));
            }
            other => assert_eq!(format!("{other:?}"), "completion"),
        }
    }

    #[test]
    fn unknown_tag() {
        let body = json!({"prompt_components": [{"type": "x", "payload": {}}]});
        assert_eq!(
            errors(&body),
            json!([{
                "type": "union_tag_invalid",
                "loc": ["body", "prompt_components", 0],
                "msg": format!("Input tag 'x' found using 'type' does not match any of the expected tags: {COMPONENT_TAGS}"),
                "input": {"type": "x", "payload": {}},
                "ctx": {"discriminator": "'type'", "tag": "x", "expected_tags": COMPONENT_TAGS}
            }])
        );
    }

    #[test]
    fn payload_errors_carry_the_tag() {
        let body = completion(
            json!({"file_name": "a".repeat(256), "content_above_cursor": "",
                                     "content_below_cursor": "", "model_provider": "litellm"}),
        );
        assert_eq!(
            errors(&body),
            json!([
                {"type": "string_too_long",
                 "loc": ["body", "prompt_components", 0, "code_editor_completion", "payload", "file_name"],
                 "msg": "String should have at most 255 characters", "input": "a".repeat(256),
                 "ctx": {"max_length": 255}},
                {"type": "literal_error",
                 "loc": ["body", "prompt_components", 0, "code_editor_completion", "payload", "model_provider"],
                 "msg": "Input should be <ModelProvider.VERTEX_AI: 'vertex-ai'> or <ModelProvider.ANTHROPIC: 'anthropic'>",
                 "input": "litellm",
                 "ctx": {"expected": "<ModelProvider.VERTEX_AI: 'vertex-ai'> or <ModelProvider.ANTHROPIC: 'anthropic'>"}}
            ])
        );
    }

    #[test]
    fn prompt_union_reports_both_members() {
        let body = completion(json!({"file_name": "a", "content_above_cursor": "",
                                     "content_below_cursor": "", "prompt": [{"role": "bot"}]}));
        let base = json!([
            "body",
            "prompt_components",
            0,
            "code_editor_completion",
            "payload",
            "prompt"
        ]);
        let at = |tail: Value| {
            let mut loc = base.as_array().cloned().unwrap_or_default();
            loc.extend(tail.as_array().cloned().unwrap_or_default());
            Value::Array(loc)
        };
        assert_eq!(
            errors(&body),
            json!([
                {"type": "string_type", "loc": at(json!(["str"])),
                 "msg": "Input should be a valid string", "input": [{"role": "bot"}]},
                {"type": "enum", "loc": at(json!(["list[Message]", 0, "role"])),
                 "msg": "Input should be 'system', 'user' or 'assistant'", "input": "bot",
                 "ctx": {"expected": "'system', 'user' or 'assistant'"}},
                {"type": "missing", "loc": at(json!(["list[Message]", 0, "content"])),
                 "msg": "Field required", "input": {"role": "bot"}}
            ])
        );
    }

    #[test]
    fn list_bounds() {
        assert_eq!(
            errors(&json!({"prompt_components": []})),
            json!([{
                "type": "too_short", "loc": ["body", "prompt_components"],
                "msg": "List should have at least 1 item after validation, not 0", "input": [],
                "ctx": {"field_type": "List", "min_length": 1, "actual_length": 0}
            }])
        );
        let many: Vec<Value> = (0..101).map(|_| json!({"type": "code_context"})).collect();
        assert_eq!(
            errors(&json!({"prompt_components": many}))[0]["msg"],
            "List should have at most 100 items after validation, not 101"
        );
        assert_eq!(
            errors(&json!({})),
            json!([{"type": "missing", "loc": ["body", "prompt_components"],
                    "msg": "Field required", "input": {}}])
        );
        assert_eq!(
            errors(&json!({"prompt_components": [{"payload": {}}, 3]})),
            json!([
                {"type": "union_tag_not_found", "loc": ["body", "prompt_components", 0],
                 "msg": "Unable to extract tag using discriminator 'type'", "input": {"payload": {}},
                 "ctx": {"discriminator": "'type'"}},
                {"type": "model_attributes_type", "loc": ["body", "prompt_components", 1],
                 "msg": "Input should be a valid dictionary or object to extract fields from",
                 "input": 3}
            ])
        );
    }
}
