//! End-to-end tests: the CLI against tiny servers started inside the test.
//!
//! The servers speak just enough HTTP/1.1 to answer the driver: a fixed JSON answer, error
//! statuses, a server that never answers, one that closes idle keep-alive connections, and
//! paced streams carrying `t<i> ` markers in several framings (Anthropic SSE, the gateway's v4
//! SSE, raw chunked text, close-delimited text, a Content-Length body, and chunks split mid-line),
//! plus broken streams (a skipped, a repeated marker, too few, cut, stalled). Assertions are on
//! counts, verdicts and the order of percentiles, never on absolute timings.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use clap::Parser;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use crate::report::Report;
use crate::{execute, Cli};

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

async fn start_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            if let Ok((sock, _)) = listener.accept().await {
                sock.set_nodelay(true).unwrap();
                tokio::spawn(serve_conn(sock));
            }
        }
    });
    addr
}

/// Query parameter `name` of `path` as a number.
fn param(path: &str, name: &str) -> Option<u32> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.parse().ok()).flatten()
    })
}

fn text_param<'a>(path: &'a str, name: &str) -> Option<&'a str> {
    let query = path.split_once('?')?.1;
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then_some(v)
    })
}

async fn serve_conn(mut sock: TcpStream) {
    let mut buf = Vec::new();
    loop {
        let (head, head_end) = loop {
            if let Some(end) = find(&buf, b"\r\n\r\n") {
                break (String::from_utf8_lossy(&buf[..end]).into_owned(), end + 4);
            }
            let mut tmp = [0u8; 4096];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        };
        let header = |name: &str| {
            head.lines().find_map(|l| {
                let (n, v) = l.split_once(':')?;
                n.eq_ignore_ascii_case(name).then(|| v.trim().to_owned())
            })
        };
        let len: usize = header("content-length").map_or(0, |v| v.parse().unwrap());
        while buf.len() < head_end + len {
            let mut tmp = [0u8; 4096];
            match sock.read(&mut tmp).await {
                Ok(0) | Err(_) => return,
                Ok(n) => buf.extend_from_slice(&tmp[..n]),
            }
        }
        let body: Vec<u8> = buf.drain(..head_end + len).skip(head_end).collect();
        let path = head.split(' ').nth(1).unwrap_or("/").to_owned();
        let checked = header("x-test").as_deref() == Some("yes")
            && header("content-type").as_deref() == Some("application/json")
            && body == br#"{"stream":true}"#;
        if !respond(&mut sock, &path, checked).await {
            return;
        }
    }
}

