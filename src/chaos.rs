//! The chaos admin API: kill actors, inject provider faults. Off by default.
//!
//! Mounted only on the metrics listener (never the public port) and only with
//! `AIGW_CHAOS__ENABLED=true`. Every call needs `Authorization: Bearer <AIGW_CHAOS__TOKEN>`
//! (401 without it). With `AIGW_ENVIRONMENT=production` every call is refused (403) unless
//! `AIGW_CHAOS__ALLOW_IN_PRODUCTION=true`.
//!
//! | route | effect |
//! |---|---|
//! | `POST /chaos/kill/{kind}` | kill the actors of a kind: `jwks`, `quota`, `requests` (the request subtree), `request` (one in-flight request actor) |
//! | `POST /chaos/faults` | add a provider fault ([`crate::faults::Fault`]) |
//! | `GET /chaos/faults` | list faults |
//! | `DELETE /chaos/faults` | clear all faults |
//!
//! Each kill and each injected fault is logged and counted in `chaos_faults_injected_total{kind}`.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::{from_fn, Next};
use actix_web::{web, HttpResponse};
use ai_gateway_actors::ractor::ActorRef;
use ai_gateway_actors::request::RequestSpawner;
use ai_gateway_actors::supervisor::{self, SupervisorMsg};
use serde_json::json;

use crate::config::Settings;
use crate::faults::{admin, Faults};

/// What the chaos routes act on.
#[derive(Clone)]
pub struct ChaosTargets {
    /// The root supervisor (its children are killed by kind).
    pub root: ActorRef<SupervisorMsg>,
    /// In-flight request actors.
    pub requests: RequestSpawner,
}

#[derive(Clone)]
struct Gate {
    token: String,
    refused_in_production: bool,
}

/// Whether chaos is active for these settings (enabled, and allowed in this environment).
pub fn active(settings: &Settings) -> bool {
    settings.chaos.enabled
        && (settings.environment != "production" || settings.chaos.allow_in_production)
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

async fn guard(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(gate) = req.app_data::<web::Data<Gate>>().cloned() else {
        return Ok(req.into_response(HttpResponse::NotFound().finish()));
    };
    let presented = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    if !constant_time_eq(presented.as_bytes(), gate.token.as_bytes()) {
        return Ok(req.into_response(
            HttpResponse::Unauthorized().json(json!({"error": "invalid chaos token"})),
        ));
    }
    if gate.refused_in_production {
        return Ok(req.into_response(HttpResponse::Forbidden().json(json!({
            "detail": "chaos is refused in production (set AIGW_CHAOS__ALLOW_IN_PRODUCTION=true)"
        }))));
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// Mount the chaos scope (when enabled).
pub fn configure(
    cfg: &mut web::ServiceConfig,
    settings: &Settings,
    targets: ChaosTargets,
    faults: Faults,
) {
    if !settings.chaos.enabled {
        return;
    }
    let gate = Gate {
        token: settings.chaos.token.clone(),
        refused_in_production: !active(settings),
    };
    cfg.service(
        web::scope("/chaos")
            .app_data(web::Data::new(gate))
            .app_data(web::Data::new(targets))
            .app_data(web::Data::new(faults))
            .wrap(from_fn(guard))
            .route("/kill/{kind}", web::post().to(kill))
            .route("/faults", web::post().to(admin::add))
            .route("/faults", web::get().to(admin::list))
            .route("/faults", web::delete().to(admin::clear)),
    );
}

async fn kill(targets: web::Data<ChaosTargets>, kind: web::Path<String>) -> HttpResponse {
    let kind = kind.into_inner();
    let killed = match kind.as_str() {
        "request" => {
            let in_flight = targets.requests.in_flight().await;
            match in_flight.first() {
                Some(cell) => {
                    cell.kill();
                    1
                }
                None => 0,
            }
        }
        "jwks" | "quota" | "requests" => match supervisor::children(&targets.root).await {
            Ok(children) => {
                let matching: Vec<_> = children.into_iter().filter(|c| c.kind == kind).collect();
                for child in &matching {
                    child.cell.kill();
                }
                matching.len()
            }
            Err(e) => {
                return HttpResponse::ServiceUnavailable()
                    .json(json!({"detail": format!("root supervisor unavailable: {e}")}))
            }
        },
        _ => return HttpResponse::NotFound().json(json!({
            "detail": format!("unknown actor kind {kind:?}: use jwks, quota, requests or request")
        })),
    };
    let label = match kind.as_str() {
        "request" => "kill_request",
        "requests" => "kill_requests",
        "jwks" => "kill_jwks",
        _ => "kill_quota",
    };
    metrics::counter!("chaos_faults_injected_total", "kind" => label).increment(killed as u64);
    tracing::warn!(target: "chaos", kind = %kind, killed, "chaos: killed actors");
    HttpResponse::Ok().json(json!({"kind": kind, "killed": killed}))
}
