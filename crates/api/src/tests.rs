//! The API's answers, driven in memory through the router.

use std::sync::{Arc, OnceLock};

use axum::Router;
use axum::body::Body;
use axum::http::{Request, StatusCode};
use axum::routing::MethodFilter;
use futures::future::BoxFuture;
use idlegrid_chain::{Block, Chain, Mempool, MempoolConfig, genesis_digest, shared};
use idlegrid_ledger::{
    Genesis, Ledger, MemoryStore, NoReExecution, OpenJob, Params, SignedTransaction, Transaction,
    TxKind, transaction_hash,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{ContentId, ExecutionLimits, JobId, Keypair, codec};
use serde_json::{Value, json};
use tower::ServiceExt as _;

use utoipa::OpenApi;

use crate::metrics;
use crate::router::routes;
use crate::scrape::ApiMetrics;
use crate::{
    ApiDoc, ApiState, FinalizedBlocks, JOBS_LIMIT_DEFAULT, JOBS_LIMIT_MAX, REQUEST_BODY_BYTES_MAX,
    router,
};

const CHAIN: &str = "idlegrid-api-test";

fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

/// A fresh ledger: account 1 holds 1,000; key 200 is the validator.
fn genesis_ledger() -> Ledger<MemoryStore> {
    let genesis = Genesis {
        chain_id: CHAIN.to_owned(),
        params: Params::default(),
        balances: vec![(key(1).account_id(), 1_000)],
        validators: vec![(key(200).account_id(), 50_000)],
    };
    Ledger::init(MemoryStore::default(), &genesis).expect("genesis")
}

/// A router over a fresh ledger with no engine behind it.
fn api() -> Router {
    api_over(genesis_ledger())
}

/// Applies `transactions` as the next block (named by its height), each
/// of which must apply.
fn apply(ledger: &mut Ledger<MemoryStore>, transactions: &[SignedTransaction]) {
    let height = ledger.height() + 1;
    let outcome = ledger
        .apply_named_block(
            ContentId::of(&height.to_be_bytes()),
            height,
            0,
            transactions,
            &NoReExecution,
        )
        .expect("block applies");
    for result in &outcome.transactions {
        assert!(result.outcome.is_ok(), "{:?}", result.outcome);
    }
}

fn signed(nonce: u64, kind: TxKind) -> SignedTransaction {
    key(1).sign(Transaction::new(CHAIN, nonce, 1, kind).expect("body"))
}

fn open_job(nonce: u64, deadline_height: u64) -> SignedTransaction {
    signed(
        nonce,
        TxKind::OpenJob(OpenJob {
            module: ContentId::of(b"module"),
            spec: ContentId::of(b"spec"),
            escrow: 100,
            price_per_million_fuel: 5,
            deadline_height,
            limits: ExecutionLimits {
                fuel: 1_000_000,
                memory_bytes: 1 << 20,
                output_bytes: 1 << 10,
            },
            agent: None,
        }),
    )
}

/// Three jobs of account 1, oldest first: the first closed (in the
/// block that opened the third, before it), the others open; and the
/// hash of the transaction that closed the first.
fn ledger_with_jobs() -> (Ledger<MemoryStore>, [JobId; 3], ContentId) {
    let mut ledger = genesis_ledger();
    let requestor = key(1).account_id();
    apply(&mut ledger, &[open_job(0, 2)]);
    apply(&mut ledger, &[open_job(1, 100)]);
    let first = JobId::derive(&requestor, 0);
    let close = signed(2, TxKind::CloseJob { job: first });
    let close_hash = transaction_hash(&close);
    apply(&mut ledger, &[close, open_job(3, 100)]);
    let jobs = [
        first,
        JobId::derive(&requestor, 1),
        JobId::derive(&requestor, 3),
    ];
    (ledger, jobs, close_hash)
}

fn api_over(ledger: Ledger<MemoryStore>) -> Router {
    router(state_over(ledger))
}

/// The API's state over `ledger`, with no engine (no blocks) yet.
fn state_over(ledger: Ledger<MemoryStore>) -> ApiState<MemoryStore> {
    let chain = Chain::new(ledger).expect("chain");
    let node = shared(
        chain,
        Mempool::new(MempoolConfig::default()),
        Box::new(NoReExecution),
    );
    ApiState {
        submissions: crate::submissions::Submissions::new(node.clone()),
        node,
        blocks: Arc::new(OnceLock::new()),
        validator: key(200).account_id(),
    }
}

/// Finalized blocks a test made, in place of the engine's store.
#[derive(Debug)]
struct TestBlocks(Vec<Block>);

impl FinalizedBlocks for TestBlocks {
    fn at(&self, height: u64) -> BoxFuture<'_, Option<Block>> {
        let found = self.0.iter().find(|block| block.height == height).cloned();
        Box::pin(async move { found })
    }

    fn finalized_height(&self) -> BoxFuture<'_, Option<u64>> {
        let highest = self.0.iter().map(|block| block.height).max();
        Box::pin(async move { highest })
    }
}

