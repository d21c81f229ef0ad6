//! The running service (issue 2): configuration, the HTTP edge, monitoring, metrics, shutdown.
//! Every test starts the real binary and talks to it over loopback sockets.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod common;

use std::time::Duration;

use common::{metric_value, run_to_exit, Gateway};
use serde_json::Value;

fn dev() -> Gateway {
    Gateway::start(&[], &["--dev"])
}

#[tokio::test]
async fn health_checks_answer_without_authentication() {
    // Production default: authentication on, no keys.
    let gw = Gateway::start(&[], &[]);
    let client = reqwest::Client::new();
    for path in ["/monitoring/healthz", "/monitoring/ready"] {
        let res = client
            .get(format!("{}{path}", gw.api))
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200, "{path}");
        assert_eq!(res.headers()["content-type"], "application/json");
        assert_eq!(res.text().await.unwrap(), "{}");
    }
}

#[tokio::test]
async fn authentication_runs_before_routing() {
    let gw = Gateway::start(&[], &[]);
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/no/such/route", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 401, "401 before 404");
    assert_eq!(res.headers()["content-type"], "application/json");
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"error":"No authorization header presented"}"#
    );
}

#[tokio::test]
async fn unknown_routes_and_methods_answer_like_fastapi() {
    let gw = dev();
    let client = reqwest::Client::new();
    let res = client
        .post(format!("{}/no/such/route", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
    assert_eq!(res.text().await.unwrap(), r#"{"detail":"Not Found"}"#);
    let res = client
        .post(format!("{}/monitoring/healthz", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 405);
    assert_eq!(
        res.text().await.unwrap(),
        r#"{"detail":"Method Not Allowed"}"#
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated_and_process_time_is_set() {
    let gw = dev();
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{}/monitoring/healthz", gw.api))
        .send()
        .await
        .unwrap();
    let generated = res.headers()["x-request-id"].to_str().unwrap().to_string();
    assert_eq!(generated.len(), 32);
    assert!(generated
        .chars()
        .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    let process_time: f64 = res.headers()["x-process-time"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(process_time >= 0.0);

    let res = client
        .get(format!("{}/monitoring/healthz", gw.api))
        .header("X-Request-ID", "my-own-id-123")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["x-request-id"], "my-own-id-123");

    // The id is the correlation id of the request's access-log line.
    let record = gw
        .wait_record(|r| r["logger"] == "api.access" && r["correlation_id"] == "my-own-id-123")
        .expect("access log with the correlation id");
    assert_eq!(record["path"], "/monitoring/healthz");
}

#[tokio::test]
async fn cors_as_the_original() {
    let gw = dev();
    let client = reqwest::Client::new();
    let res = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v2/code/completions", gw.api),
        )
        .header("Origin", "https://ide.example")
        .header("Access-Control-Request-Method", "POST")
        .header(
            "Access-Control-Request-Headers",
            "authorization,x-gitlab-realm",
        )
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    let h = res.headers();
    assert_eq!(h["access-control-allow-origin"], "*");
    assert_eq!(h["access-control-allow-methods"], "POST");
    assert_eq!(
        h["access-control-allow-headers"],
        "authorization,x-gitlab-realm"
    );
    assert_eq!(h["access-control-max-age"], "600");

    let res = client
        .request(
            reqwest::Method::OPTIONS,
            format!("{}/v2/code/completions", gw.api),
        )
        .header("Origin", "https://ide.example")
        .header("Access-Control-Request-Method", "DELETE")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 400);
    assert_eq!(res.text().await.unwrap(), "Disallowed CORS method");

    let res = client
        .get(format!("{}/monitoring/healthz", gw.api))
        .header("Origin", "https://ide.example")
        .send()
        .await
        .unwrap();
    assert_eq!(res.headers()["access-control-allow-origin"], "*");
}

#[tokio::test]
async fn one_structured_access_log_line_per_request() {
    let gw = dev();
    let client = reqwest::Client::new();
    client
        .get(format!("{}/monitoring/healthz?probe=1", gw.api))
        .header("User-Agent", "test-agent/1.0")
        .header("X-Gitlab-Instance-Id", "1234")
        .header("X-Gitlab-Realm", "self-managed")
        .header("X-Gitlab-Rails-Send-Start", "1")
        .send()
        .await
        .unwrap();
    let r = gw.access_log("/monitoring/healthz");
    assert_eq!(r["level"], "info");
    assert_eq!(r["type"], "mlops");
    assert_eq!(r["stage"], "main");
    assert_eq!(r["status_code"], 200);
    assert_eq!(r["method"], "GET");
    assert_eq!(r["http_version"], "1.1");
    assert_eq!(r["client_ip"], "127.0.0.1");
    assert_eq!(r["user_agent"], "test-agent/1.0");
    assert_eq!(r["gitlab_instance_id"], "1234");
    assert_eq!(r["gitlab_realm"], "self-managed");
    assert!(r["url"]
        .as_str()
        .unwrap()
        .ends_with("/monitoring/healthz?probe=1"));
    let message = r["message"].as_str().unwrap();
    assert!(
        message.ends_with(r#" - "GET /monitoring/healthz?probe=1 HTTP/1.1" 200"#),
        "{message}"
    );
    for key in [
        "duration_s",
        "response_start_duration_s",
        "first_chunk_duration_s",
        "cpu_s",
        "duration_request",
    ] {
        assert!(r[key].is_number(), "{key} in {r}");
    }
    assert!(
        r["duration_request"].as_f64().unwrap() > 1.0e9,
        "now minus 1970"
    );
    assert!(r["request_arrived_at"].as_str().unwrap().ends_with('Z'));
    let lines = gw
        .records()
        .into_iter()
        .filter(|r| r["logger"] == "api.access" && r["path"] == "/monitoring/healthz")
        .count();
    assert_eq!(lines, 1);
}

#[tokio::test]
async fn metrics_are_on_their_own_port_only() {
    let gw = dev();
    let client = reqwest::Client::new();
    client
        .get(format!("{}/monitoring/healthz", gw.api))
        .send()
        .await
        .unwrap();
    client
        .post(format!("{}/nothing/here", gw.api))
        .send()
        .await
        .unwrap();
    let text = gw.metrics_text().await;
    for name in [
        "process_resident_memory_bytes",
        "process_cpu_seconds_total",
        "process_open_fds",
    ] {
        assert!(
            metric_value(&text, name, &[]).is_some(),
            "{name} in\n{text}"
        );
    }
    assert_eq!(
        metric_value(&text, "actor_restarts_total", &["actor=\"requests\""]),
        Some(0.0)
    );
    // Health checks and unmatched routes are not observed, as the original.
    assert!(!text.contains("handler=\"/monitoring/healthz\""), "{text}");
    assert!(!text.contains("/nothing/here"), "{text}");
    // The API port does not serve metrics.
    let res = client
        .get(format!("{}/metrics", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 404);
}

#[test]
fn a_bad_port_stops_startup_with_the_variable_name() {
    let (code, _, stderr) = run_to_exit(&[("AIGW_FASTAPI__API_PORT", "eighty")], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "one line: {stderr}");
    assert!(stderr.contains("AIGW_FASTAPI__API_PORT"), "{stderr}");

    let (code, _, stderr) = run_to_exit(&[("AIGW_FASTAPI__API_PORT", "70000")], &[]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("AIGW_FASTAPI__API_PORT"), "{stderr}");

    let (code, _, stderr) = run_to_exit(&[("AIGW_AUTH__BYPASS_EXTERNAL", "perhaps")], &[]);
    assert_eq!(code, Some(2));
    assert!(stderr.contains("AIGW_AUTH__BYPASS_EXTERNAL"), "{stderr}");
}

#[test]
fn a_bad_config_file_stops_startup_naming_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("gateway.toml");
    std::fs::write(&path, "[http]\nmax_request_body_bytez = 5\n").unwrap();
    let (code, _, stderr) = run_to_exit(&[], &["--config", path.to_str().unwrap()]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("max_request_body_bytez"), "{stderr}");
    let (code, _, stderr) = run_to_exit(&[], &["--config", "/nonexistent/gateway.toml"]);
    assert_eq!(code, Some(2), "{stderr}");
    assert!(stderr.contains("/nonexistent/gateway.toml"), "{stderr}");
}

#[test]
fn a_port_in_use_fails_startup() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let (code, stdout, _) = run_to_exit(&[("AIGW_FASTAPI__API_PORT", &port)], &[]);
    assert_eq!(code, Some(1));
    assert!(stdout.contains("cannot listen"), "{stdout}");
}

#[tokio::test]
async fn dotenv_file_is_read_from_the_working_directory() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".env"),
        "AIGW_FASTAPI__API_PORT=not-a-port\n",
    )
    .unwrap();
    let out = std::process::Command::new(common::binary())
        .env_clear()
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("AIGW_FASTAPI__API_PORT"));
}

#[tokio::test]
async fn sigterm_stops_accepting_and_exits_zero() {
    let mut gw = dev();
    let client = reqwest::Client::new();
    let res = client
        .get(format!("{}/monitoring/healthz", gw.api))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    gw.sigterm();
    assert_eq!(gw.wait_exit(Duration::from_secs(10)), Some(0));
    let after = reqwest::Client::new()
        .get(format!("{}/monitoring/healthz", gw.api))
        .timeout(Duration::from_secs(2))
        .send()
        .await;
    assert!(after.is_err(), "no longer accepting");
    let stopped: Vec<Value> = gw
        .records()
        .into_iter()
        .filter(|r| r["message"] == "stopped")
        .collect();
    assert_eq!(stopped.len(), 1);
}
