//! Overlay nodes on loopback: offers travel by gossip, requests get their
//! responses, content arrives in chunks, a peer that sends malformed or
//! oversized messages is blocked while the others keep working, and a node
//! reachable only through a relay stays reachable as its circuits end and
//! the relay restarts. A peer that announces content is found by a node
//! that never heard of it, which fetches from it rather than from the
//! content's source; once it no longer holds the content, asking it costs
//! a try, not the fetch.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use idlegrid_net::protocol::{MESSAGE_BYTES_MAX, WORK_PROTOCOL, encode_frame};
use idlegrid_net::{Event, Overlay, OverlayConfig, Request, Response, libp2p_keypair};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{ContentId, Keypair, Offer};
use libp2p::{Multiaddr, noise, tcp, yamux};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
/// One try at a request while a link comes up.
const TRY: Duration = Duration::from_secs(3);

fn config(bootstrap: Vec<Multiaddr>) -> OverlayConfig {
    let mut config = OverlayConfig::new("overlay-test");
    config.listen = vec!["/ip4/127.0.0.1/tcp/0".parse().expect("address")];
    config.bootstrap = bootstrap;
    config.mdns = false;
    config
}

fn offer(key: &Keypair, sequence: u64) -> idlegrid_types::SignedOffer {
    key.sign(Offer {
        cores: 4,
        memory_bytes: 1 << 30,
        gpu: None,
        benchmark_fuel_per_second: 1_000_000,
        price_floor_per_million_fuel: 1,
        concurrency: 8,
        idle_only: false,
        operator: None,
        sequence,
        expires_at_ms: u64::MAX,
    })
}

/// Starts a node; waits until it listens; gives its address.
async fn node(seed: u8, bootstrap: Vec<Multiaddr>) -> (Overlay, mpsc::Receiver<Event>, Multiaddr) {
    let key = Keypair::from_seed([seed; 32]);
    let (overlay, mut events, _task) =
        Overlay::start(&key, config(bootstrap)).expect("overlay starts");
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Event::Listening(_))) => break,
            Ok(Some(_)) => {}
            other => panic!("no listen address: {other:?}"),
        }
    }
    let address = overlay.listen_addresses().await.expect("addresses")[0].clone();
    (overlay, events, address)
}

