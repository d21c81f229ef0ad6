//! Authentication and authorization (issue 4) against the real binary, with the small issuer in
//! `common::issuer` serving discovery and keys over a real socket: every 401 message and
//! cross-check, 403 per endpoint, refused issuers, bypass modes, the user-token round trip, key
//! rotation, an issuer down at startup, a `kid` storm, and a JwksActor killed mid-traffic.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::{Duration, Instant};

use common::issuer::{instance_claims, instance_headers, now, private_pem, sign, TestIssuer};
use common::{metric_value, Gateway};
use futures::StreamExt;
use serde_json::{json, Value};

const CHAOS_TOKEN: &str = "test-chaos-token-0123456789";

/// A gateway with mock models and real authentication, `issuer` as GitLab, the fixture keys as
/// its own signing and validation keys.
fn gateway(issuer: &TestIssuer, extra: &[(&str, &str)]) -> Gateway {
    let signing = private_pem("aigw_signing");
    let validation = private_pem("aigw_validation");
    let mut env: Vec<(&str, &str)> = vec![
        ("AIGW_AUTH__BYPASS_EXTERNAL", "false"),
        ("AIGW_ENVIRONMENT", "test"),
        ("AIGW_GITLAB_URL", issuer.url.as_str()),
        ("AIGW_SELF_SIGNED_JWT__SIGNING_KEY", signing.as_str()),
        ("AIGW_SELF_SIGNED_JWT__VALIDATION_KEY", validation.as_str()),
    ];
    env.extend_from_slice(extra);
    Gateway::start(&env, &["--dev"])
}

fn v2_body() -> Value {
    json!({"prompt_version": 1, "current_file": {
        "file_name": "main.py", "content_above_cursor": "def is_even(n: int) ->", "content_below_cursor": ""}})
}

fn v3_body() -> Value {
    json!({"prompt_components": [{"type": "code_editor_completion", "payload": {
        "file_name": "main.go", "content_above_cursor": "func main() {", "content_below_cursor": "}"}}]})
}

fn body_for(path: &str) -> Value {
    match path {
        "/v3/code/completions" | "/v4/code/suggestions" => v3_body(),
        "/v1/code/user_access_token" => Value::Null,
        _ => v2_body(),
    }
}

/// POST `path` with an `Authorization: Bearer` token (if any) and headers; (status, body).
async fn call(
    gw: &Gateway,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    call_with_body(gw, path, token, headers, body_for(path)).await
}

