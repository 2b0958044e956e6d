//! The connection side of the gRPC server: the incoming stream (`TCP_NODELAY` on every accepted
//! connection), the TLS configuration, and [`DecodeErrors`], which turns tonic's INTERNAL for an
//! undecodable request into INVALID_ARGUMENT. No service logic.

use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tonic::codegen::Service;
use tonic::codegen::http;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Code, Status};

use super::ServeError;

/// The connections of `listener`, each with `TCP_NODELAY` set: a reply of a few KB must not wait
/// for Nagle's algorithm and the Peer's delayed ACK (~40 ms per reply).
pub(crate) fn incoming(listener: tokio::net::TcpListener) -> TcpIncoming {
    TcpIncoming::from(listener).with_nodelay(Some(true))
}

/// The TLS settings from the PEM files `cert` (chain) and `key`; a handshake may take at most
/// `handshake_timeout`.
pub(crate) fn tls_config(
    cert: &Path,
    key: &Path,
    handshake_timeout: Duration,
) -> Result<ServerTlsConfig, ServeError> {
    let read = |p: &Path| {
        std::fs::read(p).map_err(|e| ServeError::Tls {
            path: p.display().to_string(),
            reason: e.to_string(),
        })
    };
    let identity = Identity::from_pem(read(cert)?, read(key)?);
    Ok(ServerTlsConfig::new()
        .identity(identity)
        .timeout(handshake_timeout))
}

/// The prefix of prost's decode errors (`prost::DecodeError`'s display), which tonic's codec
/// reports as INTERNAL: a body that is not the request message, or a string that is not UTF-8.
const DECODE_ERROR_PREFIX: &str = "failed to decode Protobuf message";

/// Wraps the router: a response whose status is INTERNAL from a failed request decode becomes
/// INVALID_ARGUMENT (the backend sent bytes that are not the request message). Such responses
/// are trailers-only (the status is in the headers), because decoding happens before a handler
/// runs; every other response passes untouched.
#[derive(Debug, Clone)]
pub(crate) struct DecodeErrors<S> {
    inner: S,
}

impl<S> DecodeErrors<S> {
    pub(crate) fn new(inner: S) -> Self {
        Self { inner }
    }
}

impl<S, B, RB> Service<http::Request<B>> for DecodeErrors<S>
where
    S: Service<http::Request<B>, Response = http::Response<RB>>,
    S::Future: Send + 'static,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        let fut = self.inner.call(req);
        Box::pin(async move {
            let mut resp = fut.await?;
            remap_decode_error(resp.headers_mut());
            Ok(resp)
        })
    }
}

/// Rewrites a decode failure's INTERNAL status in `headers` to INVALID_ARGUMENT.
pub(crate) fn remap_decode_error(headers: &mut http::HeaderMap) {
    let Some(status) = Status::from_header_map(headers) else {
        return;
    };
    if status.code() != Code::Internal || !status.message().starts_with(DECODE_ERROR_PREFIX) {
        return;
    }
    let fixed = Status::invalid_argument(format!(
        "the request body is not a valid message of this method: {}",
        status.message()
    ));
    // Writing a status with a plain ASCII message into a header map cannot fail; if it did,
    // the original status stays.
    let _ = fixed.add_header(headers);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn accepted_connections_have_tcp_nodelay() {
        use tokio_stream::StreamExt;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut incoming = incoming(listener);
        let client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let accepted = incoming.next().await.unwrap().unwrap();
        assert!(
            accepted.nodelay().unwrap(),
            "TCP_NODELAY on the server side"
        );
        drop(client);
    }

    fn headers(status: &Status) -> http::HeaderMap {
        let mut h = http::HeaderMap::new();
        status.add_header(&mut h).unwrap();
        h
    }

    #[test]
    fn decode_failures_become_invalid_argument_and_nothing_else_changes() {
        let mut h = headers(&Status::internal(
            "failed to decode Protobuf message: invalid wire type value: 7",
        ));
        remap_decode_error(&mut h);
        let s = Status::from_header_map(&h).unwrap();
        assert_eq!(s.code(), Code::InvalidArgument);
        assert!(s.message().contains("invalid wire type"), "{s:?}");

        for other in [
            Status::internal("worker 3 stopped"),
            Status::not_found("failed to decode Protobuf message"),
            Status::ok(""),
        ] {
            let mut h = headers(&other);
            remap_decode_error(&mut h);
            let s = Status::from_header_map(&h).unwrap();
            assert_eq!((s.code(), s.message()), (other.code(), other.message()));
        }
        let mut empty = http::HeaderMap::new();
        remap_decode_error(&mut empty);
        assert!(empty.is_empty());
    }
}