fn transfer(nonce: u64, amount: u64) -> SignedTransaction {
    let body = Transaction::new(
        CHAIN,
        nonce,
        1,
        TxKind::Transfer {
            to: key(2).account_id(),
            amount,
        },
    )
    .expect("body");
    key(1).sign(body)
}

fn submission(transaction: &SignedTransaction) -> Vec<u8> {
    let bytes = codec::encode(transaction).expect("encode");
    json!({ "transaction": hex::encode(bytes) })
        .to_string()
        .into_bytes()
}

/// Sends one request; returns the status and the JSON body.
async fn call(
    api: &Router,
    method: &str,
    uri: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (StatusCode, Value) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", content_type)
        .body(Body::from(body))
        .expect("request");
    let response = api.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    let body = serde_json::from_slice(&bytes)
        .unwrap_or_else(|_| panic!("{uri}: not JSON: {}", String::from_utf8_lossy(&bytes)));
    (status, body)
}

async fn get_json(api: &Router, uri: &str) -> (StatusCode, Value) {
    call(api, "GET", uri, "application/json", Vec::new()).await
}

/// Expects `request` to be answered with `status` and error `code`.
async fn check(
    api: &Router,
    (method, uri, content_type, body): (&str, &str, &str, Vec<u8>),
    expected: (u16, &str),
) {
    let (status, answer) = call(api, method, uri, content_type, body).await;
    assert_eq!(
        (status.as_u16(), answer["error"]["code"].as_str()),
        (expected.0, Some(expected.1)),
        "{method} {uri}: {answer}"
    );
    assert!(
        answer["error"]["message"]
            .as_str()
            .is_some_and(|message| !message.is_empty()),
        "{method} {uri}: {answer}"
    );
}

#[tokio::test]
async fn status_answers_before_the_engine_starts() {
    let api = api();
    let (status, body) = get_json(&api, "/v1/status").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["chain_id"], CHAIN);
    assert_eq!(body["height"], 0);
    assert_eq!(body["finalized_height"], 0);
    assert_eq!(body["minimum_fee"], 1);
    assert_eq!(body["validator"], key(200).account_id().to_string());
    assert_eq!(body["validators"][0]["stake"], 50_000);
    assert_eq!(body["mempool"]["transactions"], 0);
    assert_eq!(body["state_root"].as_str().map(str::len), Some(64));
}

