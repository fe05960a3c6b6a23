//! The router: every route in one list, the OpenAPI document that must
//! describe exactly those, and the server that runs them.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::StatusCode;
use axum::routing::{MethodFilter, MethodRouter, on};
use axum::{Json, Router};
use idlegrid_ledger::Store;
use utoipa::OpenApi;

use crate::error::ApiError;
use crate::handlers::{self, account, block, job, jobs, providers, status, submit, transaction};
use crate::limits::REQUEST_BODY_BYTES_MAX;
use crate::scrape::{self, ApiMetrics, scrape};
use crate::staking;
use crate::state::ApiState;

/// One route: where, which method, and what answers.
pub(crate) struct Route<S: Store> {
    pub(crate) path: &'static str,
    /// The handler's method, for the tests to compare with the document.
    #[cfg(test)]
    pub(crate) method: MethodFilter,
    pub(crate) handler: MethodRouter<ApiState<S>>,
}

fn route<S, H, T>(method: MethodFilter, path: &'static str, handler: H) -> Route<S>
where
    S: Store + Send + 'static,
    H: axum::handler::Handler<T, ApiState<S>>,
    T: 'static,
{
    Route {
        path,
        #[cfg(test)]
        method,
        handler: on(method, handler),
    }
}

/// Every route, the one list the router is built from. [`ApiDoc`] must
/// describe exactly these (a test compares the two).
pub(crate) fn routes<S: Store + Send + 'static>(metrics: &Arc<ApiMetrics>) -> Vec<Route<S>> {
    use MethodFilter as M;
    let metrics = metrics.clone();
    vec![
        route(M::GET, "/v1/health", health),
        route(M::GET, "/v1/status", status::<S>),
        route(M::POST, "/v1/transactions", submit::<S>),
        route(M::GET, "/v1/transactions/{hash}", transaction::<S>),
        route(M::GET, "/v1/accounts/{account}", account::<S>),
        route(
            M::GET,
            "/v1/accounts/{account}/delegations",
            staking::delegations::<S>,
        ),
        route(M::GET, "/v1/validators", staking::validators::<S>),
        route(M::GET, "/v1/jobs", jobs::<S>),
        route(M::GET, "/v1/jobs/{job}", job::<S>),
        route(M::GET, "/v1/providers", providers::<S>),
        route(M::GET, "/v1/blocks/{height}", block::<S>),
        route(M::GET, "/v1/openapi.json", openapi_document),
        route(M::GET, "/metrics", move |state| {
            scrape(state, metrics.clone())
        }),
    ]
}

/// Every route, each request counted and timed (`/metrics`).
pub fn router<S: Store + Send + 'static>(state: ApiState<S>) -> Router {
    let metrics = Arc::new(ApiMetrics::new());
    let router = routes::<S>(&metrics)
        .into_iter()
        .fold(Router::new(), |router, route| {
            router.route(route.path, route.handler)
        })
        .fallback(no_route)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(REQUEST_BODY_BYTES_MAX));
    metrics.metrics.track(router).with_state(state)
}

/// Serves the API on `listener` (on its own single-threaded runtime,
/// apart from consensus) until `stop` resolves and the requests in
/// progress are answered.
pub fn serve<S: Store + Send + 'static>(
    listener: std::net::TcpListener,
    state: ApiState<S>,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listener.set_nonblocking(true)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::from_std(listener)?;
        axum::serve(listener, router(state))
            .with_graceful_shutdown(stop)
            .await
    })
}

// ---- GET /v1/health, GET /v1/openapi.json ----

/// Whether the API answers at all (always `ok`).
#[utoipa::path(
    get,
    path = "/v1/health",
    tag = "meta",
    responses((status = 200, description = "The API answers", body = str, content_type = "text/plain", example = "ok"))
)]
async fn health() -> &'static str {
    "ok"
}

/// This document: every route of the API in OpenAPI 3.1.
#[utoipa::path(
    get,
    path = "/v1/openapi.json",
    tag = "meta",
    responses((status = 200, description = "The OpenAPI 3.1 document", body = Object))
)]
async fn openapi_document() -> Json<utoipa::openapi::OpenApi> {
    Json(ApiDoc::openapi())
}

/// The API as OpenAPI 3.1, from the handlers' `#[utoipa::path]`
/// annotations (the schemas they answer with are collected from them).
#[derive(Debug, OpenApi)]
#[openapi(
    info(
        title = "idlegrid validator API",
        description = "A validator's HTTP/JSON API: take signed transactions in, and show accounts, stake, jobs, finalized blocks and the node's status. Every error is `{\"error\":{\"code\",\"message\"}}`; one with no such route answers 404 `not_found`, a wrong method 405 `method_not_allowed`."
    ),
    paths(
        health,
        handlers::status,
        handlers::submit,
        handlers::transaction,
        handlers::account,
        staking::delegations,
        staking::validators,
        handlers::jobs,
        handlers::job,
        handlers::providers,
        handlers::block,
        openapi_document,
        scrape::scrape
    )
)]
pub struct ApiDoc;

// ---- everything else ----

async fn no_route() -> ApiError {
    ApiError::not_found("there is no endpoint at this path (see /v1/status)")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        StatusCode::METHOD_NOT_ALLOWED,
        "method_not_allowed",
        "this endpoint does not take that method",
    )
}
