//! Code-suggestion pre- and post-processing: the pure logic between an HTTP
//! request for a completion or a generation and the model call (spec section 5).
//!
//! Why a module of its own: everything here is deterministic text work (which
//! language is this file, how many tokens does this text take, how is the
//! prompt cut to fit the model, how is the model's answer cleaned up). Keeping
//! it free of HTTP, I/O and async means every rule of the original can be
//! unit- and property-tested in isolation, and the API layer only wires
//! request fields in and response fields out.
//!
//! What the original does with tree-sitter (import extraction, function
//! signatures, minimal-block trimming, syntax-error checks, comment-only
//! detection) is not reproduced: those steps are documented no-ops here, and
//! the token budgets they would have used go to the prompt body instead.
//!
//! - [`language`]: language detection from the file name / editor language id.
//! - [`language_server`]: PEP 440 version parsing and the language-server gate.
//! - [`bpe`]: the compact `p50k_base` BPE encoder.
//! - [`tokens`]: token counting and truncation with that BPE.
//! - [`prompt`]: the prompt builders (legacy Vertex, prefix-based, raw, generations).
//! - [`post`]: post-processing of model output.

pub mod bpe;
pub mod language;
pub mod language_server;
pub mod post;
pub mod prompt;
pub mod tokens;

#[cfg(test)]
mod proptests;