#[tokio::test]
async fn submitted_transactions_are_pending_and_advance_the_next_nonce() {
    let api = api();
    let first = transfer(0, 10);
    let (status, body) = call(
        &api,
        "POST",
        "/v1/transactions",
        "application/json",
        submission(&first),
    )
    .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let hash = transaction_hash(&first).to_string();
    assert_eq!(body["hash"], hash.as_str());
    let (_, body) = get_json(&api, &format!("/v1/transactions/{hash}")).await;
    assert_eq!(body["status"], "pending");
    assert!(body.get("height").is_none(), "{body}");
    // A later nonce waits behind the first.
    let (status, _) = call(
        &api,
        "POST",
        "/v1/transactions",
        "application/json",
        submission(&transfer(1, 10)),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    let (status, body) = get_json(&api, &format!("/v1/accounts/{}", key(1).account_id())).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["balance"], 1_000);
    assert_eq!(body["nonce"], 0);
    assert_eq!(body["next_nonce"], 2);
    assert_eq!(body["provider_stake"]["bonded"], 0);
    let (_, body) = get_json(&api, "/v1/status").await;
    assert_eq!(body["mempool"]["transactions"], 2);
    let unknown = ContentId::of(b"nothing");
    let (_, body) = get_json(&api, &format!("/v1/transactions/{unknown}")).await;
    assert_eq!(body["status"], "unknown");
    let (status, body) = get_json(&api, "/v1/providers").await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["providers"], json!([]));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_submissions_each_get_their_own_answer() {
    let api = api();
    let good: Vec<SignedTransaction> = (0..40).map(|nonce| transfer(nonce, 1)).collect();
    // Signed by another key than the one it names.
    let mut forged = transfer(40, 1);
    forged.signature = key(2).sign(forged.body.clone()).signature;
    let requests = good
        .iter()
        .chain([&forged])
        .map(|transaction| {
            let (api, body) = (api.clone(), submission(transaction));
            tokio::spawn(async move {
                call(&api, "POST", "/v1/transactions", "application/json", body).await
            })
        })
        .collect::<Vec<_>>();
    let mut answers = Vec::new();
    for request in requests {
        answers.push(request.await.expect("the request ran"));
    }
    let (forged_answer, good_answers) = answers.split_last().expect("answers");
    for (transaction, (status, body)) in good.iter().zip(good_answers) {
        assert_eq!(*status, StatusCode::OK, "{body}");
        assert_eq!(
            body["hash"],
            transaction_hash(transaction).to_string().as_str()
        );
    }
    let (status, body) = forged_answer;
    assert_eq!(*status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
    assert_eq!(body["error"]["code"], "bad_signature", "{body}");
    let (_, body) = get_json(&api, "/v1/status").await;
    assert_eq!(body["mempool"]["transactions"], 40);
}

#[tokio::test]
async fn jobs_are_listed_most_recently_opened_first_and_filtered() {
    let (ledger, [first, second, third], _) = ledger_with_jobs();
    let api = api_over(ledger);
    let listed = |body: &Value| -> Vec<String> {
        body["jobs"]
            .as_array()
            .unwrap_or_else(|| panic!("no job list: {body}"))
            .iter()
            .map(|job| job["job"].as_str().unwrap_or_default().to_owned())
            .collect()
    };
    let ids = |jobs: &[JobId]| -> Vec<String> { jobs.iter().map(JobId::to_string).collect() };
    for (uri, expected) in [
        ("/v1/jobs", ids(&[third, second, first])),
        ("/v1/jobs?limit=2", ids(&[third, second])),
        ("/v1/jobs?status=open", ids(&[third, second])),
        ("/v1/jobs?status=open&limit=1", ids(&[third])),
        ("/v1/jobs?status=closed", ids(&[first])),
        ("/v1/jobs?limit=500&status=closed", ids(&[first])),
    ] {
        let (status, body) = get_json(&api, uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}: {body}");
        assert_eq!(listed(&body), expected, "{uri}");
    }
    // Each entry is what /v1/jobs/{job} answers.
    let (_, list) = get_json(&api, "/v1/jobs").await;
    for entry in list["jobs"].as_array().expect("jobs") {
        let uri = format!("/v1/jobs/{}", entry["job"].as_str().expect("id"));
        let (status, single) = get_json(&api, &uri).await;
        assert_eq!(status, StatusCode::OK, "{uri}");
        assert_eq!(&single, entry);
    }
    assert_eq!(list["jobs"][2]["status"], "closed");
    assert_eq!(list["jobs"][2]["escrow"], 0);
    assert_eq!(list["jobs"][0]["status"], "open");
    assert_eq!(list["jobs"][0]["limits"]["fuel"], 1_000_000);
    // A fresh ledger has none.
    let (status, body) = get_json(&api_over(genesis_ledger()), "/v1/jobs").await;
    assert_eq!((status, body), (StatusCode::OK, json!({ "jobs": [] })));
}

#[tokio::test]
async fn bad_requests_get_json_errors() {
    let api = api();
    let json = "application/json";
    let mut bad_signature = codec::encode(&transfer(0, 10)).expect("encode");
    let last = bad_signature.len() - 1;
    bad_signature[last] ^= 1;
    let bad_signature = json!({ "transaction": hex::encode(bad_signature) })
        .to_string()
        .into_bytes();
    let wrong_chain = key(1).sign(
        Transaction::new(
            "another-chain",
            0,
            1,
            TxKind::Transfer {
                to: key(2).account_id(),
                amount: 1,
            },
        )
        .expect("body"),
    );
    let post = |body: Vec<u8>| ("POST", "/v1/transactions", json, body);
    let get = |uri: &'static str| ("GET", uri, json, Vec::new());
    let cases = [
        (post(b"{not json".to_vec()), (400, "malformed_json")),
        (post(b"[1,2,3]".to_vec()), (400, "malformed_json")),
        (post(Vec::new()), (400, "malformed_json")),
        (
            (
                "POST",
                "/v1/transactions",
                "application/octet-stream",
                vec![1],
            ),
            (415, "unsupported_media_type"),
        ),
        (
            post(br#"{"transaction":"xyz"}"#.to_vec()),
            (400, "malformed_transaction"),
        ),
        (
            post(br#"{"transaction":"00ff00ff"}"#.to_vec()),
            (400, "malformed_transaction"),
        ),
        (post(bad_signature), (422, "bad_signature")),
        (
            post(submission(&transfer(0, 5_000))),
            (422, "insufficient_balance"),
        ),
        (post(submission(&wrong_chain)), (422, "wrong_chain")),
        (
            post(vec![b' '; REQUEST_BODY_BYTES_MAX + 1]),
            (413, "payload_too_large"),
        ),
        (get("/v1/transactions/b3:zz"), (400, "malformed_hash")),
        (get("/v1/accounts/did:key:nope"), (400, "malformed_account")),
        (get("/v1/accounts/%FF%FE"), (400, "malformed_path")),
        (get("/v1/jobs/job:12"), (400, "malformed_job_id")),
        (
            get("/v1/jobs/job:0000000000000000000000000000000000000000000000000000000000000000"),
            (404, "not_found"),
        ),
        (get("/v1/jobs?status=pending"), (400, "malformed_query")),
        (get("/v1/jobs?limit=many"), (400, "malformed_query")),
        (get("/v1/jobs?limit=0"), (400, "malformed_query")),
        (get("/v1/jobs?limit=501"), (400, "malformed_query")),
        (get("/v1/jobs?limit=-1"), (400, "malformed_query")),
        (get("/v1/blocks/-1"), (400, "malformed_height")),
        (get("/v1/blocks/1"), (503, "starting")),
        (get("/v1/nothing/here"), (404, "not_found")),
        (get("/v1/accounts/"), (404, "not_found")),
        (
            ("POST", "/v1/status", json, Vec::new()),
            (405, "method_not_allowed"),
        ),
        (get("/v1/transactions"), (405, "method_not_allowed")),
    ];
    for (request, expected) in cases {
        check(&api, request, expected).await;
    }
    // Nothing bad was taken in.
    let (_, body) = get_json(&api, "/v1/status").await;
    assert_eq!(body["mempool"]["transactions"], 0, "{body}");
}

/// Sends one request; returns the status, the content type and the body.
async fn call_raw(
    api: &Router,
    method: &str,
    uri: &str,
    body: Vec<u8>,
) -> (StatusCode, String, Vec<u8>) {
    let request = Request::builder()
        .method(method)
        .uri(uri)
        .header("content-type", "application/json")
        .body(Body::from(body))
        .expect("request");
    let response = api.clone().oneshot(request).await.expect("infallible");
    let status = response.status();
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|value| value.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .expect("body");
    (status, content_type, bytes.to_vec())
}

/// The document as the API serves it, parsed as OpenAPI 3.1.
async fn served_document(api: &Router) -> (Value, oas3::Spec) {
    let (status, body) = get_json(api, "/v1/openapi.json").await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let spec = oas3::from_json(body.to_string()).expect("an OpenAPI 3.1 document");
    let version = spec.validate_version().expect("a supported version");
    assert_eq!((version.major, version.minor), (3, 1));
    (body, spec)
}

/// Every `$ref` string in `value`, with where it was found.
fn references(value: &Value, at: &str, found: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                if key == "$ref"
                    && let Some(target) = inner.as_str()
                {
                    found.push((at.to_owned(), target.to_owned()));
                }
                references(inner, &format!("{at}/{key}"), found);
            }
        }
        Value::Array(items) => {
            for (index, inner) in items.iter().enumerate() {
                references(inner, &format!("{at}/{index}"), found);
            }
        }
        _ => {}
    }
}

