//! The gateway role: a relay (circuit relay v2) through which providers
//! behind NAT are reachable, with DCUtR to turn relayed connections into
//! direct ones where the NAT allows, and the validator's HTTP API served to
//! clients that only know the gateway.

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Context;
use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{any, get};
use idlegrid_net::{Event, Multiaddr, Overlay, OverlayConfig, Response as WorkResponse};
use idlegrid_types::{AccountId, Keypair};
use serde_json::json;
use tokio::sync::oneshot;
use tracing::{debug, warn};

use crate::dashboard::{self, Board, Local, routes as dashboard_routes, track};
use crate::jobs::{self, JobService, JobServiceConfig, routes as job_routes};
use idlegrid_api::{ApiDoc, ErrorBody, REQUEST_BODY_BYTES_MAX};
use utoipa::OpenApi;

/// Largest answer from the validator the gateway passes on, bytes.
const ANSWER_BYTES_MAX: u64 = 64 << 20;

/// How a gateway runs.
#[derive(Debug, Clone)]
pub struct GatewayConfig {
    pub key: Keypair,
    /// The validator API the gateway serves to its clients.
    pub node: String,
    /// `relay_server` is turned on.
    pub overlay: OverlayConfig,
    pub api_listen: SocketAddr,
    /// Providers and jobs in this process that the dashboard shows.
    pub local: Local,
    /// Runs jobs for HTTP clients (`/v1/blobs`, `POST /v1/jobs`, …), when set.
    pub jobs: Option<JobServiceConfig>,
}

/// What a started gateway tells its caller.
#[derive(Debug, Clone)]
pub struct GatewayReady {
    pub account: AccountId,
    pub addresses: Vec<Multiaddr>,
    pub api: SocketAddr,
}

pub(crate) struct Proxy {
    node: String,
    agent: ureq::Agent,
    overlay: Overlay,
}

/// Runs a gateway until `shutdown` resolves.
pub async fn run_gateway(
    config: GatewayConfig,
    ready: oneshot::Sender<GatewayReady>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> anyhow::Result<()> {
    let mut overlay_config = config.overlay.clone();
    overlay_config.relay_server = true;
    let (overlay, mut events, _driver) = Overlay::start(&config.key, overlay_config)?;
    while let Some(event) = events.recv().await {
        if matches!(event, Event::Listening(_)) {
            break;
        }
    }
    let listener = tokio::net::TcpListener::bind(config.api_listen)
        .await
        .with_context(|| format!("failed to listen for the API on {}", config.api_listen))?;
    let api = listener
        .local_addr()
        .context("the API listener has no address")?;
    let proxy = Arc::new(Proxy {
        node: config.node.trim_end_matches('/').to_owned(),
        agent: ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(std::time::Duration::from_secs(30)))
            .build()
            .new_agent(),
        overlay: overlay.clone(),
    });
    let board = Board::new(&config.node, overlay.clone(), config.local.clone());
    let watcher = tokio::spawn(Arc::clone(&board).watch());
    let addresses = overlay.listen_addresses().await?;
    let mut router = Router::new()
        .route("/v1/gateway", any(gateway_status))
        .route("/v1/openapi.json", get(openapi_document))
        .route("/v1/{*rest}", any(forward))
        // `POST /v1/jobs` is the job service's when it runs; listing jobs
        // is the validator's.
        .route("/v1/jobs", get(forward))
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX))
        .with_state(proxy)
        .merge(dashboard_routes(Arc::clone(&board)));
    let mut service = None;
    if let Some(jobs) = &config.jobs {
        let started = JobService::start(
            jobs,
            &config.node,
            config.key.clone(),
            &config.overlay,
            &addresses,
            config.local.clone(),
        )?;
        router = router.merge(job_routes(Arc::clone(&started)));
        service = Some(started);
    }
    let router = track(&board, router);
    let _ = ready.send(GatewayReady {
        account: config.key.account_id(),
        addresses,
        api,
    });
    // A gateway runs no tasks: it serves the blobs its HTTP clients
    // uploaded, and answers other work requests with a refusal.
    let events_task = tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Request { request, reply, .. } => {
                    let answer = match &service {
                        Some(service) => service.answer_content(&request),
                        None => None,
                    };
                    reply.send(answer.unwrap_or_else(|| {
                        WorkResponse::refused("gateway", "a gateway runs no tasks")
                    }))
                }
                Event::Offer { provider, offer } => board.offer(provider, offer.body),
                Event::Misbehaved { peer, reason } => warn!(%peer, %reason, "peer blocked"),
                other => debug!(?other, "overlay event"),
            }
        }
    });
    axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
        .context("the gateway's API failed")?;
    events_task.abort();
    watcher.abort();
    Ok(())
}

