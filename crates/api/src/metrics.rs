//! Prometheus metrics for the node's HTTP servers: a registry rendered in
//! the text exposition format, and a middleware that counts and times every
//! request by route, for any axum router (the validator's API, the gateway).
//!
//! Every label value comes from a bounded set — the router's route
//! templates, a fixed list of methods, the status code — so no client can
//! grow the registry by sending odd paths or methods.

use std::time::Instant;

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::Response;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::{Metric, Registry, Unit};

/// The content type of [`Metrics::render`]'s text (OpenMetrics, which
/// Prometheus scrapes as it does its own text format).
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The prefix of every metric's name.
pub const PREFIX: &str = "idlegrid";

/// The route label of a request that no route matched.
pub const UNMATCHED_ROUTE: &str = "unmatched";

/// The method label of a request whose method is not one of the usual ones.
pub const OTHER_METHOD: &str = "other";

/// The smallest latency bucket's upper bound; each next one doubles it.
const LATENCY_BUCKET_SECONDS_MIN: f64 = 0.000_5;
/// How many latency buckets: 0.5 ms to about 16 s (past the API's longest
/// wait on the engine, 5 s).
const LATENCY_BUCKETS: u16 = 16;

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    route: String,
    method: &'static str,
    status: u16,
}

#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RouteLabels {
    route: String,
}

type LatencyFamily = Family<RouteLabels, Histogram, fn() -> Histogram>;

/// A latency histogram with the buckets every idlegrid latency uses.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(
        LATENCY_BUCKET_SECONDS_MIN,
        2.0,
        LATENCY_BUCKETS,
    ))
}

/// A count as a gauge's value (gauges are `i64`; a count past it reads
/// as the largest).
pub fn gauge_value(value: impl TryInto<i64>) -> i64 {
    value.try_into().unwrap_or(i64::MAX)
}

/// The request counters and latency histograms (cheap to clone: clones
/// share the same series).
#[derive(Debug, Clone)]
struct HttpMetrics {
    requests: Family<RequestLabels, Counter>,
    latency: LatencyFamily,
}

/// A registry of metrics named `idlegrid_…`, holding from the start the
/// HTTP request metrics that [`Metrics::track`] feeds:
///
/// - `idlegrid_http_requests_total{route, method, status}`
/// - `idlegrid_http_request_duration_seconds{route}` (a histogram)
///
/// Register a server's own metrics with [`Metrics::register`], then share
/// it (in an `Arc`) with the handler that serves [`Metrics::render`].
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    http: HttpMetrics,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix(PREFIX);
        let http = HttpMetrics {
            requests: Family::default(),
            latency: LatencyFamily::new_with_constructor(latency_histogram),
        };
        registry.register(
            "http_requests",
            "HTTP requests answered, by route template, method and status",
            http.requests.clone(),
        );
        registry.register_with_unit(
            "http_request_duration",
            "How long HTTP requests took to answer, by route template",
            Unit::Seconds,
            http.latency.clone(),
        );
        Self { registry, http }
    }

    /// Adds a metric; `name` gets the `idlegrid_` prefix (and `_total` if
    /// it is a counter).
    pub fn register(&mut self, name: &str, help: &str, metric: impl Metric) {
        self.registry.register(name, help, metric);
    }

    /// Adds a new metric of type `M` and returns its handle (handles share
    /// the registered series).
    pub fn added<M: Metric + Clone + Default>(&mut self, name: &str, help: &str) -> M {
        let metric = M::default();
        self.registry.register(name, help, metric.clone());
        metric
    }

    /// Adds a metric with a unit (appended to its name).
    pub fn register_with_unit(&mut self, name: &str, help: &str, unit: Unit, metric: impl Metric) {
        self.registry.register_with_unit(name, help, unit, metric);
    }

    /// Every metric in the text exposition format ([`CONTENT_TYPE`]).
    pub fn render(&self) -> String {
        let mut text = String::new();
        if let Err(error) = prometheus_client::encoding::text::encode(&mut text, &self.registry) {
            // Writing to a String does not fail; a metric that cannot
            // encode itself leaves the rest as they are.
            tracing::warn!(%error, "a metric could not be rendered");
        }
        text
    }

    /// `router` with every request it answers counted and timed, the
    /// fallback's included (as route [`UNMATCHED_ROUTE`]). Add it after the
    /// routes: a layer only wraps routes already added.
    pub fn track<S>(&self, router: Router<S>) -> Router<S>
    where
        S: Clone + Send + Sync + 'static,
    {
        router.layer(middleware::from_fn_with_state(
            self.http.clone(),
            count_and_time,
        ))
    }
}