#[tokio::test]
async fn the_openapi_document_describes_exactly_the_routes() {
    let api = api();
    let (document, spec) = served_document(&api).await;
    assert_eq!(
        document,
        serde_json::to_value(ApiDoc::openapi()).expect("json")
    );

    // The same (path, method) pairs as the router's one list.
    let key = |path: &str, method: MethodFilter| format!("{method:?} {path}");
    let mut routed: Vec<String> = routes::<MemoryStore>(&Arc::new(ApiMetrics::new()))
        .iter()
        .map(|route| key(route.path, route.method))
        .collect();
    let mut documented: Vec<String> = spec
        .operations()
        .map(|(path, method, _)| {
            let filter = MethodFilter::try_from(method).expect("a method axum routes");
            key(&path, filter)
        })
        .collect();
    routed.sort();
    documented.sort();
    assert_eq!(documented, routed);

    // Every reference resolves, as a schema, in the document.
    let mut found = Vec::new();
    references(&document, "", &mut found);
    assert!(!found.is_empty());
    for (at, target) in found {
        let pointer = target.strip_prefix('#').unwrap_or(&target);
        assert!(
            document.pointer(pointer).is_some(),
            "{at}: {target} is not in the document"
        );
        oas3::spec::ObjectOrReference::<oas3::spec::Schema>::Ref {
            ref_path: target.clone(),
            summary: None,
            description: None,
        }
        .resolve(&spec)
        .unwrap_or_else(|error| panic!("{at}: {target} does not resolve: {error}"));
    }

    // Every operation documents its errors with the one error body.
    for (path, method, operation) in spec.operations() {
        let responses = operation.responses.as_ref().expect("responses");
        assert!(responses.contains_key("200"), "{method} {path}");
        for (status, response) in responses {
            if status.starts_with('2') {
                continue;
            }
            let text = serde_json::to_string(response).expect("json");
            assert!(
                text.contains("#/components/schemas/ErrorBody"),
                "{method} {path} {status}: {text}"
            );
        }
    }

    // The documented bounds of `limit` are the handler's.
    let limit = document["paths"]["/v1/jobs"]["get"]["parameters"]
        .as_array()
        .expect("parameters")
        .iter()
        .find(|parameter| parameter["name"] == "limit")
        .expect("a limit parameter")
        .clone();
    assert_eq!(limit["in"], "query");
    assert_eq!(limit["schema"]["maximum"], json!(JOBS_LIMIT_MAX));
    assert_eq!(limit["schema"]["default"], json!(JOBS_LIMIT_DEFAULT));
}

