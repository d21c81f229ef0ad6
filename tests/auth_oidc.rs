//! Authentication against a real, independent OpenID provider: the npm package `oidc-provider`
//! (tests/oidc/provider.mjs), started here on a loopback port, issuing RS256 JWT access tokens
//! with GitLab's claims through the client-credentials grant. CustomersDot is the small in-test
//! issuer, so one gateway verifies tokens of two issuers at once.
//!
//! The provider's packages are installed by `scripts/test.sh` (`npm ci --prefix tests/oidc`);
//! when they are missing this test installs them itself with the same command.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Mutex;

use common::issuer::{fixture, instance_claims, instance_headers, private_pem, sign, TestIssuer};
use common::Gateway;
use serde_json::{json, Value};

static NPM: Mutex<()> = Mutex::new(());

fn oidc_dir() -> String {
    format!("{}/tests/oidc", env!("CARGO_MANIFEST_DIR"))
}

fn ensure_installed() {
    let _guard = NPM.lock().unwrap_or_else(|e| e.into_inner());
    if std::path::Path::new(&format!("{}/node_modules/oidc-provider", oidc_dir())).exists() {
        return;
    }
    let status = Command::new("npm")
        .args([
            "ci",
            "--prefix",
            &oidc_dir(),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
        ])
        .status()
        .expect("npm is installed (scripts/test.sh installs nodejs and npm)");
    assert!(status.success(), "npm ci --prefix tests/oidc failed");
}

/// The running provider; killed on drop.
struct Provider {
    child: Child,
    issuer: String,
}

impl Provider {
    fn start(audience: &str) -> Provider {
        ensure_installed();
        let mut child = Command::new("node")
            .arg(format!("{}/provider.mjs", oidc_dir()))
            .env("SIGNING_KEY_PEM", fixture("oidc_provider.pem"))
            .env("AUDIENCE", audience)
            .env("PORT", "0")
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("node runs");
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let v: Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("provider did not start ({e}): {line:?}"));
        Provider {
            child,
            issuer: v["issuer"].as_str().unwrap().to_string(),
        }
    }

    /// An access token for `client` by the client-credentials grant, resource `urn:ai-gateway`.
    async fn token(&self, client: &str) -> String {
        let res = reqwest::Client::new()
            .post(format!("{}/token", self.issuer))
            .basic_auth(client, Some(format!("{client}-secret")))
            .header("content-type", "application/x-www-form-urlencoded")
            .body("grant_type=client_credentials&resource=urn%3Aai-gateway")
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["token_type"], "Bearer");
        body["access_token"].as_str().unwrap().to_string()
    }
}

