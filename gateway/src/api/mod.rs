//! The edge: the only module that knows protobuf and gRPC. It builds the tonic server (the four
//! `switchboard.v1` services behind bearer-key auth, health, and reflection as configured) over a
//! [`GatewayHandle`], on the listener it is given: `TCP_NODELAY` on every accepted connection,
//! optional TLS, and undecodable requests answered `INVALID_ARGUMENT`. It never touches a Worker
//! socket or an `Rtc`.

pub(crate) mod convert;
mod event_stream;
mod service;
mod status;

pub use service::ControlService;

use switchboard::v1::data_service_server::DataServiceServer;
use switchboard::v1::event_service_server::EventServiceServer;
use switchboard::v1::room_service_server::RoomServiceServer;
use switchboard::v1::session_service_server::SessionServiceServer;
use tonic::service::Routes;
use tonic::{Request, Status};

use crate::config::GrpcConfig;
use crate::handle::GatewayHandle;

mod edge;
pub(crate) use edge::{DecodeErrors, incoming};

/// Checks `authorization: Bearer <key>` when a key is configured.
#[derive(Clone)]
pub struct Auth {
    key: Option<String>,
}

impl Auth {
    pub(crate) fn new(key: &str) -> Self {
        Self {
            key: (!key.is_empty()).then(|| key.to_string()),
        }
    }

    #[allow(clippy::result_large_err)]
    pub(crate) fn check(&self, req: Request<()>) -> Result<Request<()>, Status> {
        let Some(key) = &self.key else {
            return Ok(req);
        };
        let given = req
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .ok_or_else(|| status::unauthenticated("missing `authorization: Bearer <api key>`"))?;
        if !constant_time_eq(given.as_bytes(), key.as_bytes()) {
            return Err(status::unauthenticated("invalid API key"));
        }
        Ok(req)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The running gRPC server: its task and the health reporter its shutdown flips.
pub(crate) struct Server {
    task: tokio::task::JoinHandle<()>,
    health: tonic_health::server::HealthReporter,
}

/// Why the gRPC server could not start.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The reflection descriptors did not build.
    #[error("gRPC reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    /// The TLS certificate or key could not be read or used.
    #[error("gRPC TLS ({path}): {reason}")]
    Tls {
        /// The file or key concerned.
        path: String,
        /// Why.
        reason: String,
    },
}

/// Serves the API on `listener` until `stop` is cancelled, as `grpc` says (API key, reflection,
/// TLS); each event stream buffers up to `event_buffer` events.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    handle: GatewayHandle,
    grpc: &GrpcConfig,
    event_buffer: usize,
    stop: tokio_util::sync::CancellationToken,
    cluster: Option<crate::cluster::Cluster>,
) -> Result<Server, ServeError> {
    let auth = Auth::new(&grpc.api_key);
    let reflection = Reflection::from_config(grpc);
    let (routes, health) = routes(handle, auth, reflection, event_buffer, cluster).await?;
    let mut builder = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&grpc.tls_cert, &grpc.tls_key) {
        builder = builder
            .tls_config(edge::tls_config(
                cert,
                key,
                std::time::Duration::from_secs(grpc.tls_handshake_timeout_secs),
            )?)
            .map_err(|e| ServeError::Tls {
                path: cert.display().to_string(),
                reason: e.to_string(),
            })?;
    }
    let svc = DecodeErrors::new(routes.prepare());
    let task = tokio::spawn(async move {
        let res = builder
            .serve_with_incoming_shutdown(svc, incoming(listener), stop.cancelled_owned())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok(Server { task, health })
}

/// Whether and to whom reflection is served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Reflection {
    /// Not served.
    Off,
    /// Served behind the API key (open when no key is set).
    WithKey,
    /// Served to anyone.
    Public,
}

impl Reflection {
    pub(crate) fn from_config(g: &GrpcConfig) -> Self {
        match (g.reflection, g.reflection_public) {
            (false, _) => Self::Off,
            (true, false) => Self::WithKey,
            (true, true) => Self::Public,
        }
    }
}

/// How often the health service re-reads the Workers' status.
const HEALTH_POLL: std::time::Duration = std::time::Duration::from_secs(1);

/// Whether the control services are SERVING: every Worker healthy (none restarting after a fault
/// of its core, none whose thread stopped) and the gateway not draining.
fn control_serving(workers: &[crate::WorkerHealth], draining: bool) -> bool {
    !draining && workers.iter().all(|w| w.healthy)
}

impl Server {
    /// Marks the control services as not serving (during shutdown).
    pub(crate) async fn set_not_serving(&self) {
        set_control_status(&self.health, false).await;
    }