#[tokio::test]
async fn every_documented_route_answers_with_a_documented_status() {
    let (ledger, [_, _, job], included) = ledger_with_jobs();
    let state = state_over(ledger);
    let block = Block {
        parent: genesis_digest(CHAIN),
        height: 1,
        time_ms: 0,
        parent_state_root: [0; 32],
        transactions: Bounded::new(vec![open_job(0, 2)]).expect("one transaction"),
    };
    let _ = state.blocks.set(Arc::new(TestBlocks(vec![block])));
    let api = router(state);
    let (_, spec) = served_document(&api).await;
    let values: [(&str, Vec<String>); 4] = [
        ("{account}", vec![key(1).account_id().to_string()]),
        ("{job}", vec![job.to_string()]),
        ("{hash}", vec![included.to_string()]),
        ("{height}", vec!["0".to_owned(), "1".to_owned()]),
    ];
    // Account 1 opened three jobs and closed one: its next nonce is 4.
    let submitted = submission(&signed(
        4,
        TxKind::Transfer {
            to: key(2).account_id(),
            amount: 1,
        },
    ));
    let mut answered = Vec::new();
    for (template, method, operation) in spec.operations() {
        let uris: Vec<String> = match values
            .iter()
            .find(|(parameter, _)| template.contains(parameter))
        {
            Some((parameter, values)) => values
                .iter()
                .map(|value| template.replace(parameter, value))
                .collect(),
            None => vec![template.clone()],
        };
        assert!(!uris.iter().any(|uri| uri.contains('{')), "{template}");
        for uri in uris {
            let body = if method == axum::http::Method::POST {
                submitted.clone()
            } else {
                Vec::new()
            };
            let (status, content_type, bytes) = call_raw(&api, method.as_str(), &uri, body).await;
            let text = String::from_utf8_lossy(&bytes);
            let responses = operation.responses.as_ref().expect("responses");
            let documented = responses
                .get(status.as_str())
                .unwrap_or_else(|| panic!("{method} {uri}: {status} is not documented: {text}"))
                .resolve(&spec)
                .expect("a response");
            assert!(
                !status.is_server_error() && status != StatusCode::METHOD_NOT_ALLOWED,
                "{method} {uri}: {status} {text}"
            );
            assert!(
                !text.contains("no endpoint at this path"),
                "{method} {uri}: no such route"
            );
            assert!(
                documented
                    .content
                    .keys()
                    .any(|media| content_type.starts_with(media.as_str())),
                "{method} {uri}: answered {content_type}, documented {:?}",
                documented.content.keys().collect::<Vec<_>>()
            );
            answered.push(format!("{method} {uri} {}", status.as_u16()));
        }
    }
    answered.sort();
    let height_zero = "GET /v1/blocks/0 404".to_owned();
    assert!(answered.contains(&height_zero), "{answered:#?}");
    assert_eq!(
        answered
            .iter()
            .filter(|line| line.ends_with(" 200"))
            .count(),
        answered.len() - 1,
        "everything but the block at height 0 is found: {answered:#?}"
    );
}

