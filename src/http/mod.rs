//! The HTTP edge: servers, the middleware every request passes, error and access-log shapes.

pub mod access_log;
pub mod body;
pub mod disconnect;
pub mod edge;
pub mod error;
pub mod headers;
pub mod server;
