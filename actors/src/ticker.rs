//! A supervised periodic task.
//!
//! House rule: no detached tasks. Housekeeping that must run every few seconds (draining metric
//! histograms, for instance) is a [`Ticker`] under a supervisor, so that shutdown reaches it and a
//! panic in it is restarted and counted like any other actor failure.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef};

/// What a ticker runs on every tick.
pub type Tick = Arc<dyn Fn() + Send + Sync>;

/// Runs a [`Tick`] every `period`.
pub struct Ticker;

/// Start arguments of a [`Ticker`].
pub struct TickerArgs {
    /// Time between ticks.
    pub period: Duration,
    /// The work.
    pub tick: Tick,
}

/// The tick message.
pub struct TickNow;

impl Actor for Ticker {
    type Msg = TickNow;
    type State = Tick;
    type Arguments = TickerArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<TickNow>,
        args: TickerArgs,
    ) -> Result<Tick, ActorProcessingErr> {
        // The interval task ends with the actor: its sends fail once the mailbox is gone.
        myself.send_interval(args.period, || TickNow);
        Ok(args.tick)
    }

    async fn handle(
        &self,
        _myself: ActorRef<TickNow>,
        _msg: TickNow,
        tick: &mut Tick,
    ) -> Result<(), ActorProcessingErr> {
        tick();
        Ok(())
    }
}
