//! The quota actor against a backend that takes its time, as Redis over a network does.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::Duration;

use ai_gateway_actors::quota::{
    BackendError, Limits, LocalBackend, QuotaActor, QuotaBackend, QuotaHandle, QuotaSettings,
    QuotaShared, ReconcileArgs, ReserveArgs, Verdict, View,
};
use ai_gateway_actors::ractor::Actor;
use futures::future::{BoxFuture, FutureExt};

/// The local backend behind a delay on every reservation.
struct SlowBackend {
    inner: Arc<LocalBackend>,
    delay: Duration,
}

impl QuotaBackend for SlowBackend {
    fn kind(&self) -> &'static str {
        "slow"
    }
    fn reserve(&self, args: ReserveArgs) -> BoxFuture<'static, Result<Verdict, BackendError>> {
        let inner = Arc::clone(&self.inner);
        let delay = self.delay;
        async move {
            tokio::time::sleep(delay).await;
            inner.reserve(args).await
        }
        .boxed()
    }
    fn reconcile(&self, args: ReconcileArgs) -> BoxFuture<'static, Result<View, BackendError>> {
        self.inner.reconcile(args)
    }
    fn peek(&self) -> BoxFuture<'static, Result<View, BackendError>> {
        self.inner.peek()
    }
}

/// A caller that gives up while the backend is still answering its reservation: the grant that
/// arrives for nobody is given back at once, not held until its lease expires (11 minutes by
/// default). The actor handles one message at a time, so the next reservation is looked at only
/// after the abandoned one was settled.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_grant_its_caller_gave_up_on_is_given_back() {
    let backend = Arc::new(SlowBackend {
        inner: Arc::new(LocalBackend::new()),
        delay: Duration::from_millis(300),
    });
    let limits = Limits {
        max_concurrent: Some(1),
        ..Limits::default()
    };
    let shared = QuotaShared::new(
        "e",
        "m",
        ("e".into(), "m".into()),
        limits,
        QuotaSettings::default(),
        backend,
        None,
    );
    let (_actor, _) = Actor::spawn(None, QuotaActor, Arc::clone(&shared))
        .await
        .unwrap();
    let handle = QuotaHandle::new(shared);
    let abandoned = tokio::time::timeout(Duration::from_millis(100), handle.reserve(1)).await;
    assert!(abandoned.is_err(), "the caller gave up first");
    let next = handle.reserve(1).await;
    assert!(
        next.is_ok(),
        "the abandoned grant still holds the slot: {:?}",
        next.err().map(|r| r.describe())
    );
}
