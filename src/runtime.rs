//! The actor tree of a running gateway.
//!
//! ```text
//! RootSupervisor (one-for-one, restart budget → process exits non-zero)
//! ├── RequestSupervisor ── RequestShard × HTTP workers ── RequestActor × calls in flight
//! ├── Ticker (metrics upkeep)
//! └── JwksActor × OIDC issuers (kind `jwks`: GitLab, CustomersDot)
//! ```
//!
//! QuotaActors (one per model with limits) join the root on their first call, with kind `quota`
//! (`crate::quota::Quotas`).

use std::sync::Arc;
use std::time::Duration;

use ai_gateway_actors::ractor::{Actor, ActorCell, ActorRef};
use ai_gateway_actors::request::{RequestSpawner, RequestSupervisor, RequestSupervisorArgs};
use ai_gateway_actors::supervisor::{
    self, ChildSpec, FnChildSpec, RestartPolicy, SupervisorArgs, SupervisorMsg,
};
use ai_gateway_actors::ticker::{Ticker, TickerArgs};
use futures::FutureExt;
use tokio::sync::watch;

use ai_gateway_actors::jwks::JwksHandle;

use crate::auth::keys::KeySet;
use crate::config::Settings;

/// Kinds of actor, as they appear in `actor_restarts_total{actor}`.
pub const ACTOR_KINDS: &[&str] = &["requests", "metrics_upkeep", "jwks", "quota"];

/// The running tree.
pub struct ActorTree {
    /// The root supervisor.
    pub root: ActorRef<SupervisorMsg>,
    /// Completes when the root supervisor stops.
    pub root_done: tokio::task::JoinHandle<()>,
    /// Starts request actors under the current request supervisor.
    pub requests: RequestSpawner,
    /// The key sets of the OIDC issuers, published by their `JwksActor`s.
    pub jwks: Vec<JwksHandle<KeySet>>,
}

/// The restart policy from the settings.
pub fn restart_policy(settings: &Settings) -> RestartPolicy {
    RestartPolicy {
        max_restarts: settings.supervisor.max_restarts,
        window: Duration::from_secs(settings.supervisor.window_s),
        backoff_min: Duration::from_millis(settings.supervisor.backoff_min_ms),
        backoff_max: Duration::from_millis(settings.supervisor.backoff_max_ms),
    }
}

fn request_supervisor_spec(publish: watch::Sender<Option<ActorCell>>) -> Arc<dyn ChildSpec> {
    Arc::new(FnChildSpec::new("requests", "requests", move |parent| {
        let publish = publish.clone();
        async move {
            let (actor, _) = Actor::spawn_linked(
                None,
                RequestSupervisor,
                RequestSupervisorArgs { publish },
                parent,
            )
            .await?;
            Ok(actor.get_cell())
        }
        .boxed()
    }))
}

fn metrics_upkeep_spec() -> Arc<dyn ChildSpec> {
    Arc::new(FnChildSpec::new(
        "metrics_upkeep",
        "metrics_upkeep",
        |parent| {
            async move {
                let tick = Arc::new(|| {
                    if let Some(handle) = crate::telemetry::handle() {
                        handle.run_upkeep();
                    }
                });
                let (actor, _) = Actor::spawn_linked(
                    None,
                    Ticker,
                    TickerArgs {
                        period: Duration::from_secs(5),
                        tick,
                    },
                    parent,
                )
                .await?;
                Ok(actor.get_cell())
            }
            .boxed()
        },
    ))
}

/// Start the tree.
pub async fn start(settings: &Settings) -> Result<ActorTree, String> {
    for kind in ACTOR_KINDS {
        // Present from the start at 0, so that alerts and rate() see the series.
        metrics::counter!("actor_restarts_total", "actor" => *kind).absolute(0);
    }
    let (publish, current) = watch::channel(None);
    let mut children = vec![request_supervisor_spec(publish), metrics_upkeep_spec()];
    let mut jwks = Vec::new();
    for (issuer, spec) in crate::auth::jwks::issuers(settings) {
        jwks.push(issuer.handle);
        children.push(spec);
    }
    let (root, root_done) = supervisor::spawn_root(SupervisorArgs {
        name: "root".into(),
        policy: restart_policy(settings),
        children,
    })
    .await
    .map_err(|e| format!("actor tree failed to start: {e}"))?;
    Ok(ActorTree {
        root,
        root_done,
        requests: RequestSpawner::new(current, Duration::from_secs(2)),
        jwks,
    })
}
