//! DTLS 1.2 with RSA certificates, dimpl in both roles against OpenSSL:
//! - dimpl server: requests and verifies RSA client certificates (OpenSSL as the client
//!   signs CertificateVerify with RSA-PSS or PKCS#1 v1.5);
//! - dimpl client with its usual ECDSA certificate: offers the ECDHE_RSA suites and
//!   verifies an RSA server's ServerKeyExchange;
//!
//! both refuse RSA keys smaller than `MIN_RSA_KEY_BITS` with a fatal alert, and still
//! work with ECDSA peers and with each other.
//!
//! Needs the `rcgen` feature (dimpl's own certificates).
#![cfg(feature = "rcgen")]

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::Instant;

use dimpl::crypto::Dtls12CipherSuite;
use dimpl::{Config, CryptoError, Dtls, Error, Output, SecurityError};

use crate::common::{deliver_packets, drain_outputs, setup_connected_12_pair};
use crate::ossl_helper::{DtlsCertOptions, DtlsEvent, DtlsPKeyType, OsslDtlsCert};

const FROM_DIMPL: &[u8] = b"application data from dimpl";
const FROM_OPENSSL: &[u8] = b"application data from OpenSSL";

/// What happened while dimpl and an OpenSSL peer handshook and, once connected, each
/// sent one message.
struct Outcome {
    dimpl_connected: bool,
    dimpl_peer_cert: Option<Vec<u8>>,
    dimpl_error: Option<Error>,
    dimpl_received: Vec<u8>,
    /// OpenSSL failed the handshake (it received our fatal alert).
    openssl_failed: bool,
    openssl_received: Vec<u8>,
}

impl Outcome {
    fn exchanged_data_both_ways(&self) -> bool {
        self.dimpl_received == FROM_OPENSSL && self.openssl_received == FROM_DIMPL
    }
}

/// Drive `dimpl` (a client if `dimpl_is_client`, else a server) against an OpenSSL peer
/// in the other role whose certificate has an `openssl_key` key.
fn run_with_openssl(
    mut dimpl: Dtls,
    dimpl_is_client: bool,
    openssl_key: DtlsPKeyType,
) -> (Outcome, OsslDtlsCert) {
    let _ = env_logger::try_init();

    let openssl_cert = OsslDtlsCert::new(DtlsCertOptions {
        pkey_type: openssl_key,
        ..Default::default()
    });
    let mut openssl = openssl_cert.new_dtls_impl().expect("OpenSSL peer");
    openssl.set_active(!dimpl_is_client);
    dimpl.set_active(dimpl_is_client);

    let mut outcome = Outcome {
        dimpl_connected: false,
        dimpl_peer_cert: None,
        dimpl_error: None,
        dimpl_received: Vec::new(),
        openssl_failed: false,
        openssl_received: Vec::new(),
    };
    let mut openssl_events = VecDeque::new();
    let mut out_buf = vec![0u8; 2048];
    for _ in 0..40 {
        dimpl.handle_timeout(Instant::now()).unwrap();
        if outcome.dimpl_error.is_none() && openssl.handle_handshake(&mut openssl_events).is_err() {
            outcome.openssl_failed = true;
        }
        while let Some(datagram) = openssl.poll_datagram() {
            if let Err(e) = dimpl.handle_packet(&datagram) {
                outcome.dimpl_error = Some(e);
            }
        }
        loop {
            match dimpl.poll_output(&mut out_buf) {
                Output::Packet(data)
                    if openssl.handle_receive(data, &mut openssl_events).is_err() =>
                {
                    outcome.openssl_failed = true;
                }
                Output::Packet(_) => {}
                Output::Connected => {
                    outcome.dimpl_connected = true;
                    dimpl.send_application_data(FROM_DIMPL).unwrap();
                }
                Output::PeerCert(cert) => outcome.dimpl_peer_cert = Some(cert.to_vec()),
                Output::ApplicationData(data) => outcome.dimpl_received.extend_from_slice(data),
                Output::Timeout(_) => break,
                _ => {}
            }
        }
        while let Some(event) = openssl_events.pop_front() {
            match event {
                DtlsEvent::Connected => openssl.handle_input(FROM_OPENSSL).unwrap(),
                DtlsEvent::Data(data) => outcome.openssl_received.extend_from_slice(&data),
                _ => {}
            }
        }
        if outcome.exchanged_data_both_ways() || outcome.openssl_failed {
            break;
        }
    }
    (outcome, openssl_cert)
}

/// A dimpl server (ECDSA certificate) against an OpenSSL client.
fn dimpl_server_with_openssl_client(client_key: DtlsPKeyType) -> (Outcome, OsslDtlsCert) {
    let server_cert = dimpl::certificate::generate_self_signed_certificate().expect("server cert");
    let server = Dtls::new_12(Arc::new(Config::default()), server_cert, Instant::now());
    run_with_openssl(server, false, client_key)
}

/// A dimpl client with an ECDSA certificate (as str0m uses) against an OpenSSL server.
fn dimpl_client_with_openssl_server(
    config: Config,
    server_key: DtlsPKeyType,
) -> (Outcome, OsslDtlsCert) {
    let client_cert = dimpl::certificate::generate_self_signed_certificate().expect("client cert");
    let client = Dtls::new_12(Arc::new(config), client_cert, Instant::now());
    run_with_openssl(client, true, server_key)
}