async fn call_with_body(
    gw: &Gateway,
    path: &str,
    token: Option<&str>,
    headers: &[(&str, &str)],
    body: Value,
) -> (u16, String) {
    let mut req = client().post(format!("{}{path}", gw.api));
    if let Some(token) = token {
        req = req.header("Authorization", format!("Bearer {token}"));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    if !body.is_null() {
        req = req.json(&body);
    }
    let res = req.send().await.unwrap();
    let status = res.status().as_u16();
    (status, res.text().await.unwrap())
}

/// One client for every call: building a client loads the TLS roots, and a storm of calls that
/// each built their own would keep the runtime busy long after their connections opened (the
/// server answers a connection that sends nothing for 5 s with 408).
/// Per test thread, since each test has its own runtime and a client's pooled connections
/// belong to the runtime that opened them.
fn client() -> reqwest::Client {
    thread_local! {
        static CLIENT: reqwest::Client = reqwest::Client::new();
    }
    CLIENT.with(Clone::clone)
}

fn error(message: &str) -> String {
    json!({ "error": message }).to_string()
}

fn detail(message: &str) -> String {
    json!({ "detail": message }).to_string()
}

/// The payload of a JWT, unverified.
fn payload(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn header_of(token: &str) -> Value {
    use base64::Engine;
    let part = token.split('.').next().unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

fn self_signed_claims(user: &str, scopes: &[&str]) -> Value {
    json!({
        "iss": "gitlab-ai-gateway", "aud": "gitlab-ai-gateway", "sub": user,
        "iat": now(), "nbf": now(), "exp": now() + 3600, "jti": "x",
        "gitlab_realm": "saas", "gitlab_instance_id": "1234", "scopes": scopes,
    })
}

fn self_signed_headers(user: &'static str) -> Vec<(&'static str, &'static str)> {
    vec![
        ("X-Gitlab-Authentication-Type", "oidc"),
        ("X-Gitlab-Realm", "saas"),
        ("X-Gitlab-Instance-Id", "1234"),
        ("X-Gitlab-Global-User-Id", user),
    ]
}

#[tokio::test]
async fn every_401_message_in_the_originals_order() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let gw = gateway(&issuer, &[]);
    let ok = sign(
        "issuer_a",
        Some("a"),
        &instance_claims(&issuer.url, &["complete_code"]),
    );
    let hdrs = instance_headers();
    let path = "/v2/code/completions";

    let (s, b) = call(&gw, path, None, &hdrs).await;
    assert_eq!((s, b), (401, error("No authorization header presented")));
    let res = reqwest::Client::new()
        .post(format!("{}{path}", gw.api))
        .header("Authorization", format!("Basic {ok}"))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401);
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.text().await.unwrap(),
        error("Invalid authorization header")
    );
    for auth_type in [None, Some("OIDC"), Some("jwt")] {
        let mut h = vec![("X-Gitlab-Realm", "saas"), ("X-Gitlab-Instance-Id", "1234")];
        if let Some(t) = auth_type {
            h.push(("X-Gitlab-Authentication-Type", t));
        }
        let (s, b) = call(&gw, path, Some(&ok), &h).await;
        assert_eq!(
            (s, b),
            (
                401,
                error("Invalid authentication token type - only OIDC is supported")
            ),
            "{auth_type:?}"
        );
    }

    // Failed verification, every way.
    let mut expired = instance_claims(&issuer.url, &["complete_code"]);
    expired["exp"] = json!(now() - 10);
    let mut early = instance_claims(&issuer.url, &["complete_code"]);
    early["nbf"] = json!(now() + 600);
    let mut wrong_aud = instance_claims(&issuer.url, &["complete_code"]);
    wrong_aud["aud"] = json!("someone-else");
    let claims = instance_claims(&issuer.url, &["complete_code"]);
    let hs256 = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::HS256),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(b"secret"),
    )
    .unwrap();
    let bad = [
        ("garbage", "not-a-jwt".to_string()),
        ("expired", sign("issuer_a", Some("a"), &expired)),
        ("not yet valid", sign("issuer_a", Some("a"), &early)),
        ("wrong audience", sign("issuer_a", Some("a"), &wrong_aud)),
        (
            "forged with the issuer's kid",
            sign("rogue", Some("a"), &claims),
        ),
        ("unknown key, no kid", sign("rogue", None, &claims)),
        ("HS256", hs256),
        (
            "RS384",
            common::issuer::sign_with(
                "issuer_a",
                Some("a"),
                jsonwebtoken::Algorithm::RS384,
                &claims,
            ),
        ),
    ];
    for (what, token) in &bad {
        let (s, b) = call(&gw, path, Some(token), &hdrs).await;
        assert_eq!((s, b), (401, error("Forbidden by auth provider")), "{what}");
    }

    // Claim/header cross-checks, in order.
    let (s, b) = call(
        &gw,
        path,
        Some(&ok),
        &[
            ("X-Gitlab-Authentication-Type", "oidc"),
            ("X-Gitlab-Instance-Id", "1234"),
        ],
    )
    .await;
    assert_eq!((s, b), (401, error("Header mismatch 'X-Gitlab-Realm'")));
    let (s, b) = call(
        &gw,
        path,
        Some(&ok),
        &[
            ("X-Gitlab-Authentication-Type", "oidc"),
            ("X-Gitlab-Realm", "saas"),
            ("X-Gitlab-Instance-Id", "999"),
        ],
    )
    .await;
    assert_eq!(
        (s, b),
        (401, error("Header mismatch 'X-Gitlab-Instance-Id'"))
    );
    // Without an instance-id claim, `sub` is checked against the instance id header.
    let mut no_instance = instance_claims(&issuer.url, &["complete_code"]);
    no_instance
        .as_object_mut()
        .unwrap()
        .remove("gitlab_instance_id");
    no_instance["sub"] = json!("555");
    let token = sign("issuer_a", Some("a"), &no_instance);
    let (s, b) = call(&gw, path, Some(&token), &hdrs).await;
    assert_eq!(
        (s, b),
        (401, error("Header mismatch 'X-Gitlab-Instance-Id'"))
    );
    // A self-signed token's `sub` is checked against the global user id.
    let own = sign(
        "aigw_signing",
        None,
        &self_signed_claims("777", &["complete_code"]),
    );
    let (s, b) = call(&gw, path, Some(&own), &self_signed_headers("778")).await;
    assert_eq!(
        (s, b),
        (401, error("Header mismatch 'X-Gitlab-Global-User-Id'"))
    );
    let (s, _) = call(&gw, path, Some(&own), &self_signed_headers("777")).await;
    assert_eq!(s, 200);

    // The seat count is only logged.
    let mut seats = instance_claims(&issuer.url, &["complete_code"]);
    seats["duo_seat_count"] = json!("33");
    let seats = sign("issuer_a", Some("a"), &seats);
    let (s, _) = call(&gw, path, Some(&seats), &hdrs).await;
    assert_eq!(s, 200, "a missing seat-count header is not refused");
    assert!(gw
        .wait_record(|r| r["message"] == "Header is missing: 'X-Gitlab-Duo-Seat-Count'")
        .is_some());
    let mut h = hdrs.clone();
    h.push(("X-Gitlab-Duo-Seat-Count", "34"));
    let (s, _) = call(&gw, path, Some(&seats), &h).await;
    assert_eq!(s, 200, "a mismatched seat count is not refused");
    assert!(gw
        .wait_record(|r| r["message"] == "Header mismatch 'X-Gitlab-Duo-Seat-Count'")
        .is_some());

    // A good token, and what the access log and metrics say.
    let (s, _) = call(&gw, path, Some(&ok), &hdrs).await;
    assert_eq!(s, 200);
    let ok_log = gw
        .wait_record(|r| {
            r["logger"] == "api.access"
                && r["status_code"] == 200
                && r["token_issuer"] == issuer.url
        })
        .expect("access log of an accepted token");
    assert_eq!(ok_log["gitlab_realm"], "saas");
    assert!(ok_log["auth_duration_s"].is_f64());
    let refused = gw
        .wait_record(|r| {
            r["logger"] == "api.access"
                && r["http_exception_details"] == "Header mismatch 'X-Gitlab-Realm'"
        })
        .expect("access log of a refused token");
    assert_eq!(refused["token_issuer"], issuer.url);
    assert_eq!(
        refused["auth_error_details"],
        "Header mismatch 'X-Gitlab-Realm'"
    );
    let forged = gw
        .wait_record(|r| {
            r["logger"] == "api.access"
                && r["http_exception_details"] == "Forbidden by auth provider"
                && r["auth_error_details"]
                    .as_str()
                    .is_some_and(|d| d.contains("expired"))
        })
        .expect("the verification failure is detailed in the log");
    assert_eq!(forged["status_code"], 401);

    let metrics = gw.metrics_text().await;
    for (result, at_least) in [
        ("success", 4.0),
        ("missing_authorization", 1.0),
        ("invalid_authorization", 1.0),
        ("invalid_token_type", 3.0),
        ("invalid_token", 8.0),
        ("header_mismatch", 4.0),
    ] {
        let v = metric_value(
            &metrics,
            "auth_attempts_total",
            &[&format!("result=\"{result}\"")],
        )
        .unwrap_or(0.0);
        assert!(
            v >= at_least,
            "auth_attempts_total{{result={result}}} = {v}"
        );
    }
    assert_eq!(
        metric_value(&metrics, "auth_attempts_total", &["result=\"bypass\""]),
        Some(0.0)
    );
}

