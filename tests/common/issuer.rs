//! A small OIDC issuer inside the tests, for what a real provider cannot stage on demand:
//! key rotation, outages, counting fetches during a `kid` storm.
//!
//! It serves the discovery document and the JWKS over a real loopback socket (plain HTTP/1.1,
//! one request per connection), from its own thread so that blocking test code never stalls it.
//! Keys are the RSA fixtures under `tests/fixtures/keys/`; tokens are signed with their private
//! halves by [`sign`].
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Value};

/// The path of a fixture file.
pub fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/keys/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// The private key (PEM) of fixture `name`.
pub fn private_pem(name: &str) -> String {
    std::fs::read_to_string(fixture(&format!("{name}.pem"))).unwrap()
}

/// The public JWK (`kty`, `n`, `e`) of fixture `name`.
pub fn public_jwk(name: &str) -> Value {
    serde_json::from_str(&std::fs::read_to_string(fixture(&format!("{name}.pub.json"))).unwrap())
        .unwrap()
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
}

/// An RS256 token over `claims`, signed with fixture key `key`, with `kid` in the header if given.
pub fn sign(key: &str, kid: Option<&str>, claims: &Value) -> String {
    sign_with(key, kid, jsonwebtoken::Algorithm::RS256, claims)
}

/// Like [`sign`] with another RSA algorithm.
pub fn sign_with(
    key: &str,
    kid: Option<&str>,
    alg: jsonwebtoken::Algorithm,
    claims: &Value,
) -> String {
    let mut header = jsonwebtoken::Header::new(alg);
    header.kid = kid.map(str::to_string);
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(private_pem(key).as_bytes()).unwrap();
    jsonwebtoken::encode(&header, claims, &key).unwrap()
}

/// GitLab instance-token claims for `issuer`: realm `saas`, instance `1234`, given scopes,
/// audience the gateway, one hour of life.
pub fn instance_claims(issuer: &str, scopes: &[&str]) -> Value {
    json!({
        "iss": issuer,
        "sub": "1234",
        "aud": "gitlab-ai-gateway",
        "iat": now(),
        "nbf": now(),
        "exp": now() + 3600,
        "jti": format!("{:032x}", rand_u128()),
        "gitlab_realm": "saas",
        "gitlab_instance_id": "1234",
        "scopes": scopes,
    })
}

fn rand_u128() -> u128 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
    );
    (h.finish() as u128) << 64 | h.finish() as u128
}

/// The headers that match [`instance_claims`].
pub fn instance_headers() -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Gitlab-Authentication-Type", "oidc"),
        ("X-Gitlab-Realm", "saas"),
        ("X-Gitlab-Instance-Id", "1234"),
    ]
}

struct State {
    /// (fixture name, kid) of the served keys.
    keys: Vec<(String, Option<String>)>,
}

/// The in-test issuer.
pub struct TestIssuer {
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    down: Arc<AtomicBool>,
    hang: Arc<AtomicBool>,
    discovery_hits: Arc<AtomicUsize>,
    jwks_hits: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    port: u16,
}

impl TestIssuer {
    /// Serve `keys` (fixture name, kid).
    pub fn start(keys: &[(&str, Option<&str>)]) -> TestIssuer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let issuer = TestIssuer {
            url: format!("http://127.0.0.1:{port}"),
            state: Arc::new(Mutex::new(State { keys: Vec::new() })),
            down: Arc::new(AtomicBool::new(false)),
            hang: Arc::new(AtomicBool::new(false)),
            discovery_hits: Arc::new(AtomicUsize::new(0)),
            jwks_hits: Arc::new(AtomicUsize::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
            port,
        };
        issuer.set_keys(keys);
        let (state, down, hang, disc, jwks, stop, url) = (
            Arc::clone(&issuer.state),
            Arc::clone(&issuer.down),
            Arc::clone(&issuer.hang),
            Arc::clone(&issuer.discovery_hits),
            Arc::clone(&issuer.jwks_hits),
            Arc::clone(&issuer.stop),
            issuer.url.clone(),
        );
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                let (state, down, hang, disc, jwks, url) = (
                    Arc::clone(&state),
                    Arc::clone(&down),
                    Arc::clone(&hang),
                    Arc::clone(&disc),
                    Arc::clone(&jwks),
                    url.clone(),
                );
                std::thread::spawn(move || {
                    let _ = serve(conn, &state, &down, &hang, &disc, &jwks, &url);
                });
            }
        });
        issuer
    }

    /// Replace the served keys (a rotation).
    pub fn set_keys(&self, keys: &[(&str, Option<&str>)]) {
        self.state.lock().unwrap().keys = keys
            .iter()
            .map(|(name, kid)| (name.to_string(), kid.map(str::to_string)))
            .collect();
    }

    /// An outage: every request answered 503.
    pub fn set_down(&self, down: bool) {
        self.down.store(down, Ordering::SeqCst);
    }

    /// A black hole: requests are read and never answered (until `set_hang(false)`).
    pub fn set_hang(&self, hang: bool) {
        self.hang.store(hang, Ordering::SeqCst);
    }

    /// Key-set fetches served so far (outages included).
    pub fn jwks_fetches(&self) -> usize {
        self.jwks_hits.load(Ordering::SeqCst)
    }

    /// Discovery fetches served so far (outages included).
    pub fn discovery_fetches(&self) -> usize {
        self.discovery_hits.load(Ordering::SeqCst)
    }

    /// Wait up to 10 s until at least `n` key-set fetches were served.
    pub fn wait_jwks_fetches(&self, n: usize) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.jwks_fetches() < n {
            assert!(
                std::time::Instant::now() < deadline,
                "no key-set fetch {n} within 10 s (have {})",
                self.jwks_fetches()
            );
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
    }
}

impl Drop for TestIssuer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(
    mut conn: TcpStream,
    state: &Mutex<State>,
    down: &AtomicBool,
    hang: &AtomicBool,
    discovery_hits: &AtomicUsize,
    jwks_hits: &AtomicUsize,
    url: &str,
) -> std::io::Result<()> {
    conn.set_nodelay(true)?;
    let mut reader = BufReader::new(conn.try_clone()?);
    let mut request_line = String::new();
    reader.read_line(&mut request_line)?;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 || line == "\r\n" || line == "\n" {
            break;
        }
    }
    while hang.load(Ordering::SeqCst) {
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let path = request_line.split(' ').nth(1).unwrap_or("");
    let body = match path {
        "/.well-known/openid-configuration" => {
            discovery_hits.fetch_add(1, Ordering::SeqCst);
            Some(json!({
                "issuer": url,
                "jwks_uri": format!("{url}/oauth/discovery/keys"),
                "id_token_signing_alg_values_supported": ["RS256"],
            }))
        }
        "/oauth/discovery/keys" => {
            jwks_hits.fetch_add(1, Ordering::SeqCst);
            let keys: Vec<Value> = state
                .lock()
                .unwrap()
                .keys
                .iter()
                .map(|(name, kid)| {
                    let mut jwk = public_jwk(name);
                    jwk["use"] = json!("sig");
                    jwk["alg"] = json!("RS256");
                    if let Some(kid) = kid {
                        jwk["kid"] = json!(kid);
                    }
                    jwk
                })
                .collect();
            Some(json!({ "keys": keys }))
        }
        _ => None,
    };
    let (status, body) = match body {
        _ if down.load(Ordering::SeqCst) => ("503 Service Unavailable", "{}".to_string()),
        Some(b) => ("200 OK", b.to_string()),
        None => ("404 Not Found", "{}".to_string()),
    };
    write!(
        conn,
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )?;
    conn.flush()
}
