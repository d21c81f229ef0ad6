//! The prompt registry: prompt definitions on disk, version constraints, templates.
//!
//! GitLab calls registry prompts by id (`POST /v1/prompts/generate_commit_message`), optionally
//! with a version constraint and a model; the registry finds the definition, checks nothing about
//! the caller (that is the endpoint's job, with [`registry::Entry`]'s unit primitives) and renders
//! the messages the model is sent.
//!
//! - [`definition`]: the YAML schema and reading `config/prompts/`;
//! - [`version`]: Poetry-style version constraints resolved with `semver`;
//! - [`render`]: the sandboxed, strict minijinja environment;
//! - [`registry`]: lookup by id, type and constraint, and rendering.

pub mod definition;
pub mod registry;
pub mod render;
pub mod version;

use std::path::PathBuf;

pub use registry::{Entry, PromptRegistry, ResolveError};

/// Where the definitions are read from: `AIGW_PROMPTS__DIR` when set; else `config/prompts` in
/// the working directory, `/etc/ai-gateway/prompts` (the container image), or the source tree's
/// copy, whichever exists first.
pub fn definitions_dir(configured: &str) -> PathBuf {
    if !configured.is_empty() {
        return PathBuf::from(configured);
    }
    let candidates = [
        PathBuf::from("config/prompts"),
        PathBuf::from("/etc/ai-gateway/prompts"),
        PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/config/prompts")),
    ];
    candidates
        .iter()
        .find(|p| p.is_dir())
        .cloned()
        .unwrap_or_else(|| candidates[0].clone())
}