#[tokio::test]
async fn forbidden_per_endpoint_and_issuers_refused_per_endpoint() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let gw = gateway(&issuer, &[]);
    let hdrs = instance_headers();
    let none = sign(
        "issuer_a",
        Some("a"),
        &instance_claims(&issuer.url, &["duo_chat"]),
    );
    for (path, message) in [
        (
            "/v2/code/completions",
            "Unauthorized to access code completions",
        ),
        ("/v2/completions", "Unauthorized to access code completions"),
        (
            "/v2/code/generations",
            "Unauthorized to access code generations",
        ),
        (
            "/v3/code/completions",
            "Unauthorized to access code suggestions",
        ),
        (
            "/v4/code/suggestions",
            "Unauthorized to access code suggestions",
        ),
        (
            "/v1/code/user_access_token",
            "Unauthorized to create user access token for code suggestions",
        ),
    ] {
        let (s, b) = call(&gw, path, Some(&none), &hdrs).await;
        assert_eq!((s, b), (403, detail(message)), "{path}");
    }
    // 422 before 403.
    let (s, _) = call_with_body(&gw, "/v2/code/completions", Some(&none), &hdrs, json!({})).await;
    assert_eq!(s, 422);
    // 401 before 404.
    let (s, _) = call(&gw, "/v9/nothing", None, &[]).await;
    assert_eq!(s, 401);
    let (s, b) = call(&gw, "/v9/nothing", Some(&none), &hdrs).await;
    assert_eq!((s, b), (404, detail("Not Found")));

    // The issuer's token with the scopes passes everywhere.
    let all = sign(
        "issuer_a",
        Some("a"),
        &instance_claims(&issuer.url, &["complete_code", "generate_code"]),
    );
    let mut with_user = hdrs.clone();
    with_user.push(("X-Gitlab-Global-User-Id", "777"));
    for path in [
        "/v2/code/completions",
        "/v2/completions",
        "/v2/code/generations",
        "/v3/code/completions",
        "/v4/code/suggestions",
        "/v1/code/user_access_token",
    ] {
        let (s, b) = call(&gw, path, Some(&all), &with_user).await;
        assert_eq!(s, 200, "{path}: {b}");
    }

    // The gateway's own tokens: accepted only by v2 completions.
    let own = sign(
        "aigw_signing",
        None,
        &self_signed_claims("777", &["complete_code", "generate_code"]),
    );
    let own_hdrs = self_signed_headers("777");
    for (path, expected) in [
        ("/v2/code/completions", None),
        ("/v2/completions", None),
        (
            "/v2/code/generations",
            Some("Unauthorized to access code generations"),
        ),
        (
            "/v3/code/completions",
            Some("Unauthorized to access code suggestions"),
        ),
        (
            "/v4/code/suggestions",
            Some("Unauthorized to access code suggestions"),
        ),
        (
            "/v1/code/user_access_token",
            Some("Unauthorized to create user access token for code suggestions"),
        ),
    ] {
        let (s, b) = call(&gw, path, Some(&own), &own_hdrs).await;
        match expected {
            None => assert_eq!(s, 200, "{path}: {b}"),
            Some(m) => assert_eq!((s, b), (403, detail(m)), "{path}"),
        }
    }
}

