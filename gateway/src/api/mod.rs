//! The edge: the only module that knows protobuf and gRPC. It builds the tonic router (the four
//! `switchboard.v1` services behind bearer-key auth, plus health and reflection) over a
//! [`GatewayHandle`]. It never touches a socket or an `Rtc`.

mod convert;
mod service;
mod status;

pub use service::ControlService;

use switchboard::v1::data_service_server::DataServiceServer;
use switchboard::v1::event_service_server::EventServiceServer;
use switchboard::v1::room_service_server::RoomServiceServer;
use switchboard::v1::session_service_server::SessionServiceServer;
use tonic::service::Routes;
use tonic::{Request, Status};

use crate::handle::GatewayHandle;

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

/// Serves the API on `listener` until `stop` is cancelled.
pub(crate) async fn serve(
    listener: tokio::net::TcpListener,
    handle: GatewayHandle,
    auth: Auth,
    event_buffer: usize,
    stop: tokio_util::sync::CancellationToken,
    cluster: Option<crate::cluster::Cluster>,
) -> Result<Server, tonic_reflection::server::Error> {
    let (routes, health) = routes(handle, auth, event_buffer, cluster).await?;
    let task = tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(listener);
        let res = tonic::transport::Server::builder()
            .add_routes(routes)
            .serve_with_incoming_shutdown(incoming, stop.cancelled_owned())
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "gRPC server failed");
        }
    });
    Ok(Server { task, health })
}

impl Server {
    /// Marks the control services as not serving (during shutdown).
    pub(crate) async fn set_not_serving(&self) {
        let health = &self.health;
        health
            .set_not_serving::<RoomServiceServer<ControlService>>()
            .await;
        health
            .set_not_serving::<SessionServiceServer<ControlService>>()
            .await;
        health
            .set_not_serving::<EventServiceServer<ControlService>>()
            .await;
        health
            .set_not_serving::<DataServiceServer<ControlService>>()
            .await;
    }

    /// Waits for the server to stop (after its `stop` token was cancelled), at most `grace`.
    /// Returns whether it did.
    pub(crate) async fn stopped_within(self, grace: std::time::Duration) -> bool {
        tokio::time::timeout(grace, self.task).await.is_ok()
    }
}

/// Builds the routes: control services (authenticated), health and reflection (open).
async fn routes(
    handle: GatewayHandle,
    auth: Auth,
    event_buffer: usize,
    cluster: Option<crate::cluster::Cluster>,
) -> Result<(Routes, tonic_health::server::HealthReporter), tonic_reflection::server::Error> {
    let svc = ControlService::new(handle, event_buffer);
    let (health, health_svc) = tonic_health::server::health_reporter();
    health
        .set_serving::<RoomServiceServer<ControlService>>()
        .await;
    health
        .set_serving::<SessionServiceServer<ControlService>>()
        .await;
    health
        .set_serving::<EventServiceServer<ControlService>>()
        .await;
    health
        .set_serving::<DataServiceServer<ControlService>>()
        .await;
    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(switchboard::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let routes = Routes::new(health_svc)
        .add_service(reflection().build_v1()?)
        .add_service(reflection().build_v1alpha()?);
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
        .add_service(SessionServiceServer::with_interceptor(
            svc.clone(),
            move |r| a2.check(r),
        ))
        .add_service(EventServiceServer::with_interceptor(
            svc.clone(),
            move |r| a3.check(r),
        ))
        .add_service(DataServiceServer::with_interceptor(svc, move |r| {
            a4.check(r)
        }));
    Ok((routes, health))
}
