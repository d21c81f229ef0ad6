//! Rendering prompt templates: a sandboxed minijinja environment that behaves like the original's
//! Jinja2 one where clients can see it.
//!
//! * **Sandboxed**: templates see only the request's inputs; includes resolve only to templates
//!   loaded from the definitions directory at startup (no file system access at render time);
//!   execution is bounded by fuel and a recursion limit, so no input can make a render spin.
//! * **Undefined as Jinja2 has it**: before rendering, the variables a prompt needs are compared
//!   with the inputs, and a missing one is answered like LangChain's `KeyError` (`"Input to
//!   ChatPromptTemplate is missing variables {'age'}.  Expected: [...] Received: [...]..."`),
//!   which the original's endpoint returns as a 422. As in LangChain, the variables a prompt needs
//!   are those its role templates use themselves: what an included template uses is not checked
//!   (LangChain reads `meta.find_undeclared_variables` of the role template, which does not
//!   follow includes), and such a variable left out by the client renders as Jinja2's
//!   `Undefined` does: empty when printed, falsy, an empty loop; only an attribute of it is an
//!   error. Clients rely on this: the original's chat prompts keep their inputs in included
//!   templates, and GitLab sends only some of them.
//! * **Python-looking output**: Jinja2 prints Python objects, so a list renders as `['a', 'b']`,
//!   `None` as `None` and booleans as `True`/`False`; the formatter here does the same, which
//!   matters for prompts that print lists (the chat prompt's `unavailable_resources`).
//! * No HTML auto-escaping, one trailing newline of a template dropped (Jinja2's defaults).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Write as _;

use minijinja::value::{Value, ValueKind};
use minijinja::{AutoEscape, Environment, Error, ErrorKind, Output, State, UndefinedBehavior};

/// Instructions one render may execute.
const FUEL: u64 = 2_000_000;
/// Deepest nesting of includes, loops and calls.
const RECURSION_LIMIT: usize = 64;

/// Why a prompt could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RenderError {
    /// Inputs the templates need are absent; the message is LangChain's.
    MissingVariables(String),
    /// The template failed on these inputs (an undefined attribute, a type error, too much work).
    Template(String),
}

impl RenderError {
    /// The text the client sees.
    pub fn message(&self) -> &str {
        match self {
            Self::MissingVariables(m) | Self::Template(m) => m,
        }
    }
}

/// Python's `repr` of a string.
pub fn py_repr_str(s: &str) -> String {
    let quote = if s.contains('\'') && !s.contains('"') {
        '"'
    } else {
        '\''
    };
    let mut out = String::with_capacity(s.len() + 2);
    out.push(quote);
    for c in s.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c == quote => {
                out.push('\\');
                out.push(c);
            }
            c if (c as u32) < 0x20 || c as u32 == 0x7f => {
                let _ = write!(out, "\\x{:02x}", c as u32);
            }
            c => out.push(c),
        }
    }
    out.push(quote);
    out
}

/// Python's `repr` of a template value (as Jinja2 prints a value inside a container).
fn py_repr(value: &Value, out: &mut String) {
    match value.kind() {
        ValueKind::Undefined | ValueKind::None => out.push_str("None"),
        ValueKind::Bool => out.push_str(if value.is_true() { "True" } else { "False" }),
        ValueKind::String => out.push_str(&py_repr_str(value.as_str().unwrap_or_default())),
        ValueKind::Seq | ValueKind::Iterable => {
            out.push('[');
            if let Ok(items) = value.try_iter() {
                for (i, item) in items.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&item, out);
                }
            }
            out.push(']');
        }
        ValueKind::Map => {
            out.push('{');
            if let Ok(keys) = value.try_iter() {
                for (i, key) in keys.enumerate() {
                    if i > 0 {
                        out.push_str(", ");
                    }
                    py_repr(&key, out);
                    out.push_str(": ");
                    py_repr(&value.get_item(&key).unwrap_or_default(), out);
                }
            }
            out.push('}');
        }
        _ => {
            let _ = write!(out, "{value}");
        }
    }
}

