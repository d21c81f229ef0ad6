//! The two listeners: the API (public) and the metrics port (Prometheus, never on the API port).

use std::net::SocketAddr;
use std::time::Duration;

use actix_web::dev::{Server, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::{web, App, HttpResponse, HttpServer};

use super::edge::edge;
use crate::api;
use crate::chaos::{self, ChaosTargets};
use crate::config::Settings;
use crate::state::AppState;
use crate::telemetry;

/// Running servers and where they listen.
pub struct Servers {
    /// The API server future; completes when the server has stopped.
    pub api: Server,
    /// Handle to stop the API server.
    pub api_handle: ServerHandle,
    /// Bound API addresses.
    pub api_addrs: Vec<SocketAddr>,
    /// The metrics server future.
    pub metrics: Server,
    /// Handle to stop the metrics server.
    pub metrics_handle: ServerHandle,
    /// Bound metrics addresses.
    pub metrics_addrs: Vec<SocketAddr>,
}

/// Bind and start both servers.
pub fn start(
    state: web::Data<AppState>,
    settings: &Settings,
    chaos_targets: ChaosTargets,
) -> std::io::Result<Servers> {
    let workers = match settings.http.workers {
        0 => std::thread::available_parallelism().map_or(2, |n| n.get()),
        n => n,
    };
    let api_state = state.clone();
    let api = HttpServer::new(move || {
        App::new()
            .app_data(api_state.clone())
            .wrap(from_fn(edge))
            .configure(api::configure)
            .default_service(web::to(api::not_found))
    })
    .workers(workers)
    .disable_signals()
    .shutdown_timeout(settings.http.shutdown_timeout_s)
    .tcp_nodelay(true)
    .on_connect(crate::http::disconnect::on_connect)
    // A FIN from the client means it is gone (see `http::disconnect`): drop the request's
    // handler, and with it the model call it may still be waiting on.
    .h1_allow_half_closed(false)
    .keep_alive(Duration::from_secs(settings.http.keep_alive_s))
    .max_connections(settings.http.max_connections_per_worker)
    .backlog(4096)
    .bind((
        settings.fastapi.api_host.as_str(),
        settings.fastapi.api_port,
    ))?;
    let api_addrs = api.addrs();
    let api = api.run();

    let chaos_settings = settings.clone();
    let faults = state.faults.clone().unwrap_or_default();
    let metrics = HttpServer::new(move || {
        let (settings, targets, faults) = (
            chaos_settings.clone(),
            chaos_targets.clone(),
            faults.clone(),
        );
        App::new()
            .app_data(state.clone())
            .configure(move |cfg| chaos::configure(cfg, &settings, targets, faults))
            .default_service(web::get().to(metrics_endpoint))
    })
    .workers(1)
    .disable_signals()
    .shutdown_timeout(1)
    .tcp_nodelay(true)
    .bind((
        settings.fastapi.metrics_host.as_str(),
        settings.fastapi.metrics_port,
    ))?;
    let metrics_addrs = metrics.addrs();
    let metrics = metrics.run();
    Ok(Servers {
        api_handle: api.handle(),
        api,
        api_addrs,
        metrics_handle: metrics.handle(),
        metrics,
        metrics_addrs,
    })
}

/// Prometheus exposition on any GET path, as the original's `start_http_server`.
async fn metrics_endpoint() -> HttpResponse {
    match telemetry::handle() {
        Some(handle) => HttpResponse::Ok()
            .content_type("text/plain; version=0.0.4; charset=utf-8")
            .body(telemetry::render(&handle)),
        None => HttpResponse::ServiceUnavailable().body("metrics recorder not installed"),
    }
}
