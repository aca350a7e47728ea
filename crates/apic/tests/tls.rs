//! TLS to the APIC: verification is on by default and refuses a
//! certificate from an unknown CA before anything is sent; `ca_file`
//! trusts a private CA; `tls_verify = false` accepts any certificate. The
//! "APIC" is an HTTPS listener on 127.0.0.1 with a certificate for
//! `localhost` and 127.0.0.1 issued by the test CA in `tests/fixtures`
//! (valid 2000-2100), answering every request with APIC's 401 login error,
//! so a login that got through TLS says so.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;
use vigil_apic::{ApicConfig, ApicUrl, SecretSource, Subscriber, SubscriberStatus};
use vigil_endpoints::ingest::CollectingSink;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

/// An HTTPS listener; returns its port and the number of HTTP requests
/// that arrived over an established TLS session.
async fn https_apic() -> (u16, Arc<AtomicUsize>) {
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(fixture("server.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let key = PrivateKeyDer::from_pem_file(fixture("server.key")).unwrap();
    let config = rustls::ServerConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()
    .unwrap()
    .with_no_client_auth()
    .with_single_cert(certs, key)
    .unwrap();
    let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let requests = Arc::new(AtomicUsize::new(0));
    let seen = requests.clone();
    tokio::spawn(async move {
        loop {
            let Ok((tcp, _)) = listener.accept().await else {
                return;
            };
            let acceptor = acceptor.clone();
            let seen = seen.clone();
            tokio::spawn(async move {
                let Ok(mut tls) = acceptor.accept(tcp).await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                while !buf.windows(4).any(|w| w == b"\r\n\r\n") {
                    match tls.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => buf.extend_from_slice(&chunk[..n]),
                    }
                }
                seen.fetch_add(1, Ordering::SeqCst);
                let body = r#"{"totalCount":"1","imdata":[{"error":{"attributes":{"code":"401","text":"Username or password is incorrect - FAILED local authentication"}}}]}"#;
                let response = format!(
                    "HTTP/1.1 401 Unauthorized\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = tls.write_all(response.as_bytes()).await;
                let _ = tls.shutdown().await;
            });
        }
    });
    (port, requests)
}

/// Runs a subscriber until its first login attempt has failed; returns
/// its status.
async fn first_failure(configure: impl FnOnce(&mut ApicConfig), port: u16) -> SubscriberStatus {
    let password = SecretSource::Inline("pw".into())
        .read(std::path::Path::new("."))
        .unwrap();
    let url = ApicUrl::parse(&format!("https://127.0.0.1:{port}")).unwrap();
    let mut config = ApicConfig::new("fab1", vec![url], "u", password);
    config.reconnect_initial = Duration::from_millis(100);
    configure(&mut config);
    let subscriber = Subscriber::new(config, Arc::new(CollectingSink::new()));
    let mut status = subscriber.status();
    let (stop, stop_rx) = watch::channel(false);
    let task = tokio::spawn(subscriber.run(stop_rx));
    let failed = tokio::time::timeout(
        Duration::from_secs(60),
        status.wait_for(|s| s.failures >= 1),
    )
    .await
    .expect("no login failure within 60 s")
    .expect("status gone")
    .clone();
    stop.send_replace(true);
    tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the subscriber did not stop")
        .unwrap()
        .unwrap();
    failed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn verification_refuses_an_unknown_ca_before_sending_anything() {
    let (port, requests) = https_apic().await;
    let status = first_failure(|_| {}, port).await;
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("aaaLogin"), "{error}");
    assert!(
        error.to_ascii_lowercase().contains("certificate"),
        "the error should say the certificate was refused: {error}"
    );
    assert_eq!(requests.load(Ordering::SeqCst), 0, "a request went out");
    assert_eq!(status.logins, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_file_trusts_a_private_ca() {
    let (port, requests) = https_apic().await;
    let status = first_failure(|c| c.ca_file = Some(fixture("ca.pem")), port).await;
    let error = status.last_error.unwrap_or_default();
    assert!(
        error.contains("401") && error.contains("Username or password is incorrect"),
        "{error}"
    );
    assert!(requests.load(Ordering::SeqCst) >= 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tls_verify_false_accepts_any_certificate() {
    let (port, requests) = https_apic().await;
    let status = first_failure(|c| c.tls_verify = false, port).await;
    let error = status.last_error.unwrap_or_default();
    assert!(error.contains("401"), "{error}");
    assert!(requests.load(Ordering::SeqCst) >= 1);
}