/// A method as a label value, from a fixed set.
fn method_label(method: &axum::http::Method) -> &'static str {
    use axum::http::Method;
    [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
        Method::PATCH,
    ]
    .into_iter()
    .zip(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])
    .find_map(|(known, label)| (known == method).then_some(label))
    .unwrap_or(OTHER_METHOD)
}

async fn count_and_time(State(http): State<HttpMetrics>, request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or(UNMATCHED_ROUTE, MatchedPath::as_str)
        .to_owned();
    let method = method_label(request.method());
    let started = Instant::now();
    let response = next.run(request).await;
    http.latency
        .get_or_create(&RouteLabels {
            route: route.clone(),
        })
        .observe(started.elapsed().as_secs_f64());
    http.requests
        .get_or_create(&RequestLabels {
            route,
            method,
            status: response.status().as_u16(),
        })
        .inc();
    response
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use axum::body::Body;
    use axum::http::StatusCode;
    use axum::routing::get;
    use prometheus_client::metrics::gauge::Gauge;
    use tower::ServiceExt as _;

    use super::*;

    /// The value of the sample `series` (name and labels, as rendered).
    fn sample(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .filter(|line| !line.starts_with('#'))
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
    }

    async fn send(router: &Router, method: &str, uri: &str) -> StatusCode {
        let request = axum::http::Request::builder()
            .method(method)
            .uri(uri)
            .body(Body::empty())
            .expect("request");
        router
            .clone()
            .oneshot(request)
            .await
            .expect("infallible")
            .status()
    }

    #[tokio::test]
    async fn requests_are_counted_and_timed_by_route_template() {
        let mut metrics = Metrics::new();
        let things: Gauge = Gauge::default();
        metrics.register("things", "How many things", things.clone());
        things.set(7);
        let metrics = Arc::new(metrics);
        let router = metrics.track(
            Router::new()
                .route("/items/{id}", get(|| async { "item" }))
                .fallback(|| async { StatusCode::NOT_FOUND }),
        );
        for uri in ["/items/1", "/items/2", "/items/3"] {
            assert_eq!(send(&router, "GET", uri).await, StatusCode::OK);
        }
        assert_eq!(
            send(&router, "POST", "/items/1").await,
            StatusCode::METHOD_NOT_ALLOWED
        );
        assert_eq!(
            send(&router, "GET", "/nothing/here").await,
            StatusCode::NOT_FOUND
        );
        assert_eq!(
            send(&router, "BREW", "/items/1").await,
            StatusCode::METHOD_NOT_ALLOWED
        );

        let text = metrics.render();
        let requests =
            |labels: &str| sample(&text, &format!("idlegrid_http_requests_total{{{labels}}}"));
        assert_eq!(
            requests(r#"route="/items/{id}",method="GET",status="200""#),
            Some(3.0),
            "{text}"
        );
        assert_eq!(
            requests(r#"route="/items/{id}",method="POST",status="405""#),
            Some(1.0)
        );
        assert_eq!(
            requests(r#"route="/items/{id}",method="other",status="405""#),
            Some(1.0)
        );
        assert_eq!(
            requests(r#"route="unmatched",method="GET",status="404""#),
            Some(1.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"idlegrid_http_request_duration_seconds_count{route="/items/{id}"}"#
            ),
            Some(5.0)
        );
        assert_eq!(
            sample(
                &text,
                r#"idlegrid_http_request_duration_seconds_bucket{le="+Inf",route="/items/{id}"}"#
            ),
            Some(5.0),
            "{text}"
        );
        assert_eq!(sample(&text, "idlegrid_things"), Some(7.0));
        assert!(text.ends_with("# EOF\n"), "{text}");
        // No path a client sent becomes a label.
        assert!(!text.contains("/items/1") && !text.contains("/nothing"));
    }
}
