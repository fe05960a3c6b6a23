//! The overlay's bounds on connections and its healing, on loopback: a
//! connection that never finishes its handshake is closed, one address
//! cannot take every place in the handshake, and a node whose bootstrap
//! peer was unreachable finds it once it is up.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use idlegrid_net::{Event, Overlay, OverlayConfig, peer_id_of};
use idlegrid_types::Keypair;
use libp2p::Multiaddr;
use tokio::io::AsyncReadExt;
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;

const WAIT: Duration = Duration::from_secs(30);
/// The default deadline for a handshake.
const HANDSHAKE: Duration = Duration::from_secs(5);

fn config(listen: &str, bootstrap: Vec<Multiaddr>, handshake: Duration) -> OverlayConfig {
    let mut config = OverlayConfig::new("limits-test");
    config.listen = vec![listen.parse().expect("address")];
    config.bootstrap = bootstrap;
    config.mdns = false;
    config.handshake_timeout = handshake;
    config.pending_incoming_per_ip_max = 4;
    config
}

/// A free TCP port on loopback (bound, then let go).
fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    listener.local_addr().expect("address").port()
}

async fn start(
    seed: u8,
    listen: &str,
    bootstrap: Vec<Multiaddr>,
    handshake: Duration,
) -> (Overlay, mpsc::Receiver<Event>) {
    let key = Keypair::from_seed([seed; 32]);
    let (overlay, mut events, _task) =
        Overlay::start(&key, config(listen, bootstrap, handshake)).expect("overlay starts");
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Event::Listening(_))) => break,
            Ok(Some(_)) => {}
            other => panic!("no listen address: {other:?}"),
        }
    }
    (overlay, events)
}

/// Waits for `events` to say `account` connected.
async fn connected(events: &mut mpsc::Receiver<Event>, account: idlegrid_types::AccountId) {
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Connected(peer)) = events.recv().await
                && peer == account
            {
                return;
            }
        }
    })
    .await
    .expect("connected");
}

/// A connection from `host` that sends nothing.
async fn idle_from(host: [u8; 4], target: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().expect("socket");
    socket.bind(SocketAddr::from((host, 0))).expect("bind");
    socket.connect(target).await.expect("connect")
}

/// How long until the node closes `stream` (reads give end of file or an
/// error), or none within `within`.
async fn closed_after(stream: &mut TcpStream, within: Duration) -> Option<Duration> {
    let start = Instant::now();
    let mut buffer = [0u8; 1024];
    tokio::time::timeout(within, async {
        loop {
            match stream.read(&mut buffer).await {
                Ok(0) | Err(_) => return start.elapsed(),
                Ok(_) => {}
            }
        }
    })
    .await
    .ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connection_that_never_finishes_its_handshake_is_closed() {
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let (_node, _events) = start(1, &listen, Vec::new(), Duration::from_secs(1)).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let mut idle = idle_from([127, 0, 1, 1], target).await;
    let closed = closed_after(&mut idle, Duration::from_secs(5)).await;
    let closed = closed.expect("the idle connection is closed");
    assert!(closed >= Duration::from_millis(500), "closed at {closed:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_address_cannot_take_every_place_in_the_handshake() {
    let port = free_port();
    // Handshakes may take long here: the four held stay pending throughout.
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let (node, _events) = start(1, &listen, Vec::new(), Duration::from_secs(60)).await;
    let target = SocketAddr::from(([127, 0, 0, 1], port));
    let mut held = Vec::new();
    for _ in 0..4 {
        held.push(idle_from([127, 0, 1, 1], target).await);
    }
    // The fifth from the same address is closed at once…
    let mut fifth = idle_from([127, 0, 1, 1], target).await;
    let closed = closed_after(&mut fifth, Duration::from_secs(5)).await;
    assert!(closed.is_some(), "a fifth pending connection was kept");
    // …while the first four wait out their handshake deadline…
    let open = closed_after(&mut held[0], Duration::from_millis(200)).await;
    assert!(
        open.is_none(),
        "a pending connection within the bound closed"
    );
    // …and a peer from another address connects.
    let address: Multiaddr = format!("/ip4/127.0.0.1/tcp/{port}/p2p/{}", node.peer_id())
        .parse()
        .expect("address");
    let (_other, mut other_events) =
        start(2, "/ip4/127.0.0.1/tcp/0", vec![address], HANDSHAKE).await;
    connected(&mut other_events, node.account()).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrap_peer_down_at_start_is_found_once_it_is_up() {
    let port = free_port();
    let first = Keypair::from_seed([1; 32]);
    let address: Multiaddr = format!(
        "/ip4/127.0.0.1/tcp/{port}/p2p/{}",
        peer_id_of(&first.account_id())
    )
    .parse()
    .expect("address");
    // The second node starts first: its bootstrap peer is not there yet.
    let (_second, mut second_events) =
        start(2, "/ip4/127.0.0.1/tcp/0", vec![address], HANDSHAKE).await;
    tokio::time::sleep(Duration::from_secs(2)).await;
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let (first_node, _first_events) = start(1, &listen, Vec::new(), HANDSHAKE).await;
    let up = Instant::now();
    connected(&mut second_events, first_node.account()).await;
    // Redials wait at most `redial_backoff_max` (8 s) apart.
    assert!(up.elapsed() < Duration::from_secs(10), "{:?}", up.elapsed());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_left_alone_dials_the_peers_it_knew() {
    let port = free_port();
    let listen = format!("/ip4/127.0.0.1/tcp/{port}");
    let (first, _first_events, first_task) = start_with_task(1, &listen).await;
    let address: Multiaddr = format!("{listen}/p2p/{}", first.peer_id())
        .parse()
        .expect("address");
    // The second knows the first only from having dialed it once: no
    // bootstrap peer, no relay.
    let (second, mut second_events) = start(2, "/ip4/127.0.0.1/tcp/0", Vec::new(), HANDSHAKE).await;
    second.dial(address).await.expect("dials");
    connected(&mut second_events, first.account()).await;
    // The first stops, and comes back on the same port.
    first_task.abort();
    let _ = first_task.await;
    drop(first);
    tokio::time::timeout(WAIT, async {
        loop {
            if let Some(Event::Disconnected(_)) = second_events.recv().await {
                return;
            }
        }
    })
    .await
    .expect("the second sees the first go");
    // Down for a while: whatever the second was doing with it has failed.
    tokio::time::sleep(Duration::from_secs(3)).await;
    let (back, _back_events, _back_task) = start_with_task(1, &listen).await;
    let up = Instant::now();
    connected(&mut second_events, back.account()).await;
    assert!(up.elapsed() < Duration::from_secs(10), "{:?}", up.elapsed());
}

/// [`start`], with no bootstrap peer, keeping the swarm's task to stop it.
async fn start_with_task(
    seed: u8,
    listen: &str,
) -> (Overlay, mpsc::Receiver<Event>, tokio::task::JoinHandle<()>) {
    let key = Keypair::from_seed([seed; 32]);
    let (overlay, mut events, task) =
        Overlay::start(&key, config(listen, Vec::new(), HANDSHAKE)).expect("overlay starts");
    loop {
        match tokio::time::timeout(WAIT, events.recv()).await {
            Ok(Some(Event::Listening(_))) => break,
            Ok(Some(_)) => {}
            other => panic!("no listen address: {other:?}"),
        }
    }
    (overlay, events, task)
}
