//! Per-request cost of token verification: RS256 signature and claim checks without the
//! verified-token cache, and a cache hit.
//!
//! `cargo bench --bench auth_verify` (release profile). Plain timing loops, no harness: the
//! numbers are medians of several rounds of many verifications each.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use ai_gateway::auth::keys::{KeySet, LocalKeys};
use ai_gateway::auth::verify::{JwtVerifier, StaticKeys, VerifyOptions};
use ai_gateway::auth::TokenVerifier;
use serde_json::{json, Value};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/keys/{name}",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn issuer_keys() -> KeySet {
    let mut keys = Vec::new();
    for (name, kid) in [("issuer_b", "b"), ("rogue", "r"), ("issuer_a", "a")] {
        let mut jwk: Value = serde_json::from_str(&fixture(&format!("{name}.pub.json"))).unwrap();
        jwk["kid"] = json!(kid);
        keys.push(jwk);
    }
    KeySet::from_jwks(&json!({ "keys": keys })).unwrap()
}

fn verifier(cache: usize) -> JwtVerifier {
    let local = LocalKeys::load(
        "gitlab-ai-gateway",
        &fixture("aigw_signing.pem"),
        &fixture("aigw_validation.pem"),
    );
    JwtVerifier::new(
        Box::new(StaticKeys {
            local: local.verification,
            issuers: vec![Arc::new(issuer_keys())],
        }),
        VerifyOptions {
            service_name: "gitlab-ai-gateway".into(),
            ..VerifyOptions::default()
        },
        cache,
    )
}

fn token(kid: Option<&str>) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": "https://gitlab.example.com", "sub": "1234", "aud": "gitlab-ai-gateway",
        "iat": now, "nbf": now, "exp": now + 3600, "jti": "bench",
        "gitlab_realm": "saas", "gitlab_instance_id": "1234",
        "scopes": ["complete_code", "generate_code"], "duo_seat_count": "33",
    });
    let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256);
    header.kid = kid.map(str::to_string);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(fixture("issuer_a.pem").as_bytes()).unwrap();
    jsonwebtoken::encode(&header, &claims, &key).unwrap()
}

/// Median per-call time over `rounds` rounds of `n` calls.
fn measure(label: &str, verifier: &JwtVerifier, token: &str, n: u32) -> Duration {
    futures::executor::block_on(verifier.verify(token)).unwrap();
    let mut rounds: Vec<Duration> = (0..7)
        .map(|_| {
            let start = Instant::now();
            for _ in 0..n {
                let claims = futures::executor::block_on(verifier.verify(token)).unwrap();
                std::hint::black_box(claims);
            }
            start.elapsed() / n
        })
        .collect();
    rounds.sort();
    let median = rounds[rounds.len() / 2];
    println!(
        "{label:<58} {:>10.2} µs/verify  (min {:.2}, max {:.2})",
        median.as_secs_f64() * 1e6,
        rounds[0].as_secs_f64() * 1e6,
        rounds[rounds.len() - 1].as_secs_f64() * 1e6
    );
    median
}

fn main() {
    // `cargo test --benches` runs this with `--bench`-less args; keep that quick.
    let quick = !std::env::args().any(|a| a == "--bench");
    let n = if quick { 20 } else { 2_000 };
    let with_kid = token(Some("a"));
    let without_kid = token(None);
    println!(
        "token: {} bytes; issuer key set: 3 RSA-2048 keys, gateway's own: 2",
        with_kid.len()
    );
    let uncached = verifier(0);
    let slow = measure(
        "no cache, kid matches one key (RS256 + claims)",
        &uncached,
        &with_kid,
        n,
    );
    measure(
        "no cache, no kid: tried against every key (5, match last)",
        &uncached,
        &without_kid,
        n / 4 + 1,
    );
    let cached = verifier(10_000);
    let fast = measure(
        "cache hit (SHA-256 of the token + map lookup)",
        &cached,
        &with_kid,
        n * 20,
    );
    println!(
        "cache hit is {:.0}x cheaper than a signature check",
        slow.as_secs_f64() / fast.as_secs_f64()
    );
}
