//! `GET /metrics`: the HTTP requests' metrics and the node's, read from
//! it at each scrape.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use idlegrid_chain::FinalizedCounts;
use idlegrid_ledger::Store;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;

use crate::error::{ApiError, ErrorBody};
use crate::limits::PEER_SILENCE_MAX;
use crate::metrics::{self, Metrics, gauge_value};
use crate::state::{ApiState, finalized_height, with_node};

// ---- GET /metrics ----

/// The API's metrics: the HTTP requests' (from [`Metrics::track`]) and the
/// node's, read from it at each scrape.
#[derive(Debug)]
pub(crate) struct ApiMetrics {
    pub(crate) metrics: Metrics,
    ledger_height: Gauge,
    finalized_height: Gauge,
    mempool_transactions: Gauge,
    mempool_bytes: Gauge,
    peers_connected: Gauge,
    transactions_applied: Counter,
    transactions_rejected: Counter,
}

impl ApiMetrics {
    pub(crate) fn new() -> Self {
        let mut metrics = Metrics::new();
        let ledger_height = metrics.added::<Gauge>(
            "ledger_height",
            "The height of the last block applied to the ledger",
        );
        let finalized_height = metrics.added::<Gauge>(
            "finalized_height",
            "The highest block the engine knows is finalized (the ledger height before the engine runs)",
        );
        let mempool_transactions = metrics.added::<Gauge>(
            "mempool_transactions",
            "Transactions waiting in this validator's pool",
        );
        let mempool_bytes = metrics.added::<Gauge>(
            "mempool_bytes",
            "Encoded bytes of the transactions waiting in this validator's pool",
        );
        let peers_connected = metrics.added::<Gauge>(
            "peers_connected",
            &format!(
                "Other validators heard from on the relay channel in the last {} seconds",
                PEER_SILENCE_MAX.as_secs()
            ),
        );
        let transactions_applied = metrics.added::<Counter>(
            "transactions_applied",
            "Transactions in blocks finalized since this node started that the ledger applied",
        );
        let transactions_rejected = metrics.added::<Counter>(
            "transactions_rejected",
            "Transactions in blocks finalized since this node started that the ledger rejected",
        );
        Self {
            metrics,
            ledger_height,
            finalized_height,
            mempool_transactions,
            mempool_bytes,
            peers_connected,
            transactions_applied,
            transactions_rejected,
        }
    }
}

/// What a scrape reads from the node under its lock.
struct NodeReading {
    height: u64,
    mempool_transactions: usize,
    mempool_bytes: usize,
    peers_connected: usize,
    finalized: FinalizedCounts,
}

/// Prometheus metrics: ledger and finalized height, the pool, peers,
/// finalized transactions, and every API request by route, method and
/// status with its latency.
#[utoipa::path(
    get,
    path = "/metrics",
    tag = "meta",
    responses(
        (status = 200, description = "The metrics in the OpenMetrics text format", body = str, content_type = "application/openmetrics-text"),
        (status = 500, description = "The request failed inside the node (`internal`)", body = ErrorBody),
        (status = 503, description = "The node cannot answer now (`unavailable`)", body = ErrorBody),
    )
)]
pub(crate) async fn scrape<S: Store + Send + 'static>(
    State(state): State<ApiState<S>>,
    metrics: Arc<ApiMetrics>,
) -> Result<Response, ApiError> {
    let reading = with_node(&state, |node| {
        Ok(NodeReading {
            height: node.ledger().height(),
            mempool_transactions: node.mempool.len(),
            mempool_bytes: node.mempool.bytes(),
            peers_connected: node
                .peers()
                .iter()
                .filter(|(_, silent)| *silent <= PEER_SILENCE_MAX)
                .count(),
            finalized: node.finalized_transactions(),
        })
    })
    .await?;
    let finalized_height = finalized_height(&state, reading.height).await;
    metrics.ledger_height.set(gauge_value(reading.height));
    metrics.finalized_height.set(gauge_value(finalized_height));
    metrics
        .mempool_transactions
        .set(gauge_value(reading.mempool_transactions));
    metrics
        .mempool_bytes
        .set(gauge_value(reading.mempool_bytes));
    metrics
        .peers_connected
        .set(gauge_value(reading.peers_connected));
    // The node counts; the counters follow it (never back, so two scrapes
    // at once cannot count a block twice).
    metrics
        .transactions_applied
        .inner()
        .fetch_max(reading.finalized.applied, Ordering::Relaxed);
    metrics
        .transactions_rejected
        .inner()
        .fetch_max(reading.finalized.rejected, Ordering::Relaxed);
    Ok((
        [(axum::http::header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        metrics.metrics.render(),
    )
        .into_response())
}
