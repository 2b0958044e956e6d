//! DTLS 1.2 client certificates with RSA keys: a dimpl server requests and verifies them
//! (OpenSSL as the client, which signs CertificateVerify with RSA-PSS or PKCS#1 v1.5),
//! and refuses keys smaller than `MIN_RSA_KEY_BITS`.

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use dimpl::{Config, CryptoError, Dtls, Error, Output};

use crate::ossl_helper::{DtlsCertOptions, DtlsPKeyType, OsslDtlsCert};

/// What the dimpl server saw while an OpenSSL client with `client_key` handshook with it.
struct Outcome {
    server_connected: bool,
    server_peer_cert: Option<Vec<u8>>,
    server_error: Option<Error>,
    /// OpenSSL failed the handshake (it received our fatal alert).
    client_failed: bool,
}

fn handshake_with_openssl_client(client_key: DtlsPKeyType) -> (Outcome, OsslDtlsCert) {
    let _ = env_logger::try_init();

    let client_cert = OsslDtlsCert::new(DtlsCertOptions {
        pkey_type: client_key,
        ..Default::default()
    });
    let mut client = client_cert.new_dtls_impl().expect("OpenSSL client");
    client.set_active(true);

    let server_cert = dimpl::certificate::generate_self_signed_certificate().expect("server cert");
    let mut server = Dtls::new_12(Arc::new(Config::default()), server_cert, Instant::now());
    server.set_active(false);

    let mut outcome = Outcome {
        server_connected: false,
        server_peer_cert: None,
        server_error: None,
        client_failed: false,
    };
    let mut client_events = VecDeque::new();
    let mut out_buf = vec![0u8; 2048];
    for _ in 0..40 {
        server.handle_timeout(Instant::now()).unwrap();
        if outcome.server_error.is_none() && client.handle_handshake(&mut client_events).is_err() {
            outcome.client_failed = true;
        }
        while let Some(datagram) = client.poll_datagram() {
            if let Err(e) = server.handle_packet(&datagram) {
                outcome.server_error = Some(e);
            }
        }
        loop {
            match server.poll_output(&mut out_buf) {
                Output::Packet(data)
                    if client.handle_receive(data, &mut client_events).is_err() =>
                {
                    outcome.client_failed = true;
                }
                Output::Packet(_) => {}
                Output::Connected => outcome.server_connected = true,
                Output::PeerCert(cert) => outcome.server_peer_cert = Some(cert.to_vec()),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        if (outcome.server_connected && client.is_connected()) || outcome.client_failed {
            break;
        }
    }
    (outcome, client_cert)
}

#[test]
fn dtls12_server_accepts_rsa_2048_client_certificate() {
    let (outcome, client_cert) = handshake_with_openssl_client(DtlsPKeyType::Rsa2048);

    assert!(
        outcome.server_error.is_none(),
        "server error: {:?}",
        outcome.server_error
    );
    assert!(outcome.server_connected, "dimpl server should connect");
    assert_eq!(
        outcome.server_peer_cert.as_deref(),
        Some(client_cert.x509.to_der().unwrap().as_slice()),
        "the server must report the client's RSA certificate"
    );
}

#[test]
fn dtls12_server_refuses_rsa_1024_client_certificate() {
    let (outcome, _) = handshake_with_openssl_client(DtlsPKeyType::Rsa1024);

    assert!(
        !outcome.server_connected,
        "a 1024-bit RSA key must not connect"
    );
    assert_eq!(
        outcome.server_error,
        Some(Error::CryptoError(CryptoError::RsaKeyTooSmall {
            bits: 1024,
            minimum: 2048,
        }))
    );
    assert!(
        outcome.client_failed,
        "the client must be told (fatal alert), not left retransmitting"
    );
}

#[test]
fn dtls12_server_still_accepts_ecdsa_client_certificate() {
    let (outcome, _) = handshake_with_openssl_client(DtlsPKeyType::EcDsaP256);

    assert!(outcome.server_error.is_none(), "{:?}", outcome.server_error);
    assert!(outcome.server_connected);
}