#[tokio::test]
async fn user_token_round_trip() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let gw = gateway(&issuer, &[]);
    let mut claims = instance_claims(&issuer.url, &["complete_code"]);
    claims["duo_seat_count"] = json!("33");
    let instance = sign("issuer_a", Some("a"), &claims);
    let mut hdrs = instance_headers();
    hdrs.push(("X-Gitlab-Duo-Seat-Count", "33"));

    // Each header is required.
    for missing in [
        "X-Gitlab-Global-User-Id",
        "X-Gitlab-Instance-Id",
        "X-Gitlab-Realm",
    ] {
        let mut h: Vec<(&str, &str)> = vec![
            ("X-Gitlab-Authentication-Type", "oidc"),
            ("X-Gitlab-Realm", "saas"),
            ("X-Gitlab-Instance-Id", "1234"),
            ("X-Gitlab-Global-User-Id", "777"),
        ];
        h.retain(|(k, _)| *k != missing);
        // Realm and instance id are cross-checked before: use a token without those claims.
        let mut bare = instance_claims(&issuer.url, &["complete_code"]);
        let obj = bare.as_object_mut().unwrap();
        obj.remove("gitlab_realm");
        obj.remove("gitlab_instance_id");
        obj.remove("sub");
        let token = sign("issuer_a", Some("a"), &bare);
        let (s, b) = call(&gw, "/v1/code/user_access_token", Some(&token), &h).await;
        assert_eq!(
            (s, b),
            (400, detail(&format!("Missing {missing} header"))),
            "{missing}"
        );
    }

    let mut with_user = hdrs.clone();
    with_user.push(("X-Gitlab-Global-User-Id", "777"));
    let before = now();
    let (s, b) = call(
        &gw,
        "/v1/code/user_access_token",
        Some(&instance),
        &with_user,
    )
    .await;
    assert_eq!(s, 200, "{b}");
    let answer: Value = serde_json::from_str(&b).unwrap();
    assert_eq!(answer.as_object().unwrap().len(), 2, "{answer}");
    let token = answer["token"].as_str().unwrap().to_string();
    let expires_at = answer["expires_at"].as_i64().unwrap();
    assert!((before + 3600..=now() + 3600).contains(&expires_at));
    let header = header_of(&token);
    assert_eq!(header["alg"], "RS256");
    assert!(
        header.get("kid").is_none(),
        "the original's tokens carry no kid"
    );
    let p = payload(&token);
    assert_eq!(p["iss"], "gitlab-ai-gateway");
    assert_eq!(p["aud"], "gitlab-ai-gateway");
    assert_eq!(p["sub"], "777");
    assert_eq!(p["exp"], expires_at);
    assert_eq!(p["nbf"], p["iat"]);
    assert_eq!(p["gitlab_realm"], "saas");
    assert_eq!(p["gitlab_instance_id"], "1234");
    assert_eq!(p["scopes"], json!(["complete_code"]));
    assert_eq!(p["duo_seat_count"], "33");
    assert_eq!(p["jti"].as_str().unwrap().len(), 36);

    // Use it: v2 accepts it, v3 refuses it.
    let (s, b) = call(&gw, "/v2/code/completions", Some(&token), &with_user).await;
    assert_eq!(s, 200, "{b}");
    let (s, b) = call(&gw, "/v3/code/completions", Some(&token), &with_user).await;
    assert_eq!(
        (s, b),
        (403, detail("Unauthorized to access code suggestions"))
    );
    // Another user's id does not match the token's subject.
    let mut other = hdrs.clone();
    other.push(("X-Gitlab-Global-User-Id", "778"));
    let (s, b) = call(&gw, "/v2/code/completions", Some(&token), &other).await;
    assert_eq!(
        (s, b),
        (401, error("Header mismatch 'X-Gitlab-Global-User-Id'"))
    );
    drop(gw);

    // Key rotation: the old signing key becomes the validation key; issued tokens stay valid.
    let old = private_pem("aigw_signing");
    let new = private_pem("aigw_validation");
    let rotated = gateway(
        &issuer,
        &[
            ("AIGW_SELF_SIGNED_JWT__SIGNING_KEY", new.as_str()),
            ("AIGW_SELF_SIGNED_JWT__VALIDATION_KEY", old.as_str()),
        ],
    );
    let (s, b) = call(&rotated, "/v2/code/completions", Some(&token), &with_user).await;
    assert_eq!(s, 200, "{b}");
    drop(rotated);

    // Without a signing key, no token.
    let keyless = gateway(
        &issuer,
        &[
            ("AIGW_SELF_SIGNED_JWT__SIGNING_KEY", ""),
            ("AIGW_SELF_SIGNED_JWT__VALIDATION_KEY", ""),
        ],
    );
    let (s, b) = call(
        &keyless,
        "/v1/code/user_access_token",
        Some(&instance),
        &with_user,
    )
    .await;
    assert_eq!((s, b), (500, detail("Failed to generate JWT")));
}