fn assert_connected_and_exchanged(outcome: &Outcome) {
    assert!(
        outcome.dimpl_error.is_none(),
        "dimpl error: {:?}",
        outcome.dimpl_error
    );
    assert!(!outcome.openssl_failed, "OpenSSL failed the handshake");
    assert!(outcome.dimpl_connected, "dimpl should connect");
    assert!(
        outcome.exchanged_data_both_ways(),
        "application data both ways: dimpl got {:?}, OpenSSL got {:?}",
        String::from_utf8_lossy(&outcome.dimpl_received),
        String::from_utf8_lossy(&outcome.openssl_received)
    );
}

#[test]
fn dtls12_server_accepts_rsa_2048_client_certificate() {
    let (outcome, client_cert) = dimpl_server_with_openssl_client(DtlsPKeyType::Rsa2048);

    assert_connected_and_exchanged(&outcome);
    assert_eq!(
        outcome.dimpl_peer_cert.as_deref(),
        Some(client_cert.x509.to_der().unwrap().as_slice()),
        "the server must report the client's RSA certificate"
    );
}

#[test]
fn dtls12_server_refuses_rsa_1024_client_certificate() {
    let (outcome, _) = dimpl_server_with_openssl_client(DtlsPKeyType::Rsa1024);

    assert!(
        !outcome.dimpl_connected,
        "a 1024-bit RSA key must not connect"
    );
    assert_eq!(
        outcome.dimpl_error,
        Some(Error::CryptoError(CryptoError::RsaKeyTooSmall {
            bits: 1024,
            minimum: 2048,
        }))
    );
    assert!(
        outcome.openssl_failed,
        "the client must be told (fatal alert), not left retransmitting"
    );
}

#[test]
fn dtls12_server_still_accepts_ecdsa_client_certificate() {
    let (outcome, _) = dimpl_server_with_openssl_client(DtlsPKeyType::EcDsaP256);

    assert_connected_and_exchanged(&outcome);
}

#[test]
fn dtls12_client_connects_to_rsa_2048_server() {
    // Each ECDHE_RSA suite alone is covered by crypto.rs `dtls12_all_cipher_suites`.
    let (outcome, server_cert) =
        dimpl_client_with_openssl_server(Config::default(), DtlsPKeyType::Rsa2048);

    assert_connected_and_exchanged(&outcome);
    assert_eq!(
        outcome.dimpl_peer_cert.as_deref(),
        Some(server_cert.x509.to_der().unwrap().as_slice()),
        "the client must report the server's RSA certificate"
    );
}

#[test]
fn dtls12_client_refuses_rsa_1024_server() {
    let (outcome, _) = dimpl_client_with_openssl_server(Config::default(), DtlsPKeyType::Rsa1024);

    assert!(
        !outcome.dimpl_connected,
        "a 1024-bit RSA server must not connect"
    );
    let error = outcome.dimpl_error.expect("the client must report why");
    assert_eq!(
        error,
        Error::CryptoError(CryptoError::RsaKeyTooSmall {
            bits: 1024,
            minimum: 2048,
        })
    );
    assert!(
        error.to_string().contains("1024 bits"),
        "the error names the key size: {error}"
    );
    assert!(
        outcome.openssl_failed,
        "the server must be told (fatal alert), not left retransmitting"
    );
}

#[test]
fn dtls12_client_still_connects_to_ecdsa_server() {
    let (outcome, _) = dimpl_client_with_openssl_server(Config::default(), DtlsPKeyType::EcDsaP256);

    assert_connected_and_exchanged(&outcome);
}

#[test]
fn dtls12_dimpl_client_and_server_still_connect() {
    let (mut client, mut server, _) = setup_connected_12_pair(Instant::now());

    client.send_application_data(b"from the client").unwrap();
    server.send_application_data(b"from the server").unwrap();
    let client_out = drain_outputs(&mut client);
    let server_out = drain_outputs(&mut server);
    deliver_packets(&client_out.packets, &mut server);
    deliver_packets(&server_out.packets, &mut client);

    assert_eq!(drain_outputs(&mut server).app_data, [b"from the client"]);
    assert_eq!(drain_outputs(&mut client).app_data, [b"from the server"]);
}

#[test]
fn dtls12_ecdsa_server_does_not_choose_an_rsa_suite() {
    // A client offering only ECDHE_RSA suites: our server's key is ECDSA, so it must
    // not pick one of them (it would have to sign ServerKeyExchange with RSA).
    let now = Instant::now();
    let rsa_only = Config::builder()
        .dtls12_cipher_suites(&[
            Dtls12CipherSuite::ECDHE_RSA_AES128_GCM_SHA256,
            Dtls12CipherSuite::ECDHE_RSA_AES256_GCM_SHA384,
        ])
        .build()
        .expect("config");
    let cert = || dimpl::certificate::generate_self_signed_certificate().expect("cert");
    let mut client = Dtls::new_12(Arc::new(rsa_only), cert(), now);
    client.set_active(true);
    // No HelloVerifyRequest round trip: the first ClientHello reaches suite selection.
    let server_config = Config::builder()
        .use_server_cookie(false)
        .build()
        .expect("config");
    let mut server = Dtls::new_12(Arc::new(server_config), cert(), now);
    server.set_active(false);

    client.handle_timeout(now).unwrap();
    let client_hello = drain_outputs(&mut client).packets;
    assert!(!client_hello.is_empty(), "the client sends its ClientHello");
    let errors: Vec<_> = client_hello
        .iter()
        .filter_map(|p| server.handle_packet(p).err())
        .collect();

    assert_eq!(
        errors,
        [Error::SecurityError(
            SecurityError::NoMutuallyAcceptableCipherSuite
        )]
    );
}
