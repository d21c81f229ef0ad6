//! One TLS client configuration for every upstream HTTP client.
//!
//! Left to itself, reqwest builds a fresh rustls configuration for every client, and on Linux
//! that means reading and parsing the system's CA bundle each time (~18M instructions, a few
//! milliseconds, and a root store in memory per client). The gateway builds a client per
//! upstream per HTTP worker thread, lazily, so the first call on each worker paid for it in its
//! latency and every client kept its own copy of the roots. Here the configuration is built
//! once, with what reqwest would choose (the platform verifier over the system roots, TLS 1.2
//! and 1.3, ALPN `h2` then `http/1.1`), and every client gets a clone that shares the verifier.
//!
//! If it cannot be built (no system roots at all), clients fall back to reqwest's own
//! configuration, which reports the same problem on first use.

use std::sync::{Arc, OnceLock};

/// The shared configuration, built on first use.
pub fn client_config() -> Option<rustls::ClientConfig> {
    static CONFIG: OnceLock<Option<rustls::ClientConfig>> = OnceLock::new();
    CONFIG.get_or_init(build).clone()
}

fn build() -> Option<rustls::ClientConfig> {
    let provider = rustls::crypto::CryptoProvider::get_default()
        .cloned()
        .unwrap_or_else(|| Arc::new(rustls::crypto::aws_lc_rs::default_provider()));
    let verifier = rustls_platform_verifier::Verifier::new(Arc::clone(&provider)).ok()?;
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .ok()?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Some(config)
}

/// A client builder that uses the shared configuration.
pub fn client_builder() -> reqwest::ClientBuilder {
    let builder = reqwest::Client::builder();
    match client_config() {
        Some(config) => builder.tls_backend_preconfigured(config),
        None => builder,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_shared_config_offers_what_reqwest_would() {
        // The test machine has system roots (CI installs ca-certificates).
        let config = client_config().expect("system roots load");
        assert_eq!(
            config.alpn_protocols,
            [b"h2".to_vec(), b"http/1.1".to_vec()]
        );
        assert!(client_builder().build().is_ok());
    }
}