#[tokio::test]
async fn bypass_modes() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);

    let gw = gateway(
        &issuer,
        &[
            ("AIGW_AUTH__BYPASS_EXTERNAL", "true"),
            ("AIGW_CHAOS__ENABLED", "true"),
            ("AIGW_CHAOS__TOKEN", CHAOS_TOKEN),
        ],
    );
    let (s, b) = call(&gw, "/v3/code/completions", None, &[]).await;
    assert_eq!(s, 200, "{b}");
    // Nothing is ever verified, so no issuer actor runs and nothing is fetched.
    let killed: Value = reqwest::Client::new()
        .post(format!("{}/chaos/kill/jwks", gw.metrics))
        .bearer_auth(CHAOS_TOKEN)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(killed["killed"], 0);
    assert_eq!(issuer.discovery_fetches(), 0);
    assert!(gw
        .wait_record(|r| r["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("authentication bypassed")))
        .is_some());
    let metrics = gw.metrics_text().await;
    assert!(metric_value(&metrics, "auth_attempts_total", &["result=\"bypass\""]).unwrap() >= 1.0);
    drop(gw);

    let gw = gateway(
        &issuer,
        &[("AIGW_AUTH__BYPASS_EXTERNAL_WITH_HEADER", "true")],
    );
    let (s, b) = call(&gw, "/v3/code/completions", None, &[]).await;
    assert_eq!((s, b), (401, error("No authorization header presented")));
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        None,
        &[("Bypass-Auth", "false")],
    )
    .await;
    assert_eq!(s, 401);
    let (s, b) = call(
        &gw,
        "/v3/code/completions",
        None,
        &[("Bypass-Auth", "true")],
    )
    .await;
    assert_eq!(s, 200, "{b}");
    drop(gw);

    let gw = gateway(&issuer, &[("AIGW_AUTH__BYPASS_JWT_SIGNATURE", "true")]);
    let claims = instance_claims(&issuer.url, &["complete_code"]);
    let forged = sign("rogue", Some("nobody"), &claims);
    let (s, b) = call(
        &gw,
        "/v3/code/completions",
        Some(&forged),
        &instance_headers(),
    )
    .await;
    assert_eq!(s, 200, "signature not checked: {b}");
    let mut expired = claims.clone();
    expired["exp"] = json!(now() - 5);
    let expired = sign("rogue", None, &expired);
    let (s, b) = call(
        &gw,
        "/v3/code/completions",
        Some(&expired),
        &instance_headers(),
    )
    .await;
    assert_eq!(
        (s, b),
        (401, error("Forbidden by auth provider")),
        "claims still checked"
    );
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        Some(&forged),
        &[("X-Gitlab-Authentication-Type", "oidc")],
    )
    .await;
    assert_eq!(s, 401, "cross-checks still run");
}