impl Drop for Provider {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gateway(gitlab: &str, customers_dot: &str) -> Gateway {
    let signing = private_pem("aigw_signing");
    let validation = private_pem("aigw_validation");
    Gateway::start(
        &[
            ("AIGW_AUTH__BYPASS_EXTERNAL", "false"),
            ("AIGW_GITLAB_URL", gitlab),
            ("AIGW_CUSTOMER_PORTAL_URL", customers_dot),
            ("AIGW_SELF_SIGNED_JWT__SIGNING_KEY", signing.as_str()),
            ("AIGW_SELF_SIGNED_JWT__VALIDATION_KEY", validation.as_str()),
        ],
        &["--dev"],
    )
}

async fn call(gw: &Gateway, path: &str, token: &str, headers: &[(&str, &str)]) -> (u16, String) {
    let body = match path {
        "/v3/code/completions" | "/v4/code/suggestions" => {
            json!({"prompt_components": [{"type": "code_editor_completion", "payload": {
            "file_name": "main.go", "content_above_cursor": "func main() {", "content_below_cursor": "}"}}]})
        }
        _ => json!({"prompt_version": 1, "current_file": {
            "file_name": "main.py", "content_above_cursor": "def f():", "content_below_cursor": ""}}),
    };
    let mut req = reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .header("Authorization", format!("Bearer {token}"));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if path != "/v1/code/user_access_token" {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

#[tokio::test]
async fn tokens_of_a_real_openid_provider() {
    let provider = Provider::start("gitlab-ai-gateway");
    let customers_dot = TestIssuer::start(&[("issuer_a", Some("cdot-1"))]);
    let gw = gateway(&provider.issuer, &customers_dot.url);

    let token = provider.token("instance-1234").await;
    let header: Value = {
        use base64::Engine;
        let part = token.split('.').next().unwrap();
        serde_json::from_slice(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(part)
                .unwrap(),
        )
        .unwrap()
    };
    assert_eq!(header["alg"], "RS256");
    assert_eq!(header["typ"], "at+jwt");
    let hdrs = [
        ("X-Gitlab-Authentication-Type", "oidc"),
        ("X-Gitlab-Realm", "saas"),
        ("X-Gitlab-Instance-Id", "instance-1234"),
        ("X-Gitlab-Duo-Seat-Count", "33"),
        ("X-Gitlab-Global-User-Id", "777"),
    ];
    for path in [
        "/v2/code/completions",
        "/v2/code/generations",
        "/v3/code/completions",
        "/v4/code/suggestions",
    ] {
        let (s, b) = call(&gw, path, &token, &hdrs).await;
        assert_eq!(s, 200, "{path}: {b}");
    }
    let log = gw
        .wait_record(|r| r["logger"] == "api.access" && r["status_code"] == 200)
        .unwrap();
    assert_eq!(log["token_issuer"], provider.issuer.as_str());
    assert_eq!(log["gitlab_realm"], "saas");

    // Cross-checks with the provider's claims.
    let (s, b) = call(
        &gw,
        "/v2/code/completions",
        &token,
        &[
            ("X-Gitlab-Authentication-Type", "oidc"),
            ("X-Gitlab-Realm", "self-managed"),
            ("X-Gitlab-Instance-Id", "instance-1234"),
        ],
    )
    .await;
    assert_eq!(
        (s, b),
        (
            401,
            r#"{"error":"Header mismatch 'X-Gitlab-Realm'"}"#.into()
        )
    );

    // Another instance, without complete_code.
    let chat_only = provider.token("instance-5678").await;
    let (s, b) = call(
        &gw,
        "/v2/code/completions",
        &chat_only,
        &[
            ("X-Gitlab-Authentication-Type", "oidc"),
            ("X-Gitlab-Realm", "self-managed"),
            ("X-Gitlab-Instance-Id", "instance-5678"),
        ],
    )
    .await;
    assert_eq!(
        (s, b),
        (
            403,
            r#"{"detail":"Unauthorized to access code completions"}"#.into()
        )
    );

    // The user-token round trip from a provider-issued instance token.
    let (s, b) = call(&gw, "/v1/code/user_access_token", &token, &hdrs).await;
    assert_eq!(s, 200, "{b}");
    let user_token = serde_json::from_str::<Value>(&b).unwrap()["token"]
        .as_str()
        .unwrap()
        .to_string();
    let user_hdrs = [
        ("X-Gitlab-Authentication-Type", "oidc"),
        ("X-Gitlab-Realm", "saas"),
        ("X-Gitlab-Instance-Id", "instance-1234"),
        ("X-Gitlab-Global-User-Id", "777"),
        ("X-Gitlab-Duo-Seat-Count", "33"),
    ];
    let (s, b) = call(&gw, "/v2/code/completions", &user_token, &user_hdrs).await;
    assert_eq!(s, 200, "{b}");
    let (s, _) = call(&gw, "/v3/code/completions", &user_token, &user_hdrs).await;
    assert_eq!(s, 403);

    // The second issuer (CustomersDot) is trusted by the same gateway.
    let cdot = sign(
        "issuer_a",
        Some("cdot-1"),
        &instance_claims(&customers_dot.url, &["complete_code"]),
    );
    let (s, b) = call(&gw, "/v3/code/completions", &cdot, &instance_headers()).await;
    assert_eq!(s, 200, "{b}");
}

#[tokio::test]
async fn a_provider_token_for_another_audience_is_refused() {
    let provider = Provider::start("some-other-service");
    let gw = gateway(&provider.issuer, common::UNREACHABLE_ISSUER);
    let token = provider.token("instance-1234").await;
    let (s, b) = call(
        &gw,
        "/v2/code/completions",
        &token,
        &[
            ("X-Gitlab-Authentication-Type", "oidc"),
            ("X-Gitlab-Realm", "saas"),
            ("X-Gitlab-Instance-Id", "instance-1234"),
        ],
    )
    .await;
    assert_eq!(
        (s, b),
        (401, r#"{"error":"Forbidden by auth provider"}"#.into())
    );
}
