//! Version 1 of the API: registry prompts and the provider proxies.

pub mod prompts;
pub mod proxy;

use actix_web::web;

/// Register the v1 routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    prompts::configure(cfg);
    proxy::configure(cfg);
}
