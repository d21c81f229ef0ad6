//! ai-gateway: a wire-compatible, actor-based Rust re-implementation of GitLab's AI Gateway.
//!
//! The request path: `http::edge` (correlation id, CORS, access log, metrics, authentication)
//! → `api` (one module per endpoint family) → prompt building → a request actor owning the
//! model call (`ai_gateway_actors::request`) → a provider module (`models`) → the response
//! body. See `DESIGN.md` in the shared folder for the shape of the house.

pub mod api;
pub mod app;
pub mod auth;
pub mod chaos;
pub mod chat;
pub mod code_suggestions;
pub mod config;
pub mod docs_search;
pub mod faults;
pub mod http;
pub mod inference;
pub mod logging;
pub mod models;
pub mod prompts;
pub mod proxy;
pub mod pyjson;
pub mod quota;
pub mod readiness;
pub mod runtime;
pub mod state;
pub mod telemetry;
pub mod tls;
