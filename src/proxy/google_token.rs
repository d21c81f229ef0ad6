//! Google access tokens for the Vertex proxy.
//!
//! [`AccessTokenSource`] is the seam: anything that can produce a bearer token for
//! `aiplatform.googleapis.com` plugs in behind it. The gateway plugs in the Vertex provider's own
//! [`GoogleAuth`] (service-account or authorized-user key file, else the metadata server), so the
//! proxy and the models share one credential and one token cache.

use futures::future::BoxFuture;
use futures::FutureExt;

use crate::models::google_auth::GoogleAuth;

/// Produces Google access tokens.
pub trait AccessTokenSource: Send + Sync + 'static {
    /// A fresh-enough token, or why none could be had.
    fn token(&self) -> BoxFuture<'_, Result<String, String>>;
}

impl AccessTokenSource for GoogleAuth {
    fn token(&self) -> BoxFuture<'_, Result<String, String>> {
        async move { GoogleAuth::token(self).await.map_err(|e| e.to_string()) }.boxed()
    }
}
