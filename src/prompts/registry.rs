//! The prompt registry: every definition loaded once at startup, looked up by id, type and
//! version constraint, rendered into chat messages.
//!
//! Lookup follows the original: the type is the request's `model_metadata.name` when given, else
//! `AIGW_DEFAULT_PROMPTS[prompt_id]`, else `base`; the key `<prompt_id>/<type>` must exist (else
//! "not found"); of its versions the highest that satisfies the constraint wins. The registry is
//! immutable after startup and shared by every worker without a lock.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;

use minijinja::Environment;
use semver::Version;

use super::definition::{load_dir, Catalogue, LoadError, PromptDefinition};
use super::render::{self, RenderError};
use super::version::Constraint;
use crate::models::Message;

/// The prompt ids whose class in the original is not the plain prompt (the ReAct agent): the
/// generic endpoint refuses them.
pub const AGENT_PROMPTS: &[&str] = &["chat/react"];

/// One version of one prompt, ready to render.
#[derive(Debug)]
pub struct Entry {
    /// `<prompt_id>/<type>`.
    pub key: String,
    /// Its version.
    pub version: Version,
    /// The definition.
    pub definition: PromptDefinition,
    /// Role and template name, in message order.
    roles: Vec<(String, String)>,
    /// Inputs the templates need.
    pub required: BTreeSet<String>,
}

/// Why a lookup failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ResolveError {
    /// The constraint does not parse.
    InvalidConstraint,
    /// No prompt has this id and type.
    NotFound,
    /// The prompt exists, but none of its versions satisfies the constraint.
    NoMatchingVersion,
}

/// All prompts.
pub struct PromptRegistry {
    entries: HashMap<String, BTreeMap<Version, Arc<Entry>>>,
    env: Environment<'static>,
    default_prompts: BTreeMap<String, String>,
}

impl std::fmt::Debug for PromptRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PromptRegistry")
            .field("prompts", &self.entries.len())
            .field("default_prompts", &self.default_prompts)
            .finish()
    }
}

fn template_name(key: &str, version: &Version, role: &str) -> String {
    format!("{key}/{version}.yml#{role}")
}

impl PromptRegistry {
    /// Load every definition under `dir`.
    pub fn load(
        dir: &Path,
        default_prompts: BTreeMap<String, String>,
    ) -> Result<PromptRegistry, LoadError> {
        Self::from_catalogue(load_dir(dir)?, default_prompts)
    }

    /// Build from loaded files: compile every template, check that literal includes resolve,
    /// and work out the inputs each prompt needs.
    pub fn from_catalogue(
        catalogue: Catalogue,
        default_prompts: BTreeMap<String, String>,
    ) -> Result<PromptRegistry, LoadError> {
        let mut sources: Vec<(String, String)> = catalogue.templates.into_iter().collect();
        let mut origin: HashMap<String, String> = HashMap::new();
        for d in &catalogue.definitions {
            for (role, template) in &d.definition.prompt_template {
                let name = template_name(&d.key, &d.version, role);
                origin.insert(name.clone(), d.file.clone());
                sources.push((name, template.clone()));
            }
        }
        let env = render::environment(sources).map_err(|(name, problem)| LoadError {
            path: origin.get(&name).cloned().unwrap_or(name),
            problem,
        })?;
        let mut entries: HashMap<String, BTreeMap<Version, Arc<Entry>>> = HashMap::new();
        for d in catalogue.definitions {
            let roles: Vec<(String, String)> = d
                .definition
                .prompt_template
                .iter()
                .map(|(role, _)| (role.clone(), template_name(&d.key, &d.version, role)))
                .collect();
            let names: Vec<String> = roles.iter().map(|(_, n)| n.clone()).collect();
            if let Some((include, _)) = render::unresolved_includes(&env, &names).pop_first() {
                return Err(LoadError {
                    path: d.file,
                    problem: format!("includes {include:?}, which is not a template file"),
                });
            }
            let required = names
                .iter()
                .flat_map(|n| render::required_variables(&env, n))
                .collect();
            let entry = Entry {
                key: d.key.clone(),
                version: d.version.clone(),
                definition: d.definition,
                roles,
                required,
            };
            entries
                .entry(d.key)
                .or_default()
                .insert(d.version, Arc::new(entry));
        }
        Ok(PromptRegistry {
            entries,
            env,
            default_prompts,
        })
    }

