//! Prompt definitions on disk: the YAML schema and reading a definitions directory.
//!
//! The layout is the original's: `<prompt_id>/<type>/<semver>.yml`, for example
//! `chat/explain_code/base/1.0.0.yml`, whose registry key is `chat/explain_code/base` (the prompt
//! `chat/explain_code`, type `base`). Every other file under the root (`*.jinja`, `*.xml`, ...) is
//! a template that prompt templates may `{% include %}` by its path relative to the root.
//!
//! The YAML schema refuses unknown keys, as the original's pydantic model does, and a file that
//! does not parse stops startup with a message naming it: a broken prompt must never be found
//! out by the first user who asks for it.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};

use semver::Version;
use serde::Deserialize;

use crate::auth::unit_primitives;

/// Which client the original builds for the prompt's model.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ModelClass {
    /// Anthropic's Messages API.
    Anthropic,
    /// An OpenAI-compatible endpoint (LiteLLM in the original).
    Litellm,
}

/// `model.params`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelParams {
    /// `anthropic` or `litellm`.
    pub model_class_provider: ModelClass,
    /// Sampling temperature.
    pub temperature: Option<f64>,
    /// Nucleus sampling.
    pub top_p: Option<f64>,
    /// Top-k sampling.
    #[serde(default, deserialize_with = "yaml11_int")]
    pub top_k: Option<u32>,
    /// Largest number of tokens to generate.
    #[serde(default, deserialize_with = "yaml11_int")]
    pub max_tokens: Option<u32>,
    /// Retries of the model client (default 1).
    #[serde(default, deserialize_with = "yaml11_int")]
    pub max_retries: Option<u32>,
    /// LiteLLM's provider name (`vertex_ai`, ...).
    pub custom_llm_provider: Option<String>,
    /// Extra headers of the Anthropic client.
    pub default_headers: Option<BTreeMap<String, String>>,
}

/// An integer as YAML 1.1 (the original's PyYAML) reads it: `2_048` is 2048.
fn yaml11_int<'de, D>(deserializer: D) -> Result<Option<u32>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    use serde::de::Error as _;
    match Option::<serde_yaml::Value>::deserialize(deserializer)? {
        None | Some(serde_yaml::Value::Null) => Ok(None),
        Some(serde_yaml::Value::Number(n)) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(Some)
            .ok_or_else(|| D::Error::custom(format!("invalid integer {n}"))),
        Some(serde_yaml::Value::String(s)) => s
            .replace('_', "")
            .parse()
            .map(Some)
            .map_err(|_| D::Error::custom(format!("invalid integer {s:?}"))),
        Some(other) => Err(D::Error::custom(format!("invalid integer {other:?}"))),
    }
}

/// `model`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// The model name (`claude-3-5-sonnet-20241022`, ...).
    pub name: String,
    /// Client and sampling parameters.
    pub params: ModelParams,
}

/// `params`: call options.
#[derive(Debug, Clone, Default, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptParams {
    /// Stop sequences.
    pub stop: Option<Vec<String>>,
    /// Request timeout, seconds.
    pub timeout: Option<f64>,
    /// Vertex region for Claude on Vertex.
    pub vertex_location: Option<String>,
}

/// One prompt definition file.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PromptDefinition {
    /// A human name.
    pub name: String,
    /// The model that answers.
    pub model: ModelConfig,
    /// The unit primitives a caller must hold, all of them.
    pub unit_primitives: Vec<String>,
    /// Role → template, in message order.
    #[serde(deserialize_with = "ordered_roles")]
    pub prompt_template: Vec<(String, String)>,
    /// Call options.
    #[serde(default)]
    pub params: Option<PromptParams>,
}

/// The roles a template may have.
pub const ROLES: &[&str] = &["system", "user", "assistant"];

fn ordered_roles<'de, D>(deserializer: D) -> Result<Vec<(String, String)>, D::Error>
where
    D: serde::Deserializer<'de>,
{
    let mapping = serde_yaml::Mapping::deserialize(deserializer)?;
    let mut roles = Vec::with_capacity(mapping.len());
    for (k, v) in mapping {
        let (Some(role), Some(template)) = (k.as_str(), v.as_str()) else {
            return Err(serde::de::Error::custom(
                "prompt_template must map role names to template strings",
            ));
        };
        if !ROLES.contains(&role) {
            return Err(serde::de::Error::custom(format!(
                "unknown role {role:?} in prompt_template (expected system, user or assistant)"
            )));
        }
        roles.push((role.to_string(), template.to_string()));
    }
    if roles.is_empty() {
        return Err(serde::de::Error::custom("prompt_template is empty"));
    }
    Ok(roles)
}

/// A definition with where it came from.
#[derive(Debug, Clone)]
pub struct LoadedDefinition {
    /// Registry key: `<prompt_id>/<type>`.
    pub key: String,
    /// The file's version.
    pub version: Version,
    /// The definition.
    pub definition: PromptDefinition,
    /// The file, relative to the root (for messages).
    pub file: String,
}