fn whole(status: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

fn chunk(data: &[u8]) -> Vec<u8> {
    let mut out = format!("{:x}\r\n", data.len()).into_bytes();
    out.extend_from_slice(data);
    out.extend_from_slice(b"\r\n");
    out
}

/// Writes `bytes`, in two writes a moment apart when `split` (to land in two reads).
async fn send(sock: &mut TcpStream, bytes: &[u8], split: bool) -> std::io::Result<()> {
    if split && bytes.len() > 1 {
        let (a, b) = bytes.split_at(bytes.len() / 2);
        sock.write_all(a).await?;
        tokio::time::sleep(Duration::from_millis(1)).await;
        sock.write_all(b).await
    } else {
        sock.write_all(bytes).await
    }
}

/// Answers one request; returns whether the connection stays open.
async fn respond(sock: &mut TcpStream, path: &str, checked: bool) -> bool {
    let route = path.split('?').next().unwrap_or_default();
    let ok = match route {
        "/json" => sock
            .write_all(&whole("200 OK", r#"{"text":"t0 t1 "}"#))
            .await
            .is_ok(),
        "/status503" => sock
            .write_all(&whole("503 Service Unavailable", r#"{"error":"busy"}"#))
            .await
            .is_ok(),
        "/checked" => {
            let status = if checked { "200 OK" } else { "400 Bad Request" };
            sock.write_all(&whole(status, "{}")).await.is_ok()
        }
        "/hang" => {
            tokio::time::sleep(Duration::from_secs(3600)).await;
            false
        }
        // Answers, then closes without saying so: the next request on this connection finds
        // it closed (what a server's keep-alive timeout does to an idle connection).
        "/oneshot" => {
            let _ = sock.write_all(&whole("200 OK", "{}")).await;
            false
        }
        "/stream" => stream(sock, path).await.unwrap_or(false),
        _ => sock.write_all(&whole("404 Not Found", "{}")).await.is_ok(),
    };
    ok
}

/// A paced stream of `n` deltas `every` ms apart in the framing `form`, with optional faults:
/// `skip=K` leaves out marker K, `dup=K` sends it twice, `cut=K` closes the connection after K
/// deltas, `stall=K` stops sending (connection open) after K deltas.
async fn stream(sock: &mut TcpStream, path: &str) -> std::io::Result<bool> {
    let form = text_param(path, "form").unwrap_or("raw");
    let n = param(path, "n").unwrap_or(8);
    let every = Duration::from_millis(u64::from(param(path, "every").unwrap_or(1)));
    let (skip, dup) = (param(path, "skip"), param(path, "dup"));
    let (cut, stall) = (param(path, "cut"), param(path, "stall"));

    let mut indices = Vec::new();
    for i in 0..n {
        if Some(i) != skip {
            indices.push(i);
        }
        if Some(i) == dup {
            indices.push(i);
        }
    }
    let event = |i: u32| -> Vec<u8> {
        match form {
            "anthropic" => format!("event: content_block_delta\ndata: {{\"type\":\"content_block_delta\",\"index\":0,\"delta\":{{\"type\":\"text_delta\",\"text\":\"t{i} \"}}}}\n\n").into_bytes(),
            "v4" => format!("event: content_chunk\r\ndata: {{\"choices\": [{{\"delta\": {{\"content\": \"t{i} \"}}, \"index\": 0}}]}}\r\n\r\n").into_bytes(),
            _ => format!("t{i} ").into_bytes(),
        }
    };

    if form == "length" {
        let body: Vec<u8> = indices.iter().flat_map(|&i| event(i)).collect();
        let mut out = format!(
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ncontent-length: {}\r\n\r\n",
            body.len()
        )
        .into_bytes();
        out.extend_from_slice(&body);
        sock.write_all(&out).await?;
        return Ok(true);
    }

    let chunked = form != "close";
    let split = form == "split";
    let mut head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n".to_vec();
    head.extend_from_slice(if chunked {
        b"transfer-encoding: chunked\r\n\r\n"
    } else {
        b"connection: close\r\n\r\n"
    });
    if form == "anthropic" {
        // Look-alikes that must not count as markers.
        let preamble = b"event: message_start\ndata: {\"type\":\"message_start\",\"message\":{\"id\":\"msg_01t5Xt7 \",\"model\":\"claude-3-5-sonnet-20240620\",\"usage\":{\"input_tokens\":12,\"output_tokens\":1}}}\n\n";
        head.extend_from_slice(&chunk(preamble));
    }
    sock.write_all(&head).await?;
    for (sent, &i) in indices.iter().enumerate() {
        if sent > 0 {
            tokio::time::sleep(every).await;
        }
        if Some(sent as u32) == cut {
            return Ok(false);
        }
        if Some(sent as u32) == stall {
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
        let data = event(i);
        let frame = if chunked { chunk(&data) } else { data };
        send(sock, &frame, split).await?;
    }
    if chunked {
        send(sock, b"0\r\n\r\n", split).await?;
        Ok(true)
    } else {
        sock.shutdown().await?;
        Ok(false)
    }
}

async fn run(args: &[&str]) -> Report {
    let mut argv = vec!["loadgen"];
    argv.extend_from_slice(args);
    let cli = Cli::try_parse_from(argv).unwrap();
    execute(cli.command).await.unwrap()
}

async fn run_streams(addr: SocketAddr, query: &str, streams: &str, deltas: &str) -> Report {
    let url = format!("http://{addr}/stream?{query}");
    run(&[
        "streams",
        "--url",
        &url,
        "--method",
        "POST",
        "--streams",
        streams,
        "--deltas",
        deltas,
        "--interval-ms",
        "1",
        "--timeout",
        "5s",
    ])
    .await
}

fn assert_ordered(s: &crate::stats::Summary) {
    assert!(s.min <= s.p50, "{s:?}");
    assert!(
        s.p50 <= s.p90 && s.p90 <= s.p99 && s.p99 <= s.p999 && s.p999 <= s.max,
        "{s:?}"
    );
    assert!(s.min <= s.mean && s.mean <= s.max, "{s:?}");
}

#[tokio::test]
async fn clean_streams_in_every_framing() {
    let addr = start_server().await;
    for form in ["anthropic", "v4", "raw", "close", "split", "length"] {
        let report = run_streams(addr, &format!("form={form}&n=8"), "6", "8").await;
        let s = report.streams.as_ref().unwrap();
        assert_eq!(
            (s.requested, s.ok, s.dropped, s.failed),
            (6, 6, 0, 0),
            "{form}: {s:?}"
        );
        assert_eq!(s.frames_expected, 48, "{form}");
        assert_eq!(s.frames_received, 48, "{form}");
        assert!(s.drop_reasons.is_empty(), "{form}");
        let ttft = s.ttft_us.as_ref().unwrap();
        assert_eq!(ttft.count, 6, "{form}");
        assert_ordered(ttft);
        let gaps = s.gap_us.as_ref().unwrap();
        assert_eq!(gaps.count, 6 * 7, "{form}");
        assert_ordered(gaps);
        let r = &report.requests;
        assert_eq!(
            (r.scheduled, r.sent, r.ok, r.failed),
            (6, 6, 6, 0),
            "{form}"
        );
        assert_eq!(r.status_codes.get("200"), Some(&6), "{form}");
        assert_eq!(report.latency_us.as_ref().unwrap().count, 6, "{form}");
        // Each stream takes at least as long as its first marker.
        assert!(
            report.latency_us.as_ref().unwrap().max >= ttft.min,
            "{form}"
        );
    }
}

#[tokio::test]
async fn a_skipped_marker_drops_the_stream() {
    let addr = start_server().await;
    let report = run_streams(addr, "form=v4&n=8&skip=3", "5", "8").await;
    let s = report.streams.as_ref().unwrap();
    assert_eq!((s.ok, s.dropped, s.failed), (0, 5, 0), "{s:?}");
    assert_eq!(s.drop_reasons.get("skipped"), Some(&5));
    assert_eq!(s.frames_received, 5 * 7);
    assert_eq!(s.ttft_us, None);
    assert_eq!(s.gap_us, None);
    // At the HTTP level these were fine 200s.
    assert_eq!(report.requests.ok, 5);
}

#[tokio::test]
async fn repeated_missing_cut_and_extra_markers() {
    let addr = start_server().await;

    let report = run_streams(addr, "form=anthropic&n=6&dup=2", "3", "6").await;
    let s = report.streams.unwrap();
    assert_eq!((s.ok, s.dropped), (0, 3));
    assert_eq!(s.drop_reasons.get("out_of_order"), Some(&3));

    let report = run_streams(addr, "form=raw&n=5", "3", "8").await;
    let s = report.streams.unwrap();
    assert_eq!((s.ok, s.dropped), (0, 3));
    assert_eq!(s.drop_reasons.get("incomplete"), Some(&3));

    let report = run_streams(addr, "form=raw&n=9", "3", "8").await;
    let s = report.streams.unwrap();
    assert_eq!(s.drop_reasons.get("extra"), Some(&3));

    // Closed in the middle of a chunked body.
    let report = run_streams(addr, "form=raw&n=8&cut=3", "3", "8").await;
    let s = report.streams.as_ref().unwrap();
    assert_eq!((s.ok, s.dropped, s.failed), (0, 3, 0), "{s:?}");
    assert_eq!(s.drop_reasons.get("truncated"), Some(&3));
    assert_eq!(s.frames_received, 9);
    assert_eq!(report.requests.failed_io, 3);
}

#[tokio::test]
async fn stalls_errors_and_timeouts_in_streams() {
    let addr = start_server().await;

    let url = format!("http://{addr}/stream?form=v4&n=8&stall=2");
    let report = run(&[
        "streams",
        "--url",
        &url,
        "--streams",
        "2",
        "--deltas",
        "8",
        "--timeout",
        "300ms",
    ])
    .await;
    let s = report.streams.unwrap();
    assert_eq!((s.ok, s.dropped, s.failed), (0, 2, 0));
    assert_eq!(s.drop_reasons.get("timeout"), Some(&2));
    assert_eq!(report.requests.failed_timeout, 2);

    let url = format!("http://{addr}/hang");
    let report = run(&[
        "streams",
        "--url",
        &url,
        "--streams",
        "2",
        "--deltas",
        "8",
        "--timeout",
        "200ms",
    ])
    .await;
    let s = report.streams.unwrap();
    assert_eq!((s.ok, s.dropped, s.failed), (0, 0, 2));

    let url = format!("http://{addr}/status503");
    let report = run(&["streams", "--url", &url, "--streams", "3", "--deltas", "8"]).await;
    let s = report.streams.unwrap();
    assert_eq!((s.ok, s.dropped, s.failed), (0, 0, 3));
    assert_eq!(report.requests.failed_status, 3);
    assert_eq!(report.requests.status_codes.get("503"), Some(&3));
}

#[tokio::test]
async fn ramped_streams_all_arrive() {
    let addr = start_server().await;
    let url = format!("http://{addr}/stream?form=anthropic&n=16&every=2");
    let report = run(&[
        "streams",
        "--url",
        &url,
        "--streams",
        "40",
        "--deltas",
        "16",
        "--ramp-ms",
        "40",
        "--interval-ms",
        "2",
        "--late-slack-ms",
        "1000",
    ])
    .await;
    let s = report.streams.unwrap();
    assert_eq!((s.ok, s.dropped, s.failed), (40, 0, 0));
    assert_eq!(s.late_frames, 0);
    assert_eq!(s.gap_us.unwrap().count, 40 * 15);
    assert_eq!(s.late_threshold_ms, 1002.0);
    assert_eq!(report.requests.connects, 40);
}

#[tokio::test]
async fn open_loop_sends_exactly_the_schedule() {
    let addr = start_server().await;
    let url = format!("http://{addr}/json");
    let report = run(&[
        "rate",
        "--url",
        &url,
        "--rate",
        "400",
        "--duration",
        "250ms",
        "--connections",
        "4",
    ])
    .await;
    let r = &report.requests;
    assert_eq!(
        (r.scheduled, r.sent, r.ok, r.failed),
        (100, 100, 100, 0),
        "{r:?}"
    );
    assert_eq!((r.connects, r.retries, r.expired), (4, 0, 0));
    let latency = report.latency_us.as_ref().unwrap();
    assert_eq!(latency.count, 100);
    assert_ordered(latency);
    assert!(report.requests_per_s > 0.0);
    assert!(report.elapsed_s > 0.0);
    assert!(report.streams.is_none());
    let json = serde_json::to_value(&report).unwrap();
    assert_eq!(json["mode"], "rate");
    assert_eq!(json["config"]["rate"], 400.0);
    assert_eq!(json["requests"]["ok"], 100);
    assert_eq!(
        json["requests"]["body_bytes"],
        100 * r#"{"text":"t0 t1 "}"#.len()
    );
    assert!(json["latency_us"]["p999"].is_number());
}

#[tokio::test]
async fn open_loop_keeps_the_schedule_when_the_server_hangs() {
    let addr = start_server().await;
    let url = format!("http://{addr}/hang");
    let report = run(&[
        "rate",
        "--url",
        &url,
        "--rate",
        "100",
        "--duration",
        "200ms",
        "--connections",
        "1",
        "--timeout",
        "100ms",
    ])
    .await;
    let r = &report.requests;
    // Every due request is accounted for although one connection could carry none of them.
    assert_eq!((r.scheduled, r.ok, r.failed_timeout), (20, 0, 20), "{r:?}");
    assert_eq!(r.sent + r.expired, 20);
    assert_eq!(report.latency_us, None);
}

#[tokio::test]
async fn open_loop_with_warmup_measures_only_the_window() {
    let addr = start_server().await;
    let url = format!("http://{addr}/json");
    let report = run(&[
        "rate",
        "--url",
        &url,
        "--rate",
        "200",
        "--duration",
        "100ms",
        "--warmup",
        "100ms",
        "--connections",
        "2",
    ])
    .await;
    let r = &report.requests;
    assert!((19..=21).contains(&r.scheduled), "{r:?}");
    assert_eq!(r.ok, r.scheduled);
}

#[tokio::test]
async fn closed_loop_reuses_its_connections() {
    let addr = start_server().await;
    let url = format!("http://{addr}/json");
    let report = run(&[
        "closed",
        "--url",
        &url,
        "--concurrency",
        "4",
        "--duration",
        "200ms",
    ])
    .await;
    let r = &report.requests;
    assert!(r.ok > 4, "{r:?}");
    assert_eq!((r.failed, r.connects, r.retries), (0, 4, 0), "{r:?}");
    assert_eq!(r.scheduled, r.sent);
    assert_eq!(r.sent, r.ok);
    assert_eq!(report.latency_us.as_ref().unwrap().count, r.ok);
    assert!(report.requests_per_s > 0.0);
    assert!(report.send_lag_us.is_none());
}

#[tokio::test]
async fn closed_idle_connections_are_retried_once() {
    let addr = start_server().await;
    let url = format!("http://{addr}/oneshot");
    let report = run(&[
        "closed",
        "--url",
        &url,
        "--concurrency",
        "1",
        "--duration",
        "100ms",
    ])
    .await;
    let r = &report.requests;
    assert!(r.ok >= 2, "{r:?}");
    assert_eq!(r.failed, 0, "{r:?}");
    assert!(r.retries >= 1, "{r:?}");
    assert!(r.connects >= 2, "{r:?}");
}

static FILES: AtomicU64 = AtomicU64::new(0);

#[tokio::test]
async fn body_file_and_headers_reach_the_server() {
    let addr = start_server().await;
    let url = format!("http://{addr}/checked");
    let path = std::env::temp_dir().join(format!(
        "loadgen-test-{}-{}.json",
        std::process::id(),
        FILES.fetch_add(1, Ordering::Relaxed)
    ));
    std::fs::write(&path, br#"{"stream":true}"#).unwrap();
    let file = path.to_str().unwrap();
    let common = [
        "--url",
        &url,
        "--body",
        file,
        "--concurrency",
        "1",
        "--duration",
        "50ms",
    ];

    let mut args = vec!["closed", "-H", "x-test: yes"];
    args.extend_from_slice(&common);
    let report = run(&args).await;
    assert!(report.requests.ok > 0);
    assert_eq!(report.requests.failed, 0);

    let mut args = vec!["closed"];
    args.extend_from_slice(&common);
    let report = run(&args).await;
    assert_eq!(report.requests.ok, 0);
    assert!(report.requests.failed_status > 0);
    assert!(report.requests.status_codes.contains_key("400"));
    std::fs::remove_file(&path).unwrap();
}

#[tokio::test]
async fn refused_connections_are_io_failures() {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    drop(listener);
    let url = format!("http://{addr}/json");
    let report = run(&[
        "closed",
        "--url",
        &url,
        "--concurrency",
        "2",
        "--duration",
        "30ms",
    ])
    .await;
    let r = &report.requests;
    assert_eq!(r.ok, 0);
    assert!(r.failed_io > 0);
    assert_eq!(r.failed, r.failed_io);
    assert!(!r.errors.is_empty());
    assert_eq!(r.connects, 0);

    let report = run(&["streams", "--url", &url, "--streams", "2", "--deltas", "4"]).await;
    let s = report.streams.unwrap();
    assert_eq!((s.ok, s.dropped, s.failed), (0, 0, 2));
}

#[tokio::test]
async fn setup_errors_are_reported_not_panicked() {
    for args in [
        vec![
            "rate",
            "--url",
            "https://127.0.0.1:1/",
            "--rate",
            "1",
            "--duration",
            "1s",
        ],
        vec![
            "closed",
            "--url",
            "http://127.0.0.1:1/",
            "--body",
            "/nonexistent/loadgen",
            "--concurrency",
            "1",
            "--duration",
            "1s",
        ],
        vec![
            "closed",
            "--url",
            "http://127.0.0.1:1/",
            "-H",
            "content-length: 1",
            "--concurrency",
            "1",
            "--duration",
            "1s",
        ],
    ] {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(&args);
        let cli = Cli::try_parse_from(argv).unwrap();
        assert!(execute(cli.command).await.is_err(), "{args:?}");
    }
    for args in [
        vec![
            "rate",
            "--url",
            "http://h/",
            "--rate",
            "0",
            "--duration",
            "1s",
        ],
        vec![
            "rate",
            "--url",
            "http://h/",
            "--rate",
            "1",
            "--duration",
            "0s",
        ],
        vec![
            "closed",
            "--url",
            "http://h/",
            "--concurrency",
            "0",
            "--duration",
            "1s",
        ],
        vec![
            "streams",
            "--url",
            "http://h/",
            "--streams",
            "1",
            "--deltas",
            "0",
        ],
        vec!["streams", "--url", "http://h/", "--streams", "1"],
    ] {
        let mut argv = vec!["loadgen"];
        argv.extend_from_slice(&args);
        assert!(Cli::try_parse_from(argv).is_err(), "{args:?}");
    }
}

#[test]
fn durations() {
    use crate::{parse_duration, parse_duration_or_zero};
    assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
    assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
    assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
    assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
    assert_eq!(parse_duration_or_zero("0s"), Ok(Duration::ZERO));
    assert!(parse_duration("0").is_err());
    assert!(parse_duration("-1s").is_err());
    assert!(parse_duration("abc").is_err());
    assert!(parse_duration("25h").is_err());
    assert!(parse_duration("NaN").is_err());
}