/// The samples of an exposition, `name{labels}` to value, after
/// checking each line's shape: `# HELP`/`# TYPE`/`# UNIT` before each
/// family's samples, one `# EOF` last.
fn parse_exposition(text: &str) -> std::collections::BTreeMap<String, f64> {
    let mut samples = std::collections::BTreeMap::new();
    let mut families = Vec::new();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.last(), Some(&"# EOF"), "{text}");
    for line in &lines[..lines.len() - 1] {
        if let Some(comment) = line.strip_prefix("# ") {
            let mut words = comment.splitn(3, ' ');
            let kind = words.next().unwrap_or_default();
            assert!(["HELP", "TYPE", "UNIT"].contains(&kind), "{line}");
            families.push(words.next().expect("a family").to_owned());
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample and its value");
        let name = series.split('{').next().unwrap_or_default();
        assert!(
            name.starts_with("idlegrid_")
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
            "{line}"
        );
        assert!(
            families
                .iter()
                .any(|family| name.starts_with(family.as_str())),
            "{line}: no # TYPE for it"
        );
        let value: f64 = value.parse().unwrap_or_else(|_| panic!("{line}: value"));
        assert!(
            samples.insert(series.to_owned(), value).is_none(),
            "{line} twice"
        );
    }
    samples
}