#[tokio::test]
async fn strict_options_require_exp_aud_and_an_allowed_issuer() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let allowed = format!("[\"{}\"]", issuer.url);
    let gw = gateway(
        &issuer,
        &[
            ("AIGW_AUTH__REQUIRE_EXP", "true"),
            ("AIGW_AUTH__REQUIRE_AUD", "true"),
            ("AIGW_AUTH__ALLOWED_ISSUERS", allowed.as_str()),
        ],
    );
    let hdrs = instance_headers();
    let good = instance_claims(&issuer.url, &["complete_code"]);
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        Some(&sign("issuer_a", Some("a"), &good)),
        &hdrs,
    )
    .await;
    assert_eq!(s, 200);
    for drop_claim in ["exp", "aud"] {
        let mut c = good.clone();
        c.as_object_mut().unwrap().remove(drop_claim);
        let (s, _) = call(
            &gw,
            "/v3/code/completions",
            Some(&sign("issuer_a", Some("a"), &c)),
            &hdrs,
        )
        .await;
        assert_eq!(s, 401, "without {drop_claim}");
    }
    let mut c = good.clone();
    c["iss"] = json!("https://elsewhere.example");
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        Some(&sign("issuer_a", Some("a"), &c)),
        &hdrs,
    )
    .await;
    assert_eq!(s, 401, "issuer not allowed");
}

#[tokio::test]
async fn tokens_without_kid_are_tried_against_every_key() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a")), ("issuer_b", Some("b"))]);
    let gw = gateway(&issuer, &[]);
    let claims = instance_claims(&issuer.url, &["complete_code"]);
    for key in ["issuer_a", "issuer_b"] {
        let (s, b) = call(
            &gw,
            "/v3/code/completions",
            Some(&sign(key, None, &claims)),
            &instance_headers(),
        )
        .await;
        assert_eq!(s, 200, "{key}: {b}");
    }
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        Some(&sign("rogue", None, &claims)),
        &instance_headers(),
    )
    .await;
    assert_eq!(s, 401);
}

/// A JWKS entry's `kid` is optional (RFC 7517 4.5) and the original ignores `kid`: a token naming
/// a `kid` that the issuer publishes its key without, or under another name, is accepted.
#[tokio::test]
async fn a_kid_no_published_key_carries_falls_back_to_every_key() {
    let issuer = TestIssuer::start(&[("issuer_a", None), ("issuer_b", Some("b"))]);
    let gw = gateway(&issuer, &[]);
    issuer.wait_jwks_fetches(1);
    let claims = instance_claims(&issuer.url, &["complete_code"]);
    for (key, kid) in [("issuer_a", "a"), ("issuer_b", "not-b")] {
        let (s, b) = call(
            &gw,
            "/v3/code/completions",
            Some(&sign(key, Some(kid), &claims)),
            &instance_headers(),
        )
        .await;
        assert_eq!(s, 200, "{key} as {kid}: {b}");
    }
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        Some(&sign("rogue", Some("a"), &claims)),
        &instance_headers(),
    )
    .await;
    assert_eq!(s, 401);
}

/// Discovery and key-set documents are read up to 1 MiB: a larger one (announced by its length,
/// or streamed without one) is a failed fetch, so a misbehaving issuer can neither fill the
/// gateway's memory nor replace its keys with whatever it sent.
#[tokio::test]
async fn an_oversized_issuer_document_is_a_failed_fetch() {
    use common::fake_upstream::{FakeUpstream, Part, Reply};
    let fetch = |url: String| ai_gateway::auth::jwks::http_fetcher(url, Duration::from_secs(10));
    let discovery = |up: &FakeUpstream| {
        up.route(
            "/.well-known/openid-configuration",
            Reply::json(200, &json!({"jwks_uri": format!("{}/jwks", up.url)})),
        );
    };
    // The control: a real key set of a few hundred bytes.
    let small = FakeUpstream::start().await;
    discovery(&small);
    small.route(
        "/jwks",
        Reply::json(
            200,
            &json!({"keys": [common::issuer::public_jwk("issuer_a")]}),
        ),
    );
    assert_eq!(
        fetch(small.url.clone())().await.map(|k| k.keys.len()),
        Ok(1)
    );

    let limit = ai_gateway::auth::jwks::MAX_DOCUMENT_BYTES;
    let padding = " ".repeat(limit);
    let whole = FakeUpstream::start().await;
    discovery(&whole);
    whole.route(
        "/jwks",
        Reply::json(200, &json!({"keys": [], "pad": padding})),
    );
    let streamed = FakeUpstream::start().await;
    discovery(&streamed);
    let chunk = vec![b' '; 64 * 1024];
    let mut parts = vec![Part::Data(b"{\"keys\": []".to_vec())];
    parts.extend((0..=limit / chunk.len()).map(|_| Part::Data(chunk.clone())));
    parts.push(Part::Data(b"}".to_vec()));
    streamed.route("/jwks", Reply::stream("application/json", parts));
    for up in [whole, streamed] {
        let outcome = fetch(up.url.clone())().await.map(|k| k.keys.len());
        let expected = format!("GET {}/jwks: document larger than {limit} bytes", up.url);
        assert_eq!(outcome, Err(expected));
    }
}