    /// How many prompt keys (`<id>/<type>`) are loaded.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether no prompt is loaded.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// The loaded keys, sorted.
    pub fn keys(&self) -> Vec<String> {
        let mut keys: Vec<String> = self.entries.keys().cloned().collect();
        keys.sort();
        keys
    }

    /// The type a lookup uses: the model named by the request, the configured default, `base`.
    pub fn prompt_type<'a>(&'a self, prompt_id: &str, model_name: Option<&'a str>) -> &'a str {
        model_name
            .or_else(|| self.default_prompts.get(prompt_id).map(String::as_str))
            .unwrap_or("base")
    }

    /// The best version of `prompt_id` for `constraint` (see the module docs).
    pub fn resolve(
        &self,
        prompt_id: &str,
        constraint: &str,
        model_name: Option<&str>,
    ) -> Result<Arc<Entry>, ResolveError> {
        let constraint =
            Constraint::parse(constraint).map_err(|_| ResolveError::InvalidConstraint)?;
        let key = format!("{prompt_id}/{}", self.prompt_type(prompt_id, model_name));
        let versions = self.entries.get(&key).ok_or(ResolveError::NotFound)?;
        let best = constraint
            .best(versions.keys())
            .ok_or(ResolveError::NoMatchingVersion)?;
        versions
            .get(best)
            .cloned()
            .ok_or(ResolveError::NoMatchingVersion)
    }

    /// Render `entry` with `inputs` into messages: a missing input is reported as LangChain
    /// does, before anything is rendered.
    pub fn render(
        &self,
        entry: &Entry,
        inputs: &serde_json::Map<String, serde_json::Value>,
    ) -> Result<Vec<Message>, RenderError> {
        let missing: BTreeSet<String> = entry
            .required
            .iter()
            .filter(|v| !inputs.contains_key(v.as_str()))
            .cloned()
            .collect();
        if !missing.is_empty() {
            return Err(RenderError::MissingVariables(
                render::missing_variables_message(
                    &entry.required,
                    &render::received(inputs),
                    &missing,
                ),
            ));
        }
        entry
            .roles
            .iter()
            .map(|(role, name)| {
                render::render(&self.env, name, inputs).map(|text| Message::new(role, text))
            })
            .collect()
    }