#[tokio::test]
async fn metrics_report_the_node_and_every_request() {
    let (ledger, _, _) = ledger_with_jobs();
    let state = state_over(ledger);
    let finalized = Block {
        parent: genesis_digest(CHAIN),
        height: 5,
        time_ms: 0,
        parent_state_root: [0; 32],
        transactions: Bounded::new(Vec::new()).expect("empty"),
    };
    let _ = state.blocks.set(Arc::new(TestBlocks(vec![finalized])));
    let api = router(state);
    let transfer = signed(
        4,
        TxKind::Transfer {
            to: key(2).account_id(),
            amount: 1,
        },
    );
    let (status, _) = call(
        &api,
        "POST",
        "/v1/transactions",
        "application/json",
        submission(&transfer),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    get_json(&api, "/v1/nothing/here").await;
    get_json(&api, "/v1/jobs/job:12").await;
    let (_, node) = get_json(&api, "/v1/status").await;

    let (status, content_type, body) = call_raw(&api, "GET", "/metrics", Vec::new()).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(content_type, metrics::CONTENT_TYPE);
    let text = String::from_utf8(body).expect("text");
    let samples = parse_exposition(&text);
    let value = |series: &str| {
        *samples
            .get(series)
            .unwrap_or_else(|| panic!("no {series} in\n{text}"))
    };
    // The node's numbers are /v1/status's.
    for (series, expected) in [
        ("idlegrid_ledger_height", &node["height"]),
        ("idlegrid_finalized_height", &node["finalized_height"]),
        (
            "idlegrid_mempool_transactions",
            &node["mempool"]["transactions"],
        ),
        ("idlegrid_mempool_bytes", &node["mempool"]["bytes"]),
    ] {
        assert_eq!(Some(value(series)), expected.as_f64(), "{series}");
    }
    assert_eq!(value("idlegrid_ledger_height"), 3.0);
    assert_eq!(value("idlegrid_finalized_height"), 5.0);
    assert_eq!(value("idlegrid_mempool_transactions"), 1.0);
    assert_eq!(value("idlegrid_peers_connected"), 0.0);
    // No engine here has finalized a block.
    assert_eq!(value("idlegrid_transactions_applied_total"), 0.0);
    assert_eq!(value("idlegrid_transactions_rejected_total"), 0.0);
    // Requests before this scrape, by route template.
    let requests = |labels: &str| value(&format!("idlegrid_http_requests_total{{{labels}}}"));
    assert_eq!(
        requests(r#"route="/v1/transactions",method="POST",status="200""#),
        1.0
    );
    assert_eq!(
        requests(r#"route="/v1/jobs/{job}",method="GET",status="400""#),
        1.0
    );
    assert_eq!(
        requests(r#"route="unmatched",method="GET",status="404""#),
        1.0
    );
    assert_eq!(
        requests(r#"route="/v1/status",method="GET",status="200""#),
        1.0
    );
    assert_eq!(
        value(r#"idlegrid_http_request_duration_seconds_count{route="/v1/status"}"#),
        1.0
    );
    assert!(value(r#"idlegrid_http_request_duration_seconds_sum{route="/v1/status"}"#) > 0.0);
    // The scrape itself is counted for the next one.
    let (_, _, body) = call_raw(&api, "GET", "/metrics", Vec::new()).await;
    let again = parse_exposition(&String::from_utf8(body).expect("text"));
    assert_eq!(
        again.get(r#"idlegrid_http_requests_total{route="/metrics",method="GET",status="200"}"#),
        Some(&1.0)
    );
}