/// Answers every content request with `content`, in chunks, until dropped.
fn serve(mut events: mpsc::Receiver<Event>, content: Vec<u8>, seen: mpsc::UnboundedSender<Event>) {
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            match event {
                Event::Request {
                    request: Request::Content { offset, .. },
                    reply,
                    ..
                } => {
                    let start = usize::try_from(offset).expect("offset").min(content.len());
                    let end = (start + 1000).min(content.len());
                    reply.send(Response::Content {
                        total_bytes: content.len() as u64,
                        bytes: Bounded::new(content[start..end].to_vec()).expect("chunk"),
                    });
                }
                Event::Request { reply, .. } => {
                    reply.send(Response::refused("unexpected", "not in this test"))
                }
                other => {
                    let _ = seen.send(other);
                }
            }
        }
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn offers_gossip_requests_answer_and_content_arrives_in_chunks() {
    let (a, a_events, a_address) = node(1, Vec::new()).await;
    let (b, mut b_events, _) = node(2, vec![a_address]).await;
    let content: Vec<u8> = (0..5_000u32).map(|index| (index % 251) as u8).collect();
    let (seen, _seen_events) = mpsc::unbounded_channel();
    serve(a_events, content.clone(), seen);

    // The mesh forms within a few heartbeats; offer until one arrives.
    let key = Keypair::from_seed([1; 32]);
    let mut sequence = 0;
    let received = tokio::time::timeout(WAIT, async {
        loop {
            sequence += 1;
            a.publish_offer(&offer(&key, sequence))
                .await
                .expect("publish");
            let deadline = tokio::time::sleep(Duration::from_millis(500));
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    event = b_events.recv() => match event.expect("events") {
                        Event::Offer { provider, offer } => return (provider, offer),
                        _ => continue,
                    },
                    () = &mut deadline => break,
                }
            }
        }
    })
    .await
    .expect("an offer arrives");
    assert_eq!(received.0, a.account());
    assert_eq!(received.1.body.cores, 4);

    let mut fetched = Vec::new();
    loop {
        let request = Request::Content {
            cid: ContentId::of(&content),
            offset: fetched.len() as u64,
        };
        match b.request(&a.account(), request).await.expect("a response") {
            Response::Content { total_bytes, bytes } => {
                assert_eq!(total_bytes, content.len() as u64);
                fetched.extend_from_slice(&bytes);
                if fetched.len() == content.len() {
                    break;
                }
            }
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(fetched, content);
}

/// Writes `bytes` on a work stream from a fresh peer, as a hostile peer
/// would; true when nothing came back: the stream, the connection or the
/// dial was cut, or the test's wait passed without an answer (libp2p may
/// not notice at once that a peer refused the connection it dialed).
async fn hostile_request(
    seed: u8,
    target: &Multiaddr,
    target_peer: libp2p::PeerId,
    bytes: Vec<u8>,
) -> bool {
    let key = libp2p_keypair(&Keypair::from_seed([seed; 32]));
    let mut swarm = libp2p::SwarmBuilder::with_existing_identity(key)
        .with_tokio()
        .with_tcp(
            tcp::Config::default(),
            noise::Config::new,
            yamux::Config::default,
        )
        .expect("tcp")
        .with_behaviour(|_| libp2p_stream::Behaviour::new())
        .expect("behaviour")
        .build();
    let mut control = swarm.behaviour().new_control();
    swarm.dial(target.clone()).expect("dial");
    let driver = tokio::spawn(async move {
        loop {
            swarm.select_next_some().await;
        }
    });
    let outcome = tokio::time::timeout(WAIT, async {
        let Ok(mut stream) = control.open_stream(target_peer, WORK_PROTOCOL).await else {
            return true;
        };
        if stream.write_all(&bytes).await.is_err() || stream.flush().await.is_err() {
            return true;
        }
        let mut answer = [0u8; 1];
        !matches!(stream.read(&mut answer).await, Ok(read) if read > 0)
    })
    .await;
    driver.abort();
    outcome.unwrap_or(true)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_sending_malformed_or_oversized_messages_is_blocked_and_others_keep_working() {
    let (a, a_events, a_address) = node(3, Vec::new()).await;
    let (b, _b_events, _) = node(4, vec![a_address.clone()]).await;
    let content = b"the module".to_vec();
    let (seen, mut seen_events) = mpsc::unbounded_channel();
    serve(a_events, content.clone(), seen);
    let a_peer = a.peer_id();

    // A well-formed frame from a fresh peer is answered: what the hostile
    // peers below get instead is the overlay's doing.
    let job_done = || {
        encode_frame(
            0,
            &Request::JobDone {
                job: idlegrid_types::JobId::from_bytes([0; 32]),
            },
        )
        .expect("encodes")
    };
    assert!(
        !hostile_request(7, &a_address, a_peer, job_done()).await,
        "a well-formed request got no answer"
    );
    // A request id, then a length over the limit.
    let mut oversized = 0u64.to_le_bytes().to_vec();
    oversized.extend_from_slice(
        &u32::try_from(MESSAGE_BYTES_MAX + 1)
            .expect("fits")
            .to_le_bytes(),
    );
    // A valid length and bytes that are no request.
    let mut malformed = 0u64.to_le_bytes().to_vec();
    malformed.extend_from_slice(&16u32.to_le_bytes());
    malformed.extend_from_slice(&[0xff; 16]);
    for (seed, bytes) in [(5u8, oversized), (6u8, malformed)] {
        assert!(
            hostile_request(seed, &a_address, a_peer, bytes).await,
            "a hostile request got an answer"
        );
        let blocked = tokio::time::timeout(WAIT, async {
            loop {
                if let Some(Event::Misbehaved { peer, .. }) = seen_events.recv().await {
                    return peer;
                }
            }
        })
        .await
        .expect("the peer is reported");
        let expected = libp2p_keypair(&Keypair::from_seed([seed; 32]))
            .public()
            .to_peer_id();
        assert_eq!(blocked, expected);
        // Once blocked, even a well-formed request from it is refused.
        assert!(
            hostile_request(seed, &a_address, a_peer, job_done()).await,
            "a blocked peer was served"
        );
    }

    // The well-behaved peer is still served.
    let response = b
        .request(
            &a.account(),
            Request::Content {
                cid: ContentId::of(&content),
                offset: 0,
            },
        )
        .await
        .expect("a response");
    assert!(matches!(response, Response::Content { .. }), "{response:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_reach_their_own_requests_in_any_order_and_a_stopped_peer_fails_what_it_owes() {
    let key = Keypair::from_seed([8; 32]);
    let (a, mut a_events, a_driver) = Overlay::start(&key, config(Vec::new())).expect("starts");
    let a_address = loop {
        match tokio::time::timeout(WAIT, a_events.recv()).await {
            Ok(Some(Event::Listening(_))) => {
                break a.listen_addresses().await.expect("addresses")[0].clone();
            }
            Ok(Some(_)) => {}
            other => panic!("no listen address: {other:?}"),
        }
    };
    let (b, _b_events, _) = node(9, vec![a_address]).await;
    let cid = ContentId::of(b"nothing");

    // b's link to a is up (a request sent while b still connects may fail
    // with the connection it was queued on, and is not what this tests).
    let linked = tokio::time::timeout(WAIT, async {
        loop {
            let answer = b.send(&a.account(), Request::Content { cid, offset: 0 });
            tokio::pin!(answer);
            let answered = tokio::time::timeout(TRY, async {
                loop {
                    tokio::select! {
                        event = a_events.recv() => match event {
                            Some(Event::Request { reply, .. }) => reply.send(Response::Ok),
                            Some(_) => {}
                            None => panic!("a stopped"),
                        },
                        answer = &mut answer => break answer,
                    }
                }
            })
            .await;
            // A failed try is answered by a closed or refused link, and one
            // queued on a link that never came up is given up after `TRY`:
            // the next opens a fresh one.
            if matches!(answered, Ok(Ok(_))) {
                return;
            }
        }
    })
    .await;
    assert!(linked.is_ok(), "b never reached a");

    // Thirty-two requests in flight at once on b's one link to a; a holds
    // them all, then answers the last first. Each answer names its offset.
    const REQUESTS: u64 = 32;
    let answers: Vec<_> = (0..REQUESTS)
        .map(|offset| b.send(&a.account(), Request::Content { cid, offset }))
        .collect();
    let mut held = Vec::new();
    while held.len() < REQUESTS as usize {
        match tokio::time::timeout(WAIT, a_events.recv()).await {
            Ok(Some(Event::Request {
                request: Request::Content { offset, .. },
                reply,
                ..
            })) => held.push((offset, reply)),
            Ok(Some(_)) => {}
            other => panic!("the requests did not all arrive: {other:?}"),
        }
    }
    for (offset, reply) in held.into_iter().rev() {
        reply.send(Response::Content {
            total_bytes: offset,
            bytes: Bounded::new(offset.to_le_bytes().to_vec()).expect("small"),
        });
    }
    let answers = tokio::time::timeout(WAIT, futures::future::join_all(answers))
        .await
        .expect("every answer arrives");
    for (offset, answer) in (0..REQUESTS).zip(answers) {
        match answer.expect("an answer") {
            Response::Content { total_bytes, bytes } => {
                assert_eq!(total_bytes, offset);
                assert_eq!(*bytes, offset.to_le_bytes().to_vec());
            }
            other => panic!("unexpected {other:?}"),
        }
    }

    // A request a holds when it stops fails as a closed connection, at
    // once rather than after the request timeout.
    let pending = b.send(&a.account(), Request::Content { cid, offset: 0 });
    let _held = loop {
        match tokio::time::timeout(WAIT, a_events.recv()).await {
            Ok(Some(Event::Request { reply, .. })) => break reply,
            Ok(Some(_)) => {}
            other => panic!("the last request did not arrive: {other:?}"),
        }
    };
    a_driver.abort();
    let failed = tokio::time::timeout(WAIT, pending)
        .await
        .expect("the request ends before the test's wait");
    assert_eq!(
        failed,
        Err(idlegrid_net::RequestError::ConnectionClosed(a.account()))
    );
}

/// Asks `peer` for the first chunk of its content until it answers (each
/// failed try, unreachable or cut off, is tried again shortly after).
async fn reach(node: &Overlay, peer: &idlegrid_types::AccountId, cid: ContentId) {
    let reached = tokio::time::timeout(WAIT, async {
        loop {
            let request = Request::Content { cid, offset: 0 };
            if let Ok(Response::Content { .. }) = node.request(peer, request).await {
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
    .await;
    assert!(reached.is_ok(), "{peer} was never reached");
}

/// Starts a relay (a gateway's overlay) whose circuits last a second.
fn relay(key: &Keypair, listen: Multiaddr) -> (Overlay, tokio::task::JoinHandle<()>) {
    let mut config = config(Vec::new());
    config.listen = vec![listen];
    config.relay_server = true;
    config.relay_circuit_duration_max = Duration::from_secs(1);
    let (relay, _events, task) = Overlay::start(key, config).expect("the relay starts");
    (relay, task)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_behind_a_relay_is_reached_again_after_its_circuit_ends_and_the_relay_restarts() {
    let relay_key = Keypair::from_seed([20; 32]);
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .expect("a free port")
        .local_addr()
        .expect("its address")
        .port();
    let listen: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}")
        .parse()
        .expect("address");
    let (first, first_task) = relay(&relay_key, listen.clone());
    let relay_address = listen
        .clone()
        .with(libp2p::multiaddr::Protocol::P2p(first.peer_id()));

    // A node that listens nowhere but through the relay.
    let behind_key = Keypair::from_seed([21; 32]);
    let mut behind_config = config(Vec::new());
    behind_config.listen = Vec::new();
    behind_config.relays = vec![relay_address.clone()];
    let (behind, behind_events, _behind_task) =
        Overlay::start(&behind_key, behind_config).expect("starts");
    let content = b"behind the relay".to_vec();
    let cid = ContentId::of(&content);
    let (seen, _seen_events) = mpsc::unbounded_channel();
    serve(behind_events, content, seen);

    // A node that listens nowhere either (so the other cannot dial it):
    // what it says to the node behind the relay crosses the relay.
    let mut outside_config = config(vec![relay_address]);
    outside_config.listen = Vec::new();
    let (outside, mut outside_events, _outside_task) =
        Overlay::start(&Keypair::from_seed([22; 32]), outside_config).expect("starts");
    reach(&outside, &behind.account(), cid).await;

    // The circuit ends within a second; a fresh one reaches the node.
    tokio::time::timeout(WAIT, async {
        loop {
            match outside_events.recv().await {
                Some(Event::Disconnected(peer)) if peer == behind.account() => return,
                Some(_) => {}
                None => panic!("the node stopped"),
            }
        }
    })
    .await
    .expect("the circuit ends");
    reach(&outside, &behind.account(), cid).await;

    // The relay restarts at the same address: the node's reservation went
    // with it, and it reserves again.
    first_task.abort();
    let _ = first_task.await;
    drop(first);
    let (_second, _second_task) = relay(&relay_key, listen);
    reach(&outside, &behind.account(), cid).await;
}

/// Answers content requests as a holder of `content` does (its tree, then
/// chunks), with the byte at `corrupt` flipped in what it sends, if given;
/// counts the requests it answers.
fn hold(
    mut events: mpsc::Receiver<Event>,
    content: Vec<u8>,
    corrupt: Option<usize>,
) -> Arc<AtomicUsize> {
    let answered = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&answered);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Event::Request { request, reply, .. } = event else {
                continue;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let response = match request {
                Request::ContentTree { from, .. } => idlegrid_net::content_tree(&content, from),
                Request::Content { offset, .. } => {
                    let mut sent = content.clone();
                    if let Some(at) = corrupt {
                        sent[at] ^= 0x40;
                    }
                    idlegrid_net::content_chunk(&sent, offset)
                }
                _ => Response::refused("unexpected", "not in this test"),
            };
            reply.send(response);
        }
    });
    answered
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn content_from_several_holders_skips_a_liar_and_resumes_where_it_was_caught() {
    use idlegrid_types::blob_tree::GROUP_BYTES;
    let (source, source_events, source_address) = node(31, Vec::new()).await;
    let (liar, liar_events, liar_address) = node(32, vec![source_address.clone()]).await;
    let (honest, honest_events, honest_address) = node(33, vec![source_address.clone()]).await;
    let (fetcher, mut fetcher_events, _) = node(34, vec![source_address]).await;
    let content: Vec<u8> = (0..(5 * GROUP_BYTES / 2) as u32)
        .map(|index| (index % 253) as u8)
        .collect();
    let cid = ContentId::of(&content);
    // The liar's second group is wrong; the source is never needed.
    let asked_liar = hold(liar_events, content.clone(), Some(GROUP_BYTES + 7));
    hold(honest_events, content.clone(), None);
    hold(source_events, Vec::new(), None);
    for address in [liar_address, honest_address] {
        fetcher.dial(address).await.expect("dial");
    }
    let fetched = tokio::time::timeout(
        WAIT,
        idlegrid_net::fetch_content_from(
            &fetcher,
            &[liar.account(), honest.account()],
            &source.account(),
            cid,
            1 << 20,
        ),
    )
    .await
    .expect("in time")
    .expect("fetched");
    assert_eq!(fetched, content);

    // The liar is blocked: the fetcher says so, and never asks it again.
    let blocked = tokio::time::timeout(WAIT, async {
        loop {
            match fetcher_events.recv().await {
                Some(Event::Misbehaved { peer, reason }) => break (peer, reason),
                Some(_) => {}
                None => panic!("the fetcher stopped"),
            }
        }
    })
    .await
    .expect("the liar is blocked in time");
    assert_eq!(blocked.0, liar.peer_id());
    assert!(blocked.1.contains("group 1"), "{}", blocked.1);
    let asked = asked_liar.load(Ordering::Relaxed);

    // With only the liar and a source that lacks it, the fetch fails.
    let error = tokio::time::timeout(
        WAIT,
        idlegrid_net::fetch_content_from(
            &fetcher,
            &[liar.account()],
            &source.account(),
            cid,
            1 << 20,
        ),
    )
    .await
    .expect("in time")
    .expect_err("nobody honest");
    assert!(error.contains("failed to fetch"), "{error}");
    assert_eq!(
        asked_liar.load(Ordering::Relaxed),
        asked,
        "a blocked liar is not asked again"
    );
}

/// Answers content requests from `store` (or, without one, says it holds
/// nothing), counting the requests.
fn serve_store(
    mut events: mpsc::Receiver<Event>,
    store: Option<Arc<idlegrid_net::ContentStore>>,
) -> Arc<AtomicUsize> {
    let asked = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&asked);
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            let Event::Request { request, reply, .. } = event else {
                continue;
            };
            counter.fetch_add(1, Ordering::Relaxed);
            let answer = store.as_ref().and_then(|store| store.answer(&request));
            reply.send(
                answer.unwrap_or_else(|| Response::refused("not_found", "held nowhere here")),
            );
        }
    });
    asked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_that_announces_content_is_found_and_fetched_from_before_its_source() {
    let (source, source_events, source_address) = node(41, Vec::new()).await;
    let (holder, holder_events, _) = node(42, vec![source_address.clone()]).await;
    let (fetcher, _fetcher_events, _) = node(43, vec![source_address]).await;
    let asked_source = serve_store(source_events, None);

    // The holder announces what its store holds, as a provider does.
    let folder = tempfile::tempdir().expect("tempdir");
    let store = Arc::new(idlegrid_net::ContentStore::open(folder.path(), 1 << 20).expect("opens"));
    let announcing = holder.clone();
    store.watch(move |change| match change {
        idlegrid_net::StoreChange::Held(cid) => announcing.announce(vec![cid]),
        idlegrid_net::StoreChange::Gone(cid) => announcing.withdraw(cid),
    });
    let content: Vec<u8> = (0..(5 * idlegrid_types::blob_tree::GROUP_BYTES / 2) as u32)
        .map(|index| (index % 251) as u8)
        .collect();
    let cid = ContentId::of(&content);
    store.put(cid, &content).expect("stored");
    let asked_holder = serve_store(holder_events, Some(Arc::clone(&store)));

    // The fetcher knows only the source; the network tells it who holds
    // the content once the holder's announcement has spread.
    let found = tokio::time::timeout(WAIT, async {
        loop {
            let found = fetcher.holders(cid).await;
            if !found.is_empty() {
                break found;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
    .expect("the holder is found in time");
    assert_eq!(found, vec![holder.account()]);
    assert!(
        holder.holders(cid).await.is_empty(),
        "a node never finds itself"
    );

    // Nobody named: whoever announces it, then the source.
    let source_account = source.account();
    let fetch = || async {
        let fetching = idlegrid_net::fetch_shared_content_into(
            &fetcher,
            &[],
            Some(&source_account),
            cid,
            1 << 20,
            Vec::new(),
            0,
        );
        tokio::time::timeout(WAIT, fetching).await.expect("in time")
    };
    let fetched = fetch().await.expect("fetched");
    assert_eq!(fetched, content);
    assert_eq!(
        asked_source.load(Ordering::Relaxed),
        0,
        "the source is spared"
    );
    assert!(
        asked_holder.load(Ordering::Relaxed) >= 2,
        "its tree, then its chunk"
    );

    // Let go of: its record may linger on peers, but asking it costs one
    // try, and the fetch goes on to the source (which has nothing here).
    store.shrink_to(0);
    let error = fetch().await.expect_err("held nowhere");
    assert!(error.contains(&holder.account().to_string()), "{error}");
    assert!(asked_source.load(Ordering::Relaxed) >= 1, "then the source");
}
