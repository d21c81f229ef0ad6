//! Version 2 of the API outside code suggestions (`/v2/code/*` lives in `api::code`): Duo Chat's
//! ReAct agent.

pub mod chat;

use actix_web::web;

/// Register the v2 routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    chat::configure(cfg);
}
