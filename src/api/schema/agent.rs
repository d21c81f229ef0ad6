//! `/v2/chat/agent` request bodies (spec 3.6): the original's `AgentRequest`, with pydantic's
//! error objects.
//!
//! `options.agent_scratchpad` is declared with `Field(discriminator="agent_type")` on a single
//! model, which pydantic turns into a tagged union of one member: a missing `agent_type` is
//! `union_tag_not_found`, another value `union_tag_invalid` (expected `'react'`), and errors
//! inside it carry the tag in `loc` (`[..., "agent_scratchpad", "react", "steps", 0, ...]`).
//! `model_metadata.endpoint` is pydantic's `AnyUrl` (at most 255 characters): `url_type`,
//! `url_too_long` and `url_parsing` with the URL parser's own message, as pydantic-core (which
//! uses the same `url` crate) reports them.

use serde_json::{Map, Value};

use super::code::Role;
use super::{py_str, ChoiceKind, Choices, Errors, Len, Loc, Str, ValidationError};
use crate::api::prompt_model::ModelMetadata;

/// The default of `unavailable_resources`.
pub const DEFAULT_UNAVAILABLE_RESOURCES: &str = "Merge Requests, Pipelines, Vulnerabilities";

const ROLES: Choices<Role> = Choices {
    kind: ChoiceKind::Enum,
    options: &[
        ("system", Role::System),
        ("user", Role::User),
        ("assistant", Role::Assistant),
    ],
    expected: "'system', 'user' or 'assistant'",
};

const CONTEXT_TYPES: Choices<&str> = Choices {
    kind: ChoiceKind::Literal,
    options: &[
        ("issue", "issue"),
        ("epic", "epic"),
        ("merge_request", "merge_request"),
        ("commit", "commit"),
        ("build", "build"),
    ],
    expected: "'issue', 'epic', 'merge_request', 'commit' or 'build'",
};

const CATEGORIES: Choices<&str> = Choices {
    kind: ChoiceKind::Literal,
    options: &[
        ("file", "file"),
        ("snippet", "snippet"),
        ("merge_request", "merge_request"),
        ("issue", "issue"),
        ("dependency", "dependency"),
        ("local_git", "local_git"),
    ],
    expected: "'file', 'snippet', 'merge_request', 'issue', 'dependency' or 'local_git'",
};

/// `message.context`: what the user is looking at.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Context {
    /// `issue`, `epic`, `merge_request`, `commit` or `build`.
    pub kind: &'static str,
    /// Its content.
    pub content: String,
}

/// `message.current_file`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CurrentFile {
    /// The file's path.
    pub file_path: String,
    /// The file's content, or the selection.
    pub data: String,
    /// Whether `data` is the user's selection.
    pub selected_code: bool,
}

/// One `message.additional_context` item.
#[derive(Debug, Clone, PartialEq)]
pub struct AdditionalContext {
    /// `file`, `snippet`, `merge_request`, `issue`, `dependency` or `local_git`.
    pub category: &'static str,
    /// Its id.
    pub id: Option<String>,
    /// Its content.
    pub content: Option<String>,
    /// Free-form metadata.
    pub metadata: Option<Map<String, Value>>,
}

/// One conversation message.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentMessage {
    /// Who speaks.
    pub role: Role,
    /// What is said.
    pub content: String,
    /// What the user is looking at.
    pub context: Option<Context>,
    /// The file open in the editor.
    pub current_file: Option<CurrentFile>,
    /// Context the user added.
    pub additional_context: Option<Vec<AdditionalContext>>,
    /// The content of the resource the user is looking at.
    pub resource_content: Option<String>,
}

/// One step of the agent's scratchpad: a tool the agent used and what it returned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// The reasoning.
    pub thought: String,
    /// The tool.
    pub tool: String,
    /// What it was asked.
    pub tool_input: String,
    /// What it answered.
    pub observation: String,
}

/// A validated `AgentRequest`.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentRequest {
    /// The conversation.
    pub messages: Vec<AgentMessage>,
    /// `options.agent_scratchpad.steps`, when `options` was sent.
    pub steps: Option<Vec<Step>>,
    /// A model other than the prompt's.
    pub model_metadata: Option<ModelMetadata>,
    /// Resources the agent cannot reach (`None` when sent as `null`).
    pub unavailable_resources: Option<Vec<String>>,
}