#[tokio::test]
async fn key_rotation_is_picked_up_on_the_first_token_with_the_new_kid() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let gw = gateway(&issuer, &[("AIGW_AUTH__JWKS_REFRESH_COOLDOWN_S", "3600")]);
    issuer.wait_jwks_fetches(1);
    let claims = instance_claims(&issuer.url, &["complete_code"]);
    let hdrs = instance_headers();
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        Some(&sign("issuer_a", Some("a"), &claims)),
        &hdrs,
    )
    .await;
    assert_eq!(s, 200);

    issuer.set_keys(&[("issuer_b", Some("b"))]);
    let (s, b) = call(
        &gw,
        "/v3/code/completions",
        Some(&sign("issuer_b", Some("b"), &claims)),
        &hdrs,
    )
    .await;
    assert_eq!(s, 200, "the new kid is fetched at once, no restart: {b}");
    assert_eq!(issuer.jwks_fetches(), 2);

    // The withdrawn key no longer verifies new tokens (and, within the cooldown, its kid
    // triggers no fetch).
    let mut fresh = claims.clone();
    fresh["jti"] = json!("another");
    let (s, _) = call(
        &gw,
        "/v3/code/completions",
        Some(&sign("issuer_a", Some("a"), &fresh)),
        &hdrs,
    )
    .await;
    assert_eq!(s, 401);
    assert_eq!(issuer.jwks_fetches(), 2);

    let metrics = gw.metrics_text().await;
    assert_eq!(
        metric_value(
            &metrics,
            "jwks_refreshes_total",
            &["issuer=\"Gitlab\"", "trigger=\"startup\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(
            &metrics,
            "jwks_refreshes_total",
            &["issuer=\"Gitlab\"", "trigger=\"unknown_kid\""]
        ),
        Some(1.0)
    );
    assert_eq!(
        metric_value(&metrics, "jwks_keys", &["issuer=\"Gitlab\""]),
        Some(1.0)
    );
    assert!(metric_value(&metrics, "jwks_key_set_age_seconds", &["issuer=\"Gitlab\""]).is_some());
}

#[tokio::test]
async fn a_hanging_issuer_does_not_delay_another_issuers_new_key() {
    let gitlab = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let customers_dot = TestIssuer::start(&[]);
    customers_dot.set_hang(true);
    let gw = gateway(
        &gitlab,
        &[
            ("AIGW_CUSTOMER_PORTAL_URL", customers_dot.url.as_str()),
            // CustomersDot's fetches would hang for 20 minutes.
            ("AIGW_AUTH__JWKS_FETCH_TIMEOUT_S", "600"),
        ],
    );
    gitlab.wait_jwks_fetches(1);
    gitlab.set_keys(&[("issuer_b", Some("b"))]);
    let claims = instance_claims(&gitlab.url, &["complete_code"]);
    let token = sign("issuer_b", Some("b"), &claims);
    let res = reqwest::Client::builder()
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
        .post(format!("{}/v3/code/completions", gw.api))
        .header("Authorization", format!("Bearer {token}"))
        .header("X-Gitlab-Authentication-Type", "oidc")
        .header("X-Gitlab-Realm", "saas")
        .header("X-Gitlab-Instance-Id", "1234")
        .json(&v3_body())
        .send()
        .await
        .expect("answered without waiting for the hanging issuer");
    assert_eq!(res.status(), 200);
    customers_dot.set_hang(false);
}

