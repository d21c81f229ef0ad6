//! Running the gateway: start the actor tree and the servers, serve until SIGTERM, drain, exit.

use std::process::ExitCode;
use std::sync::Arc;

use crate::proxy::abuse::AbuseDetector;

use actix_web::web;
use serde_json::{json, Map, Value};

use crate::auth::Authenticator;
use crate::chaos::ChaosTargets;
use crate::config::Settings;
use crate::docs_search::DocsSearch;
use crate::faults::Faults;
use crate::models::registry::Providers;
use crate::prompts::PromptRegistry;
use crate::proxy::Upstreams;
use crate::readiness::Readiness;
use crate::state::AppState;
use crate::{chaos, http, logging, runtime, telemetry};

/// Exit code when startup fails after the settings were accepted (a port in use, ...).
pub const EXIT_STARTUP_FAILED: u8 = 1;
/// Exit code when the actor tree gave up (restart budget exhausted).
pub const EXIT_SUPERVISOR_GAVE_UP: u8 = 3;

fn log(level: &str, message: &str, fields: Value) {
    let fields = match fields {
        Value::Object(map) => map,
        _ => Map::new(),
    };
    logging::write_record(
        level,
        "main",
        message,
        fields.iter().map(|(k, v)| (k.as_str(), v)),
    );
}