fn any_string(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<String> {
    e.string(v, l, Str::ANY)
}

fn ctx(key: &str, value: Value) -> Map<String, Value> {
    let mut m = Map::new();
    m.insert(key.to_owned(), value);
    m
}

/// pydantic's `AnyUrl` with `max_length`: the original text is kept.
pub fn url(e: &mut Errors, v: &Value, l: &Loc<'_>, max_length: usize) -> Option<String> {
    let Value::String(s) = v else {
        e.push(ValidationError::new(
            "url_type",
            l,
            "URL input should be a string or URL",
            v,
        ));
        return None;
    };
    if s.chars().count() > max_length {
        e.push(
            ValidationError::new(
                "url_too_long",
                l,
                format!("URL should have at most {max_length} characters"),
                v,
            )
            .with_ctx(ctx("max_length", Value::from(max_length))),
        );
        return None;
    }
    let problem = if s.is_empty() {
        Some("input is empty".to_string())
    } else {
        url::Url::parse(s).err().map(|err| err.to_string())
    };
    if let Some(problem) = problem {
        e.push(
            ValidationError::new(
                "url_parsing",
                l,
                format!("Input should be a valid URL, {problem}"),
                v,
            )
            .with_ctx(ctx("error", Value::String(problem))),
        );
        return None;
    }
    Some(s.clone())
}

/// `ModelMetadata` as this endpoint's original declares it: `endpoint` is a required URL.
fn read_model_metadata(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<ModelMetadata> {
    let f = e.model(v, l)?;
    let name = e.required(f, "name", l, |e, v, l| e.string(v, l, Str::max(255)));
    let provider = e.required(f, "provider", l, |e, v, l| e.string(v, l, Str::max(255)));
    let endpoint = e.required(f, "endpoint", l, |e, v, l| url(e, v, l, 255));
    let api_key = e.optional(f, "api_key", l, None, |e, v, l| {
        e.string(v, l, Str::max(2000))
    });
    let identifier = e.optional(f, "identifier", l, None, |e, v, l| {
        e.string(v, l, Str::max(255))
    });
    Some(ModelMetadata {
        name: name?,
        provider: provider?,
        endpoint: Some(endpoint?),
        api_key: api_key?,
        identifier: identifier?,
    })
}

fn read_context(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Context> {
    let f = e.model(v, l)?;
    let kind = e.required(f, "type", l, |e, v, l| e.one_of(v, l, &CONTEXT_TYPES));
    let content = e.required(f, "content", l, any_string);
    Some(Context {
        kind: kind?,
        content: content?,
    })
}

fn read_current_file(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<CurrentFile> {
    let f = e.model(v, l)?;
    let file_path = e.required(f, "file_path", l, any_string);
    let data = e.required(f, "data", l, any_string);
    let selected_code = e.required(f, "selected_code", l, |e, v, l| e.boolean(v, l));
    Some(CurrentFile {
        file_path: file_path?,
        data: data?,
        selected_code: selected_code?,
    })
}

fn read_additional_context(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<AdditionalContext> {
    let f = e.model(v, l)?;
    let category = e.required(f, "category", l, |e, v, l| e.one_of(v, l, &CATEGORIES));
    let id = e.optional(f, "id", l, None, any_string);
    let content = e.optional(f, "content", l, None, any_string);
    let metadata = e.optional(f, "metadata", l, None, |e, v, l| e.dict(v, l).cloned());
    Some(AdditionalContext {
        category: category?,
        id: id?,
        content: content?,
        metadata: metadata?,
    })
}

fn read_message(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<AgentMessage> {
    let f = e.model(v, l)?;
    let role = e.required(f, "role", l, |e, v, l| e.one_of(v, l, &ROLES));
    let content = e.required(f, "content", l, any_string);
    let context = e.optional(f, "context", l, None, read_context);
    let current_file = e.optional(f, "current_file", l, None, read_current_file);
    let additional_context = e.optional(f, "additional_context", l, None, |e, v, l| {
        e.list(v, l, Len::ANY, read_additional_context)
    });
    let resource_content = e.optional(f, "resource_content", l, None, any_string);
    Some(AgentMessage {
        role: role?,
        content: content?,
        context: context?,
        current_file: current_file?,
        additional_context: additional_context?,
        resource_content: resource_content?,
    })
}

fn read_step(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Step> {
    let f = e.model(v, l)?;
    let thought = e.required(f, "thought", l, any_string);
    let tool = e.required(f, "tool", l, any_string);
    let tool_input = e.required(f, "tool_input", l, any_string);
    let observation = e.required(f, "observation", l, any_string);
    Some(Step {
        thought: thought?,
        tool: tool?,
        tool_input: tool_input?,
        observation: observation?,
    })
}

/// `agent_scratchpad`: a tagged union of the one member `react`.
fn read_scratchpad(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Vec<Step>> {
    let f = e.model(v, l)?;
    let Some(tag) = f.get("agent_type") else {
        e.push(ValidationError::union_tag_not_found(l, v, "'agent_type'"));
        return None;
    };
    if tag.as_str() != Some("react") {
        e.push(ValidationError::union_tag_invalid(
            l,
            v,
            "'agent_type'",
            &py_str(tag),
            "'react'",
        ));
        return None;
    }
    let here = l.key("react");
    e.required(f, "steps", &here, |e, v, l| {
        e.list(v, l, Len::ANY, read_step)
    })
}

fn read_options(e: &mut Errors, v: &Value, l: &Loc<'_>) -> Option<Vec<Step>> {
    let f = e.model(v, l)?;
    e.required(f, "agent_scratchpad", l, read_scratchpad)
}

/// Validate a body as the original's `AgentRequest`.
pub fn parse_agent_request(body: &Value) -> Result<AgentRequest, Vec<Value>> {
    let mut e = Errors::new();
    let loc = Loc::root("body");
    let Some(f) = e.model(body, &loc) else {
        return Err(e.into_values());
    };
    let messages = e.required(f, "messages", &loc, |e, v, l| {
        e.list(v, l, Len::ANY, read_message)
    });
    let steps = e.optional(f, "options", &loc, None, read_options);
    let model_metadata = e.optional(f, "model_metadata", &loc, None, read_model_metadata);
    let unavailable = e.optional(
        f,
        "unavailable_resources",
        &loc,
        Some(vec![DEFAULT_UNAVAILABLE_RESOURCES.to_string()]),
        |e, v, l| e.list(v, l, Len::ANY, any_string),
    );
    if !e.is_empty() {
        return Err(e.into_values());
    }
    match (messages, steps, model_metadata, unavailable) {
        (Some(messages), Some(steps), Some(model_metadata), Some(unavailable_resources)) => {
            Ok(AgentRequest {
                messages,
                steps,
                model_metadata,
                unavailable_resources,
            })
        }
        _ => Err(e.into_values()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn errors(body: Value) -> Value {
        Value::Array(parse_agent_request(&body).unwrap_err())
    }

    #[test]
    fn a_full_body_validates() {
        let r = parse_agent_request(&json!({
            "messages": [
                {"role": "user", "content": "hi", "context": {"type": "issue", "content": "#1"},
                 "current_file": {"file_path": "a.py", "data": "x", "selected_code": "yes"},
                 "additional_context": [{"category": "local_git", "id": "g", "content": "log"}]},
                {"role": "assistant", "content": "hello"},
                {"role": "user", "content": "more", "resource_content": "text"}
            ],
            "options": {"agent_scratchpad": {"agent_type": "react", "steps": [
                {"thought": "t", "tool": "issue_reader", "tool_input": "i", "observation": "o"}]}},
            "model_metadata": {"name": "mistral", "provider": "litellm", "endpoint": "http://127.0.0.1:4000/v1"}
        }))
        .unwrap();
        assert_eq!(r.messages.len(), 3);
        assert_eq!(r.messages[0].context.as_ref().unwrap().kind, "issue");
        assert!(r.messages[0].current_file.as_ref().unwrap().selected_code);
        assert_eq!(r.steps.unwrap()[0].tool, "issue_reader");
        assert_eq!(
            r.unavailable_resources,
            Some(vec![DEFAULT_UNAVAILABLE_RESOURCES.to_string()])
        );
        let r =
            parse_agent_request(&json!({"messages": [], "unavailable_resources": null})).unwrap();
        assert_eq!(r.unavailable_resources, None);
        assert_eq!(r.steps, None);
    }

    #[test]
    fn errors_are_pydantics() {
        assert_eq!(
            errors(json!({})),
            json!([{"type": "missing", "loc": ["body", "messages"], "msg": "Field required", "input": {}}])
        );
        let e = errors(json!({"messages": [{"role": "robot", "content": 1,
            "context": {"type": "wiki", "content": "x"},
            "additional_context": [{"category": "secret"}]}]}));
        let kinds: Vec<(&str, Value)> = e
            .as_array()
            .unwrap()
            .iter()
            .map(|x| (x["type"].as_str().unwrap(), x["loc"].clone()))
            .collect();
        assert_eq!(
            kinds,
            vec![
                ("enum", json!(["body", "messages", 0, "role"])),
                ("string_type", json!(["body", "messages", 0, "content"])),
                (
                    "literal_error",
                    json!(["body", "messages", 0, "context", "type"])
                ),
                (
                    "literal_error",
                    json!(["body", "messages", 0, "additional_context", 0, "category"])
                ),
            ]
        );
        assert_eq!(
            e[0]["msg"],
            "Input should be 'system', 'user' or 'assistant'"
        );
        assert_eq!(
            e[3]["ctx"]["expected"],
            "'file', 'snippet', 'merge_request', 'issue', 'dependency' or 'local_git'"
        );
    }

    #[test]
    fn the_scratchpad_is_a_tagged_union() {
        let e = errors(json!({"messages": [], "options": {"agent_scratchpad": {"steps": []}}}));
        assert_eq!(
            e,
            json!([{"type": "union_tag_not_found", "loc": ["body", "options", "agent_scratchpad"],
                "msg": "Unable to extract tag using discriminator 'agent_type'",
                "input": {"steps": []}, "ctx": {"discriminator": "'agent_type'"}}])
        );
        let e = errors(
            json!({"messages": [], "options": {"agent_scratchpad": {"agent_type": "plan", "steps": []}}}),
        );
        assert_eq!(e[0]["type"], "union_tag_invalid");
        assert_eq!(
            e[0]["msg"],
            "Input tag 'plan' found using 'agent_type' does not match any of the expected tags: 'react'"
        );
        let e = errors(
            json!({"messages": [], "options": {"agent_scratchpad": {"agent_type": "react",
            "steps": [{"thought": "t", "tool": "x", "tool_input": "i"}]}}}),
        );
        assert_eq!(
            e[0]["loc"],
            json!([
                "body",
                "options",
                "agent_scratchpad",
                "react",
                "steps",
                0,
                "observation"
            ])
        );
        let e = errors(json!({"messages": [], "options": {}}));
        assert_eq!(e[0]["loc"], json!(["body", "options", "agent_scratchpad"]));
    }

    #[test]
    fn the_model_endpoint_is_a_required_url() {
        let meta = |endpoint: Value| {
            let mut m = json!({"name": "mistral", "provider": "litellm"});
            if !endpoint.is_null() {
                m["endpoint"] = endpoint;
            }
            errors(json!({"messages": [], "model_metadata": m}))
        };
        let e = meta(Value::Null);
        assert_eq!(e[0]["type"], "missing");
        assert_eq!(e[0]["loc"], json!(["body", "model_metadata", "endpoint"]));
        let e = meta(json!("not a url"));
        assert_eq!(
            e[0],
            json!({"type": "url_parsing", "loc": ["body", "model_metadata", "endpoint"],
                "msg": "Input should be a valid URL, relative URL without a base",
                "input": "not a url", "ctx": {"error": "relative URL without a base"}})
        );
        assert_eq!(meta(json!(5))[0]["type"], "url_type");
        let long = format!("http://{}.com", "a".repeat(260));
        assert_eq!(meta(json!(long))[0]["type"], "url_too_long");
        assert_eq!(meta(json!(""))[0]["ctx"]["error"], "input is empty");
    }
}