#[tokio::test]
async fn issuer_down_at_startup_then_up() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    issuer.set_down(true);
    let gw = gateway(&issuer, &[("AIGW_AUTH__JWKS_REFRESH_COOLDOWN_S", "1")]);
    let token = sign(
        "issuer_a",
        Some("a"),
        &instance_claims(&issuer.url, &["complete_code"]),
    );
    let hdrs = instance_headers();
    let (s, b) = call(&gw, "/v3/code/completions", Some(&token), &hdrs).await;
    assert_eq!((s, b), (401, error("Forbidden by auth provider")));
    let metrics = gw.metrics_text().await;
    assert!(
        metric_value(
            &metrics,
            "jwks_refresh_failures_total",
            &["issuer=\"Gitlab\""]
        )
        .unwrap_or(0.0)
            >= 1.0
    );
    assert!(gw
        .wait_record(|r| r["message"]
            .as_str()
            .is_some_and(|m| m.starts_with("key set refresh failed")))
        .is_some());

    issuer.set_down(false);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _) = call(&gw, "/v3/code/completions", Some(&token), &hdrs).await;
        if s == 200 {
            break;
        }
        assert_eq!(s, 401);
        assert!(
            Instant::now() < deadline,
            "the issuer's keys were never fetched"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test]
async fn a_kid_storm_costs_at_most_one_fetch_per_cooldown() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let gw = gateway(&issuer, &[("AIGW_AUTH__JWKS_REFRESH_COOLDOWN_S", "3600")]);
    issuer.wait_jwks_fetches(1);
    let claims = instance_claims(&issuer.url, &["complete_code"]);
    let hdrs = instance_headers();
    let good = sign("issuer_a", Some("a"), &claims);
    let (s, _) = call(&gw, "/v3/code/completions", Some(&good), &hdrs).await;
    assert_eq!(s, 200);
    let before = issuer.jwks_fetches();

    for round in 0..2 {
        let tokens: Vec<String> = (0..100)
            .map(|i| sign("rogue", Some(&format!("random-{round}-{i}")), &claims))
            .collect();
        // Many at once (no body: authentication refuses them before it matters).
        let results: Vec<(u16, String)> = futures::stream::iter(tokens.iter())
            .map(|t| call_with_body(&gw, "/v3/code/completions", Some(t), &hdrs, Value::Null))
            .buffer_unordered(25)
            .collect()
            .await;
        assert_eq!(results.len(), 100);
        let refused: Vec<_> = results.iter().filter(|(s, _)| *s != 401).collect();
        assert!(refused.is_empty(), "not 401: {refused:?}");
        assert!(
            issuer.jwks_fetches() <= before + 1,
            "round {round}: {} fetches for 100 unknown kids",
            issuer.jwks_fetches() - before
        );
    }
    let (s, _) = call(&gw, "/v3/code/completions", Some(&good), &hdrs).await;
    assert_eq!(s, 200, "good tokens still pass");
}

#[tokio::test]
async fn a_jwks_actor_killed_mid_traffic_fails_no_request() {
    let issuer = TestIssuer::start(&[("issuer_a", Some("a"))]);
    let gw = gateway(
        &issuer,
        &[
            ("AIGW_CHAOS__ENABLED", "true"),
            ("AIGW_CHAOS__TOKEN", CHAOS_TOKEN),
            // Every request verifies its signature against the published keys.
            ("AIGW_AUTH__TOKEN_CACHE_SIZE", "0"),
        ],
    );
    issuer.wait_jwks_fetches(1);
    let fetched = issuer.jwks_fetches();
    let hdrs = instance_headers();
    let tokens: Vec<String> = (0..4)
        .map(|i| {
            let mut c = instance_claims(&issuer.url, &["complete_code"]);
            c["jti"] = json!(format!("worker-{i}"));
            sign("issuer_a", if i % 2 == 0 { Some("a") } else { None }, &c)
        })
        .collect();
    let traffic = tokens.iter().map(|t| {
        let gw = &gw;
        let hdrs = &hdrs;
        async move {
            let mut statuses = Vec::new();
            for _ in 0..60 {
                statuses.push(call(gw, "/v3/code/completions", Some(t), hdrs).await.0);
            }
            statuses
        }
    });
    let kills = async {
        let client = reqwest::Client::new();
        let mut killed = 0;
        for _ in 0..5 {
            let res: Value = client
                .post(format!("{}/chaos/kill/jwks", gw.metrics))
                .bearer_auth(CHAOS_TOKEN)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            killed += res["killed"].as_u64().unwrap();
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        killed
    };
    let (statuses, killed) = tokio::join!(futures::future::join_all(traffic), kills);
    assert!(killed >= 2, "killed {killed}");
    let all: Vec<u16> = statuses.into_iter().flatten().collect();
    assert_eq!(all.len(), 240);
    assert!(all.iter().all(|s| *s == 200), "{all:?}");
    let metrics = gw.metrics_text().await;
    assert!(metric_value(&metrics, "actor_restarts_total", &["actor=\"jwks\""]).unwrap() >= 1.0);
    assert_eq!(
        issuer.jwks_fetches(),
        fetched,
        "a restarted actor starts from the last snapshot, not a new fetch"
    );
}
