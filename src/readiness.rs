//! Readiness: are the configured model providers reachable?
//!
//! The original answers `/monitoring/ready` by making real (paid) model calls, once per process.
//! This gateway checks reachability instead: a TCP connection to each configured provider's
//! host, remembered after its first success like the original remembers its checks. With mock
//! models there is nothing to reach, so the gateway is always ready (see docs/compatibility.md).

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::config::Settings;

/// One provider to reach.
#[derive(Debug)]
pub struct Check {
    /// Provider name, for logs.
    pub name: &'static str,
    /// `host:port`.
    pub address: String,
    passed: AtomicBool,
}

/// The checks of this process.
#[derive(Debug, Default)]
pub struct Readiness {
    checks: Vec<Check>,
}

fn address_of(url_or_host: &str) -> Option<String> {
    let with_scheme = if url_or_host.contains("://") {
        url_or_host.to_string()
    } else {
        format!("https://{url_or_host}")
    };
    let url = url::Url::parse(&with_scheme).ok()?;
    let host = url.host_str()?.to_string();
    let port = url.port_or_known_default()?;
    Some(format!("{host}:{port}"))
}

impl Readiness {
    /// The checks the settings call for.
    pub fn from_settings(settings: &Settings) -> Self {
        let mut checks = Vec::new();
        if settings.mock_model_responses {
            return Self { checks };
        }
        let mut add = |name: &'static str, target: &str| {
            if let Some(address) = address_of(target) {
                checks.push(Check {
                    name,
                    address,
                    passed: AtomicBool::new(false),
                });
            }
        };
        if settings.external.anthropic_api_key.is_some() {
            add("anthropic", &settings.external.anthropic_base_url);
        }
        if !settings.vertex_text_model.project.is_empty() {
            add("vertex-ai", &settings.vertex_text_model.endpoint);
        }
        if settings.model_keys.fireworks_api_key.is_some() {
            if let Some(endpoint) = crate::config::fireworks_region(settings) {
                add("fireworks", &endpoint.endpoint);
            }
        }
        Self { checks }
    }

    /// The checks, for logs and tests.
    pub fn checks(&self) -> &[Check] {
        &self.checks
    }

    /// Ready when every check has passed once; the first failing check is reported.
    pub async fn check(&self) -> Result<(), String> {
        for check in &self.checks {
            if check.passed.load(Ordering::Relaxed) {
                continue;
            }
            let connect = tokio::net::TcpStream::connect(check.address.as_str());
            match tokio::time::timeout(Duration::from_secs(3), connect).await {
                Ok(Ok(_)) => check.passed.store(true, Ordering::Relaxed),
                Ok(Err(e)) => return Err(format!("{} ({}): {e}", check.name, check.address)),
                Err(_) => {
                    return Err(format!(
                        "{} ({}): connect timed out",
                        check.name, check.address
                    ))
                }
            }
        }
        Ok(())
    }
}
