//! The shared TLS client configuration (src/tls.rs) over real TLS sockets: it trusts the system
//! roots (here a test CA named by `SSL_CERT_FILE`, which the system-roots loader honours) and
//! refuses a server whose certificate chains to anything else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/tls/{name}", env!("CARGO_MANIFEST_DIR"))
}

/// An HTTPS server on 127.0.0.1 with the `{which}-leaf` certificate, answering every request
/// with `200 ok`. Returns its port.
async fn https_server(which: &str) -> u16 {
    let certs = vec![CertificateDer::from_pem_file(fixture(&format!("{which}-leaf.pem"))).unwrap()];
    let key = PrivateKeyDer::from_pem_file(fixture(&format!("{which}-leaf.key"))).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::aws_lc_rs::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                // A refused handshake ends here; the client sees the certificate error.
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = vec![0u8; 4096];
                let mut seen = Vec::new();
                while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut buf).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => seen.extend_from_slice(&buf[..n]),
                    }
                }
                let _ = tls
                    .write_all(
                        b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok",
                    )
                    .await;
                let _ = tls.shutdown().await;
            });
        }
    });
    port
}

#[tokio::test]
async fn clients_trust_the_system_roots_and_nothing_else() {
    // Before the first client is built: the shared configuration loads the roots once.
    std::env::set_var("SSL_CERT_FILE", fixture("trusted-ca.pem"));
    let trusted = https_server("trusted").await;
    let untrusted = https_server("untrusted").await;

    let client = ai_gateway::tls::client_builder().build().unwrap();
    let answer = client
        .get(format!("https://localhost:{trusted}/"))
        .send()
        .await
        .expect("a server with a certificate from a system root is trusted");
    assert_eq!(answer.status(), 200);
    assert_eq!(answer.text().await.unwrap(), "ok");

    // A second client (another worker thread's) shares the configuration and trusts the same.
    let second = ai_gateway::tls::client_builder().build().unwrap();
    assert_eq!(
        second
            .get(format!("https://127.0.0.1:{trusted}/"))
            .send()
            .await
            .unwrap()
            .status(),
        200
    );

    let refused = client
        .get(format!("https://localhost:{untrusted}/"))
        .send()
        .await
        .expect_err("a certificate from an unknown CA is refused");
    let chain = format!("{:?}", refused);
    assert!(chain.contains("UnknownIssuer"), "{chain}");
}
