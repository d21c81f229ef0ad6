//! Version 1 of the API: the user-token endpoint, chat invokables, registry prompts, the
//! provider proxies and the documentation search.

pub mod chat;
pub mod code;
pub mod prompts;
pub mod proxy;
pub mod search;
pub mod x_ray;

use actix_web::web;

/// Register the v1 routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    code::configure(cfg);
    chat::configure(cfg);
    prompts::configure(cfg);
    proxy::configure(cfg);
    search::configure(cfg);
    x_ray::configure(cfg);
}