/// The gateway itself: its account, its overlay addresses (what
/// `--relay` and `--bootstrap` take), its peers, and its validator.
#[utoipa::path(
    get,
    path = "/v1/gateway",
    tag = "gateway",
    responses(
        (status = 200, description = "`{account, addresses, peers, node}`", body = Object),
        (status = 500, description = "Never: listed for the shape of errors", body = ErrorBody),
    )
)]
async fn gateway_status(State(proxy): State<Arc<Proxy>>) -> Response {
    let addresses: Vec<String> = proxy
        .overlay
        .listen_addresses()
        .await
        .unwrap_or_default()
        .iter()
        .map(ToString::to_string)
        .collect();
    let peers = proxy.overlay.connected().await.unwrap_or_default().len();
    axum::Json(json!({
        "account": proxy.overlay.account().to_string(),
        "addresses": addresses,
        "peers": peers,
        "node": proxy.node,
    }))
    .into_response()
}

/// Passes a `/v1` request to the validator and its answer back.
async fn forward(
    State(proxy): State<Arc<Proxy>>,
    method: Method,
    uri: Uri,
    body: Bytes,
) -> Response {
    let path = uri
        .path_and_query()
        .map_or("/", |path| path.as_str())
        .to_owned();
    let url = format!("{}{path}", proxy.node);
    let agent = proxy.agent.clone();
    let answer = tokio::task::spawn_blocking(move || -> Result<(u16, Vec<u8>), String> {
        let response = match method {
            Method::GET => agent.get(&url).call(),
            Method::POST => agent
                .post(&url)
                .header("content-type", "application/json")
                .send(&body[..]),
            other => return Err(format!("the gateway passes on GET and POST, not {other}")),
        }
        .map_err(|error| format!("the validator at {url} did not answer: {error}"))?;
        let status = response.status().as_u16();
        let bytes = response
            .into_body()
            .with_config()
            .limit(ANSWER_BYTES_MAX)
            .read_to_vec()
            .map_err(|error| format!("the validator's answer could not be read: {error}"))?;
        Ok((status, bytes))
    })
    .await;
    match answer {
        Ok(Ok((status, bytes))) => (
            StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_GATEWAY),
            [(header::CONTENT_TYPE, "application/json")],
            bytes,
        )
            .into_response(),
        Ok(Err(message)) => bad_gateway(&message),
        Err(error) => bad_gateway(&format!("the gateway's request failed: {error}")),
    }
}

fn bad_gateway(message: &str) -> Response {
    let body = json!({ "error": { "code": "bad_gateway", "message": message } });
    (StatusCode::BAD_GATEWAY, axum::Json(body)).into_response()
}

/// The gateway's own routes in OpenAPI 3.1; [`gateway_document`] adds the
/// validator's, which the gateway passes on.
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "idlegrid gateway API",
        description = "A gateway's HTTP/JSON API: its own routes (the network it sees, jobs submitted from its process, live events, metrics, and, when it runs jobs for HTTP clients, blobs and jobs) and, under /v1, the validator's API, which it passes on. Every error is `{\"error\":{\"code\",\"message\"}}`."
    ),
    paths(
        gateway_status,
        dashboard::network,
        dashboard::local_jobs,
        dashboard::task_output,
        dashboard::events,
        dashboard::activity,
        jobs::put_blob,
        jobs::get_blob,
        jobs::create_job,
        jobs::sign_job,
        jobs::job_progress,
        jobs::job_events,
        jobs::job_results,
        openapi_document,
        dashboard::scrape
    )
)]
pub struct GatewayDoc;

/// What a gateway answers: its own routes, then the validator's it passes on.
pub fn gateway_document() -> utoipa::openapi::OpenApi {
    let mut document = GatewayDoc::openapi();
    // `merge` keeps what the gateway already describes (its /metrics and
    // this document) and adds the rest.
    document.merge(ApiDoc::openapi());
    document
}

/// This document: the gateway's routes and the validator's, in OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
async fn openapi_document() -> axum::Json<utoipa::openapi::OpenApi> {
    axum::Json(gateway_document())
}