/// Everything under a definitions directory.
#[derive(Debug, Clone, Default)]
pub struct Catalogue {
    /// Every definition file.
    pub definitions: Vec<LoadedDefinition>,
    /// Every other file, by path relative to the root (`chat/explain_code/user.jinja`).
    pub templates: BTreeMap<String, String>,
}

/// A definitions directory that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// The file or directory at fault.
    pub path: String,
    /// What is wrong with it.
    pub problem: String,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.problem)
    }
}

impl std::error::Error for LoadError {}

fn relative(root: &Path, path: &Path) -> String {
    path.strip_prefix(root)
        .unwrap_or(path)
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

fn walk(dir: &Path, out: &mut Vec<PathBuf>) -> Result<(), LoadError> {
    let entries = std::fs::read_dir(dir).map_err(|e| LoadError {
        path: dir.display().to_string(),
        problem: e.to_string(),
    })?;
    let mut paths: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    paths.sort();
    for path in paths {
        if path.is_dir() {
            walk(&path, out)?;
        } else {
            out.push(path);
        }
    }
    Ok(())
}

/// Parse one definition file's text.
pub fn parse_definition(text: &str) -> Result<PromptDefinition, String> {
    let definition: PromptDefinition = serde_yaml::from_str(text).map_err(|e| e.to_string())?;
    for up in &definition.unit_primitives {
        if !unit_primitives::is_known(up) {
            return Err(format!("unknown unit primitive {up:?}"));
        }
    }
    Ok(definition)
}

/// Read every definition and template under `root`.
pub fn load_dir(root: &Path) -> Result<Catalogue, LoadError> {
    if !root.is_dir() {
        return Err(LoadError {
            path: root.display().to_string(),
            problem: "not a directory".into(),
        });
    }
    let mut files = Vec::new();
    walk(root, &mut files)?;
    let mut catalogue = Catalogue::default();
    for path in files {
        let rel = relative(root, &path);
        let fail = |problem: String| LoadError {
            path: rel.clone(),
            problem,
        };
        let text = std::fs::read_to_string(&path).map_err(|e| fail(e.to_string()))?;
        let is_definition = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yml" | "yaml")
        );
        if !is_definition {
            catalogue.templates.insert(rel, text);
            continue;
        }
        let (key, file_name) = rel.rsplit_once('/').ok_or_else(|| {
            fail("a definition must be at <prompt_id>/<type>/<version>.yml".into())
        })?;
        if !key.contains('/') {
            return Err(fail(
                "a definition must be at <prompt_id>/<type>/<version>.yml".into(),
            ));
        }
        let stem = file_name
            .rsplit_once('.')
            .map(|(stem, _)| stem)
            .unwrap_or(file_name);
        let version = Version::parse(stem)
            .map_err(|e| fail(format!("the file name must be a semantic version: {e}")))?;
        let definition = parse_definition(&text).map_err(fail)?;
        catalogue.definitions.push(LoadedDefinition {
            key: key.to_string(),
            version,
            definition,
            file: rel,
        });
    }
    Ok(catalogue)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: Test
model:
  name: claude-3-5-sonnet-20241022
  params:
    model_class_provider: anthropic
    temperature: 0.0
    max_tokens: 2_048
unit_primitives:
  - explain_code
prompt_template:
  user: "Hi {{name}}"
  system: "You are helpful"
params:
  timeout: 60
  stop: ["</x>"]
"#;

    #[test]
    fn definitions_parse_with_roles_in_file_order() {
        let d = parse_definition(GOOD).unwrap();
        assert_eq!(d.model.params.model_class_provider, ModelClass::Anthropic);
        assert_eq!(d.model.params.max_tokens, Some(2048));
        assert_eq!(d.prompt_template[0].0, "user");
        assert_eq!(d.prompt_template[1].0, "system");
        assert_eq!(d.params.unwrap().stop.unwrap(), vec!["</x>".to_string()]);
    }

    #[test]
    fn unknown_keys_roles_and_unit_primitives_are_refused() {
        let extra = GOOD.replace("name: Test", "name: Test\nsurprise: 1");
        assert!(parse_definition(&extra).unwrap_err().contains("surprise"));
        let role = GOOD.replace("system: \"You", "tool: \"You");
        assert!(parse_definition(&role)
            .unwrap_err()
            .contains("unknown role"));
        let up = GOOD.replace("- explain_code", "- make_coffee");
        assert!(parse_definition(&up).unwrap_err().contains("make_coffee"));
    }

    #[test]
    fn a_directory_loads_definitions_and_templates() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("chat/explain_code/base");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("1.0.0.yml"), GOOD).unwrap();
        std::fs::write(dir.path().join("chat/explain_code/user.jinja"), "x").unwrap();
        let c = load_dir(dir.path()).unwrap();
        assert_eq!(c.definitions.len(), 1);
        assert_eq!(c.definitions[0].key, "chat/explain_code/base");
        assert_eq!(c.definitions[0].version, Version::new(1, 0, 0));
        assert!(c.templates.contains_key("chat/explain_code/user.jinja"));

        std::fs::write(d.join("latest.yml"), GOOD).unwrap();
        let e = load_dir(dir.path()).unwrap_err();
        assert_eq!(e.path, "chat/explain_code/base/latest.yml");
    }
}
