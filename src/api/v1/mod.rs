//! Version 1 of the API: chat invokables, the user access token, registry prompts and the
//! provider proxies.

pub mod chat;
pub mod code;
pub mod prompts;
pub mod proxy;

use actix_web::web;

/// Register the v1 routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    chat::configure(cfg);
    code::configure(cfg);
    prompts::configure(cfg);
    proxy::configure(cfg);
}