    /// Keeps the health service true to the Workers until `stop`: the control services and the
    /// overall status ("") go NOT_SERVING while any Worker is unhealthy, and back when all are.
    pub(crate) fn watch_workers(
        &self,
        handle: GatewayHandle,
        stop: tokio_util::sync::CancellationToken,
    ) {
        let health = self.health.clone();
        tokio::spawn(async move {
            let mut serving = true;
            loop {
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(HEALTH_POLL) => {}
                }
                let now = control_serving(&handle.worker_health(), handle.is_draining());
                if now != serving {
                    if !now && !handle.is_draining() {
                        tracing::warn!("a Worker is unhealthy: health reports NOT_SERVING");
                    }
                    set_control_status(&health, now).await;
                    serving = now;
                }
            }
        });
    }

    /// Waits for the server to stop (after its `stop` token was cancelled), at most `grace`.
    /// Returns whether it did.
    pub(crate) async fn stopped_within(self, grace: std::time::Duration) -> bool {
        tokio::time::timeout(grace, self.task).await.is_ok()
    }
}

/// Builds the routes: control services (authenticated), health (open) and reflection (as
/// `reflection` says).
async fn routes(
    handle: GatewayHandle,
    auth: Auth,
    reflection: Reflection,
    event_buffer: usize,
    cluster: Option<crate::cluster::Cluster>,
) -> Result<(Routes, tonic_health::server::HealthReporter), tonic_reflection::server::Error> {
    // The Session service carries SDP: its requests are bounded by `signaling.max_sdp_bytes`
    // (plus room for the other fields), so an oversize offer is refused while decoding.
    let session_request_limit = handle.max_sdp_bytes() + 64 * 1024;
    let svc = ControlService::new(handle, event_buffer);
    let (health, health_svc) = tonic_health::server::health_reporter();
    set_control_status(&health, true).await;
    let builder = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchboard::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let mut routes = Routes::new(health_svc);
    // Reflection behind the key unless public: an open key-less listener stays open either way.
    let reflection_auth = match reflection {
        Reflection::Public => Auth::new(""),
        _ => auth.clone(),
    };
    if reflection != Reflection::Off {
        let (r1, r2) = (reflection_auth.clone(), reflection_auth);
        routes = routes
            .add_service(tonic::service::interceptor::InterceptedService::new(
                builder().build_v1()?,
                move |r| r1.check(r),
            ))
            .add_service(tonic::service::interceptor::InterceptedService::new(
                builder().build_v1alpha()?,
                move |r| r2.check(r),
            ));
    }
    // Cluster mode: the same services, routed to each Room's owner node (see `cluster`).
    if let Some(c) = cluster {
        return Ok((c.routes(routes, svc, &auth, event_buffer), health));
    }
    let a1 = auth.clone();
    let a2 = auth.clone();
    let a3 = auth.clone();
    let a4 = auth;
    let routes = routes
        .add_service(RoomServiceServer::with_interceptor(svc.clone(), move |r| {
            a1.check(r)
        }))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            SessionServiceServer::new(svc.clone()).max_decoding_message_size(session_request_limit),
            move |r| a2.check(r),
        ))
        .add_service(EventServiceServer::with_interceptor(
            svc.clone(),
            move |r| a3.check(r),
        ))
        .add_service(tonic::service::interceptor::InterceptedService::new(
            DataServiceServer::new(svc).max_decoding_message_size(service::SEND_DATA_DECODE_LIMIT),
            move |r| a4.check(r),
        ));
    Ok((routes, health))
}

/// Sets the control services and the overall status ("") SERVING or NOT_SERVING.
async fn set_control_status(health: &tonic_health::server::HealthReporter, serving: bool) {
    use tonic::server::NamedService;
    use tonic_health::ServingStatus;
    let status = if serving {
        ServingStatus::Serving
    } else {
        ServingStatus::NotServing
    };
    for name in [
        "",
        RoomServiceServer::<ControlService>::NAME,
        SessionServiceServer::<ControlService>::NAME,
        EventServiceServer::<ControlService>::NAME,
        DataServiceServer::<ControlService>::NAME,
    ] {
        health.set_service_status(name, status).await;
    }
}

#[cfg(test)]
mod health_tests {
    use super::control_serving;
    use crate::WorkerHealth;

    #[test]
    fn one_unhealthy_worker_or_draining_is_not_serving() {
        let ok = WorkerHealth {
            restarts: 2,
            healthy: true,
        };
        let down = WorkerHealth {
            restarts: 0,
            healthy: false,
        };
        assert!(control_serving(&[ok, ok], false));
        assert!(!control_serving(&[ok, down], false));
        assert!(!control_serving(&[ok, ok], true));
    }
}