/// Serve until SIGTERM/SIGINT (exit 0 after draining) or until the actor tree gives up
/// (exit [`EXIT_SUPERVISOR_GAVE_UP`]).
pub async fn run(settings: Settings) -> ExitCode {
    if let Err(e) = telemetry::install() {
        log("error", "metrics recorder failed", json!({ "error": e }));
        return ExitCode::from(EXIT_STARTUP_FAILED);
    }
    let settings = Arc::new(settings);
    // Build the tokenizer's tables now rather than on the first code suggestion.
    let warm = std::time::Instant::now();
    if crate::code_suggestions::tokens::warm_up() {
        log(
            "info",
            "tokenizer ready",
            json!({ "duration_s": warm.elapsed().as_secs_f64() }),
        );
    }
    let tree = match runtime::start(&settings).await {
        Ok(tree) => tree,
        Err(e) => {
            log("error", "startup failed", json!({ "error": e }));
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let providers = match Providers::from_settings(&settings) {
        Ok(p) => Arc::new(p),
        Err(e) => {
            log("error", "startup failed", json!({ "error": e }));
            tree.root.stop(None);
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let prompts_dir = crate::prompts::definitions_dir(&settings.prompts.dir);
    let prompts = match PromptRegistry::load(&prompts_dir, settings.default_prompts.clone()) {
        Ok(prompts) => prompts,
        Err(e) => {
            log(
                "error",
                "prompt definitions cannot be loaded",
                json!({ "dir": prompts_dir.display().to_string(), "error": e.to_string() }),
            );
            tree.root.stop(None);
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let quotas = match crate::quota::Quotas::new(&settings, tree.root.clone()) {
        Ok(quotas) => Arc::new(quotas),
        Err(e) => {
            log("error", "startup failed", json!({ "error": e }));
            tree.root.stop(None);
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    log(
        "info",
        "prompt definitions loaded",
        json!({ "dir": prompts_dir.display().to_string(), "prompts": prompts.len() }),
    );
    let upstreams = match Upstreams::from_settings(&settings, providers.google_auth()) {
        Ok(upstreams) => upstreams,
        Err(e) => {
            log(
                "error",
                "proxy client cannot be built",
                json!({ "error": e.to_string() }),
            );
            tree.root.stop(None);
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let auth = Authenticator::from_settings(&settings, tree.jwks.clone());
    let docs_search = match DocsSearch::from_settings(&settings, providers.google_auth()) {
        Ok(search) => search,
        Err(e) => {
            log(
                "error",
                "search client cannot be built",
                json!({ "error": e }),
            );
            tree.root.stop(None);
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let state = web::Data::new(AppState {
        settings: Arc::clone(&settings),
        auth: Arc::new(auth),
        requests: tree.requests.clone(),
        readiness: Arc::new(Readiness::from_settings(&settings)),
        providers,
        faults: chaos::active(&settings).then(Faults::default),
        quotas,
        prompts: Arc::new(prompts),
        upstreams: Arc::new(upstreams),
        abuse: Arc::new(AbuseDetector::from_settings(&settings.abuse_detection)),
        docs_search: Arc::new(docs_search),
    });
    let abuse = Arc::clone(&state.abuse);
    let targets = ChaosTargets {
        root: tree.root.clone(),
        requests: tree.requests.clone(),
    };
    let servers = match http::server::start(state, &settings, targets) {
        Ok(servers) => servers,
        Err(e) => {
            log(
                "error",
                "cannot listen",
                json!({
                    "error": e.to_string(),
                    "api": format!("{}:{}", settings.fastapi.api_host, settings.fastapi.api_port),
                    "metrics": format!("{}:{}", settings.fastapi.metrics_host, settings.fastapi.metrics_port),
                }),
            );
            tree.root.stop(None);
            return ExitCode::from(EXIT_STARTUP_FAILED);
        }
    };
    let addr_list = |addrs: &[std::net::SocketAddr]| {
        addrs
            .iter()
            .map(|a| a.to_string())
            .collect::<Vec<_>>()
            .join(",")
    };
    log(
        "info",
        "listening",
        json!({
            "api_addr": addr_list(&servers.api_addrs),
            "metrics_addr": addr_list(&servers.metrics_addrs),
            "environment": settings.environment,
            "mock_model_responses": settings.mock_model_responses,
            "pid": std::process::id(),
        }),
    );
    if settings.auth.bypass_external {
        log(
            "critical",
            "AIGW_AUTH__BYPASS_EXTERNAL is on: every request is served without authentication",
            json!({}),
        );
    }
    if settings.auth.bypass_external_with_header {
        log(
            "critical",
            "AIGW_AUTH__BYPASS_EXTERNAL_WITH_HEADER is on: a request with Bypass-Auth: true is served without authentication",
            json!({}),
        );
    }
    if settings.auth.bypass_jwt_signature {
        log(
            "critical",
            "AIGW_AUTH__BYPASS_JWT_SIGNATURE is on: token signatures are not verified",
            json!({}),
        );
    }

    let api_handle = servers.api_handle.clone();
    let metrics_handle = servers.metrics_handle.clone();
    let api = actix_web::rt::spawn(servers.api);
    let metrics = actix_web::rt::spawn(servers.metrics);
    let mut root_done = tree.root_done;

    // Whether the tree already stopped: its handle must not be polled again once it completed.
    let mut tree_stopped = false;
    // When a signalled shutdown must be over: the servers' drain and the abuse checks after it
    // share this one deadline.
    let mut drain_deadline = None;
    let code = tokio::select! {
        signal = shutdown_signal() => {
            drain_deadline = Some(
                tokio::time::Instant::now()
                    + std::time::Duration::from_secs(settings.http.shutdown_timeout_s),
            );
            log("info", "shutting down: draining in-flight requests", json!({
                "signal": signal,
                "deadline_s": settings.http.shutdown_timeout_s,
            }));
            // Stop accepting at once; in-flight requests get up to the deadline.
            tokio::join!(api_handle.stop(true), metrics_handle.stop(true));
            ExitCode::SUCCESS
        }
        _ = &mut root_done => {
            tree_stopped = true;
            log("critical", "actor tree stopped: restart budget exhausted", json!({}));
            tokio::join!(api_handle.stop(false), metrics_handle.stop(false));
            ExitCode::from(EXIT_SUPERVISOR_GAVE_UP)
        }
    };
    let _ = api.await;
    let _ = metrics.await;
    // Abuse checks of requests already answered run on this runtime; let them finish within
    // what is left of the drain deadline. (Without a signal the actor tree is gone, and with it
    // the request actors a check needs: nothing to wait for.)
    let checks = abuse.in_flight();
    if let (Some(deadline), true) = (drain_deadline, checks > 0) {
        log(
            "info",
            "shutting down: waiting for abuse checks",
            json!({ "in_flight": checks }),
        );
        if tokio::time::timeout_at(deadline, abuse.drained())
            .await
            .is_err()
        {
            log(
                "warning",
                "abuse checks still running at the shutdown deadline were dropped",
                json!({ "in_flight": abuse.in_flight() }),
            );
        }
    }
    if !tree_stopped {
        tree.root.stop(None);
        let _ = tokio::time::timeout(std::time::Duration::from_secs(2), root_done).await;
    }
    log("info", "stopped", json!({}));
    code
}

async fn shutdown_signal() -> &'static str {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        // Without signal handlers the process can only be killed; keep serving.
        std::future::pending::<()>().await;
        return "none";
    };
    tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    }
}
