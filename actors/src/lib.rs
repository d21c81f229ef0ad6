//! The supervision tree of ai-gateway and every actor in it.
//!
//! This crate knows nothing of HTTP or of any model provider. A model call reaches it as a
//! stream of items ([`request::RequestActor`]); key sets and quota counts reach it through small
//! traits that the gateway implements. What it provides:
//!
//! * [`supervisor`]: a one-for-one supervisor with a restart budget, the building block of the tree;
//! * [`snapshot`]: the "owner writes, everyone reads" publication of immutable state;
//! * [`request`]: one actor per model call in flight, under a supervisor that contains failures;
//! * [`ticker`]: supervised periodic housekeeping;
//! * [`jwks`]: one actor per OIDC issuer owning its signing keys, published as a snapshot.
//! * [`quota`]: one actor per provider model that admits, queues or refuses calls against its limits.
//!
//! Rules of the house: every queue that can grow is bounded by design (ractor mailboxes are not);
//! anything long-lived is an actor under a supervisor; every restart is logged and counted in
//! `actor_restarts_total{actor}`.

pub mod jwks;
pub mod quota;
pub mod request;
pub mod snapshot;
pub mod supervisor;
pub mod ticker;

pub use ractor;
