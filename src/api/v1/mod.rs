//! The v1 API family.

pub mod code;

use actix_web::web;

/// Register the v1 routes.
pub fn configure(cfg: &mut web::ServiceConfig) {
    code::configure(cfg);
}