/// How a value prints at the top level: strings and numbers as themselves, the rest as Python
/// would print them.
fn py_format(out: &mut Output, _state: &State, value: &Value) -> Result<(), Error> {
    let text = match value.kind() {
        ValueKind::String | ValueKind::Number => value.to_string(),
        // Jinja2's `Undefined` prints as nothing.
        ValueKind::Undefined => String::new(),
        _ => {
            let mut s = String::new();
            py_repr(value, &mut s);
            s
        }
    };
    out.write_str(&text)
        .map_err(|e| Error::new(ErrorKind::WriteFailure, e.to_string()))
}

/// A sandboxed, strict environment holding `templates` (name → source).
pub fn environment(
    templates: impl IntoIterator<Item = (String, String)>,
) -> Result<Environment<'static>, (String, String)> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Lenient);
    env.set_auto_escape_callback(|_| AutoEscape::None);
    env.set_keep_trailing_newline(false);
    env.set_fuel(Some(FUEL));
    env.set_recursion_limit(RECURSION_LIMIT);
    env.set_formatter(py_format);
    for (name, source) in templates {
        if let Err(e) = env.add_template_owned(name.clone(), source) {
            return Err((name, e.to_string()));
        }
    }
    Ok(env)
}

/// The names a template's source includes with a literal name.
fn literal_includes(source: &str) -> Vec<String> {
    let mut names = Vec::new();
    let mut rest = source;
    while let Some(start) = rest.find("{%") {
        rest = &rest[start + 2..];
        let Some(end) = rest.find("%}") else { break };
        let tag = rest[..end].trim_start_matches(['-', '+']).trim();
        if let Some(arg) = tag.strip_prefix("include") {
            let arg = arg.trim();
            if let Some(q) = arg.chars().next().filter(|c| *c == '\'' || *c == '"') {
                if let Some(close) = arg[1..].find(q) {
                    names.push(arg[1..1 + close].to_string());
                }
            }
        }
        rest = &rest[end + 2..];
    }
    names
}

/// The variables the template `name` itself uses without defining: LangChain's
/// `input_variables` of a Jinja2 role template, which do not follow includes.
pub fn required_variables(env: &Environment<'static>, name: &str) -> BTreeSet<String> {
    env.get_template(name)
        .map(|t| t.undeclared_variables(false).into_iter().collect())
        .unwrap_or_default()
}

/// LangChain's missing-variables `KeyError`, as `str()` of it reads (a Python repr).
pub fn missing_variables_message(
    expected: &BTreeSet<String>,
    received: &[String],
    missing: &BTreeSet<String>,
) -> String {
    let set = missing
        .iter()
        .map(|m| py_repr_str(m))
        .collect::<Vec<_>>()
        .join(", ");
    let list = |items: &mut dyn Iterator<Item = &String>| {
        format!(
            "[{}]",
            items.map(|s| py_repr_str(s)).collect::<Vec<_>>().join(", ")
        )
    };
    let first = missing.iter().next().cloned().unwrap_or_default();
    let message = format!(
        "Input to ChatPromptTemplate is missing variables {{{set}}}.  Expected: {} Received: {}\n\
         Note: if you intended {{{first}}} to be part of the string and not a variable, please \
         escape it with double curly braces like: '{{{{{first}}}}}'.\n\
         For troubleshooting, visit: \
         https://python.langchain.com/docs/troubleshooting/errors/INVALID_PROMPT_INPUT ",
        list(&mut expected.iter()),
        list(&mut received.iter()),
    );
    py_repr_str(&message)
}

/// Render the template `name` with `inputs`.
pub fn render(
    env: &Environment<'static>,
    name: &str,
    inputs: &serde_json::Map<String, serde_json::Value>,
) -> Result<String, RenderError> {
    let template = env
        .get_template(name)
        .map_err(|e| RenderError::Template(e.to_string()))?;
    let ctx = Value::from_serialize(inputs);
    template.render(ctx).map_err(|e| {
        let mut text = e.to_string();
        if let Some(detail) = e.detail() {
            if !text.contains(detail) {
                text = format!("{text}: {detail}");
            }
        }
        RenderError::Template(text)
    })
}

/// Inputs as the list LangChain reports (`Received: [...]`), in request order.
pub fn received(inputs: &serde_json::Map<String, serde_json::Value>) -> Vec<String> {
    inputs.keys().cloned().collect()
}