    /// Render the `role` template of `entry` alone with `inputs`, without the missing-input
    /// check: for agent prompts, whose templates are rendered once per conversation message with
    /// inputs of their own. `None` when the prompt has no template for `role`.
    pub fn render_role(
        &self,
        entry: &Entry,
        role: &str,
        inputs: &serde_json::Map<String, serde_json::Value>,
    ) -> Option<Result<String, RenderError>> {
        let (_, name) = entry.roles.iter().find(|(r, _)| r == role)?;
        Some(render::render(&self.env, name, inputs))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::prompts::definition::LoadedDefinition;
    use serde_json::json;

    fn def(up: &str, system: &str, user: &str) -> PromptDefinition {
        crate::prompts::definition::parse_definition(&format!(
            "name: t\nmodel:\n  name: claude-3-5-sonnet-20241022\n  params:\n    model_class_provider: anthropic\n\
             unit_primitives: [{up}]\nprompt_template:\n  system: {system:?}\n  user: {user:?}\n"
        ))
        .unwrap()
    }

    fn registry(defaults: &[(&str, &str)]) -> PromptRegistry {
        let mut c = Catalogue::default();
        for (key, version, user) in [
            ("test/base", "1.0.0", "v1.0.0 {{ name }}"),
            (
                "test/base",
                "1.1.0",
                "v1.1.0 {{ name }} {% include 'test/age.jinja' %}",
            ),
            ("test/base", "2.0.0", "v2.0.0 {{ name }}"),
            ("test/base", "2.1.0-rc.1", "v2.1.0-rc.1"),
            ("test/mistral", "1.0.0", "mistral {{ name }}"),
            ("test/vertex", "1.0.0", "vertex {{ name }}"),
        ] {
            c.definitions.push(LoadedDefinition {
                key: key.into(),
                version: Version::parse(version).unwrap(),
                definition: def("explain_code", "sys", user),
                file: format!("{key}/{version}.yml"),
            });
        }
        c.templates
            .insert("test/age.jinja".into(), "and {{ age }}".into());
        PromptRegistry::from_catalogue(
            c,
            defaults
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        )
        .unwrap()
    }

    fn user_text(r: &PromptRegistry, id: &str, c: &str, model: Option<&str>) -> String {
        let e = r.resolve(id, c, model).unwrap();
        let msgs = r
            .render(&e, json!({"name": "N", "age": 3}).as_object().unwrap())
            .unwrap();
        assert_eq!(msgs[0].role, "system");
        msgs[1].content.clone()
    }

    #[test]
    fn highest_matching_version_wins() {
        let r = registry(&[]);
        assert_eq!(user_text(&r, "test", "^1.0.0", None), "v1.1.0 N and 3");
        assert_eq!(user_text(&r, "test", "1.0.0", None), "v1.0.0 N");
        assert_eq!(user_text(&r, "test", "~1.0", None), "v1.0.0 N");
        assert_eq!(user_text(&r, "test", ">=1.0.0", None), "v2.0.0 N");
        assert_eq!(user_text(&r, "test", "^2.1.0-rc.1", None), "v2.1.0-rc.1");
        assert_eq!(
            r.resolve("test", "^3.0.0", None).unwrap_err(),
            ResolveError::NoMatchingVersion
        );
        assert_eq!(
            r.resolve("test", "^x", None).unwrap_err(),
            ResolveError::InvalidConstraint
        );
        assert_eq!(
            r.resolve("nope", "^1.0.0", None).unwrap_err(),
            ResolveError::NotFound
        );
    }

    #[test]
    fn model_variants_and_default_prompts_pick_the_type() {
        let r = registry(&[("test", "vertex")]);
        assert_eq!(user_text(&r, "test", "^1.0.0", None), "vertex N");
        assert_eq!(
            user_text(&r, "test", "^1.0.0", Some("mistral")),
            "mistral N"
        );
        assert_eq!(
            r.resolve("test", "^1.0.0", Some("gpt")).unwrap_err(),
            ResolveError::NotFound
        );
    }

    #[test]
    fn required_inputs_are_the_role_templates_own() {
        // LangChain's `input_variables`: what the role templates use themselves; a variable used
        // only in an included template is not required and renders empty when absent.
        let r = registry(&[]);
        let e = r.resolve("test", "^1.0.0", None).unwrap();
        assert_eq!(
            e.required.iter().cloned().collect::<Vec<_>>(),
            vec!["name".to_string()]
        );
        let msgs = r
            .render(&e, json!({"name": "N"}).as_object().unwrap())
            .unwrap();
        assert_eq!(msgs[1].content, "v1.1.0 N and ");
        let err = r
            .render(&e, json!({"age": 3}).as_object().unwrap())
            .unwrap_err();
        assert!(
            err.message()
                .contains("missing variables {'name'}.  Expected: ['name'] Received: ['age']"),
            "{err:?}"
        );
    }

    #[test]
    fn an_include_of_a_missing_file_stops_loading() {
        let mut c = Catalogue::default();
        c.definitions.push(LoadedDefinition {
            key: "x/base".into(),
            version: Version::new(1, 0, 0),
            definition: def("explain_code", "s", "{% include 'nope.jinja' %}"),
            file: "x/base/1.0.0.yml".into(),
        });
        let e = PromptRegistry::from_catalogue(c, BTreeMap::new()).unwrap_err();
        assert_eq!(e.path, "x/base/1.0.0.yml");
        assert!(e.problem.contains("nope.jinja"));
    }

    /// The inputs each shipped prompt requires, as LangChain computes them for the original's
    /// definitions (the variables its role templates use themselves, not their includes).
    const SHIPPED_REQUIRED: &[(&str, &[&str])] = &[
        ("categorize_question/base", &["previous_answer", "question"]),
        ("chat/build_reader/base", &[]),
        ("chat/commit_reader/base", &[]),
        ("chat/epic_reader/base", &[]),
        ("chat/explain_code/base", &[]),
        ("chat/explain_vulnerability/base", &[]),
        ("chat/fix_code/base", &[]),
        ("chat/issue_reader/base", &[]),
        ("chat/merge_request_reader/base", &[]),
        ("chat/refactor_code/base", &[]),
        ("chat/summarize_comments/base", &[]),
        ("chat/troubleshoot_job/base", &[]),
        ("chat/write_tests/base", &[]),
        ("code_suggestions/generations/base", &["user_instruction"]),
        ("code_suggestions/generations/claude_3", &[]),
        ("code_suggestions/generations/vertex", &["user_instruction"]),
        ("generate_commit_message/base", &["diff"]),
        ("generate_description/base", &["content", "template"]),
        (
            "resolve_vulnerability/base",
            &[
                "filename",
                "identifiers",
                "name",
                "source_code",
                "vulnerability_description",
                "vulnerable_code",
            ],
        ),
        ("summarize_new_merge_request/base", &["extracted_diff"]),
        ("summarize_review/base", &["draft_notes_content"]),
    ];

    #[test]
    fn the_shipped_definitions_load_and_render() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("config/prompts");
        let r = PromptRegistry::load(&dir, BTreeMap::new()).unwrap();
        for (key, required) in SHIPPED_REQUIRED {
            let entry = r.entries.get(*key).and_then(|v| v.values().last()).unwrap();
            let got: Vec<&str> = entry.required.iter().map(String::as_str).collect();
            assert_eq!(&got, required, "{key}");
        }
        // Every input any shipped prompt reads, the way clients send them.
        let all = json!({
            "tools": [{"name": "issue_reader", "description": "reads issues",
                       "example": "Action: issue_reader", "resource": "issues"}],
            "message": {"role": "user", "content": "hi", "context": null, "current_file": null,
                        "additional_context": null, "resource_content": null},
            "agent_scratchpad": [],
            "unavailable_resources": ["Pipelines"],
            "libraries": ["serde (1.0)"],
        });
        for key in r.keys() {
            let versions = r.entries.get(&key).unwrap();
            for entry in versions.values() {
                // Only what the prompt requires: the rest renders empty, as in the original.
                let mut inputs: serde_json::Map<String, serde_json::Value> = entry
                    .required
                    .iter()
                    .map(|v| (v.clone(), json!("x")))
                    .collect();
                if key.starts_with("chat/react/") {
                    inputs.extend(all.as_object().unwrap().clone());
                }
                let messages = r.render(entry, &inputs);
                assert!(messages.is_ok(), "{key} {}: {messages:?}", entry.version);
                // And with every input given.
                inputs.extend(all.as_object().unwrap().clone());
                assert!(r.render(entry, &inputs).is_ok(), "{key}");
            }
        }
        for id in [
            "generate_commit_message/base",
            "generate_description/base",
            "resolve_vulnerability/base",
            "summarize_review/base",
            "summarize_new_merge_request/base",
            "chat/explain_vulnerability/base",
            "chat/explain_code/base",
            "code_suggestions/generations/base",
            "categorize_question/base",
            "glab_ask_git_command/base",
            "measure_comment_temperature/base",
            "model_configuration/check/base",
            "model_configuration/check/mistral",
        ] {
            assert!(r.keys().contains(&id.to_string()), "{id} is shipped");
        }
    }
}