/// Every template a set of prompt templates needs, by name (for checks at load time).
pub fn unresolved_includes(
    env: &Environment<'static>,
    names: &[String],
) -> BTreeMap<String, String> {
    let mut missing = BTreeMap::new();
    for name in names {
        if let Ok(template) = env.get_template(name) {
            for include in literal_includes(template.source()) {
                if env.get_template(&include).is_err() {
                    missing.insert(include, name.clone());
                }
            }
        }
    }
    missing
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn env(templates: &[(&str, &str)]) -> Environment<'static> {
        environment(
            templates
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string())),
        )
        .unwrap()
    }

    fn inputs(v: serde_json::Value) -> serde_json::Map<String, serde_json::Value> {
        v.as_object().unwrap().clone()
    }

    #[test]
    fn renders_like_jinja2() {
        let e = env(&[(
            "t",
            "{{ name }} {{ items }} {{ flag }} {{ none }} {{ n }} {{ f }} {{ m }}\n",
        )]);
        let out = render(
            &e,
            "t",
            &inputs(
                json!({"name": "<b>", "items": ["a", "it's"], "flag": true, "none": null,
                           "n": 20, "f": 1.5, "m": {"k": [1, false]}}),
            ),
        )
        .unwrap();
        assert_eq!(
            out,
            "<b> ['a', \"it's\"] True None 20 1.5 {'k': [1, False]}"
        );
    }

    #[test]
    fn undefined_renders_as_jinja2_undefined() {
        let e = env(&[
            (
                "t",
                "Hi {{ name }}!{% if libs %}L{% endif %}{% for x in xs %}{{ x }}{% endfor %}",
            ),
            ("a", "Hi {{ user.name }}"),
        ]);
        assert_eq!(render(&e, "t", &inputs(json!({}))).unwrap(), "Hi !");
        // An attribute of an undefined value is an error in Jinja2 too.
        let err = render(&e, "a", &inputs(json!({}))).unwrap_err();
        assert!(matches!(err, RenderError::Template(_)), "{err:?}");
        assert_eq!(
            render(&e, "a", &inputs(json!({"user": {}}))).unwrap(),
            "Hi "
        );
    }

    #[test]
    fn required_variables_are_the_templates_own_not_its_includes() {
        let e = env(&[
            (
                "p",
                "{% include 'part.jinja' %} {{ a }} {% for x in xs %}{{ x }}{% endfor %}",
            ),
            ("part.jinja", "{{ b }}{% set c = 1 %}{{ c }}"),
        ]);
        let vars = required_variables(&e, "p");
        assert_eq!(
            vars.into_iter().collect::<Vec<_>>(),
            vec!["a".to_string(), "xs".into()]
        );
        assert_eq!(
            render(&e, "p", &inputs(json!({"a": 1, "xs": [2]}))).unwrap(),
            "1 1 2"
        );
    }

    #[test]
    fn includes_resolve_only_to_loaded_templates() {
        let e = env(&[("p", "{% include '/etc/passwd' %}")]);
        assert!(render(&e, "p", &inputs(json!({}))).is_err());
        let missing = unresolved_includes(&e, &["p".to_string()]);
        assert_eq!(missing.get("/etc/passwd").map(String::as_str), Some("p"));
    }

    #[test]
    fn runaway_templates_run_out_of_fuel() {
        let e = env(&[(
            "p",
            "{% for a in range(10000) %}{% for b in range(10000) %}{% endfor %}{% endfor %}",
        )]);
        assert!(render(&e, "p", &inputs(json!({}))).is_err());
    }

    #[test]
    fn missing_variables_read_like_langchains_key_error() {
        let expected: BTreeSet<String> = ["age".to_string(), "name".to_string()].into();
        let missing: BTreeSet<String> = ["age".to_string()].into();
        let m = missing_variables_message(&expected, &["name".to_string()], &missing);
        assert!(m.starts_with(
            "\"Input to ChatPromptTemplate is missing variables {'age'}.  Expected: ['age', 'name'] Received: ['name']"
        ), "{m}");
        assert!(m.ends_with('"'));
        assert!(m.contains("\\nNote: if you intended {age}"));
    }
}
