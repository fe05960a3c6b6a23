//! Play a hostile peer against idlegrid's compute overlay, for its tests and benchmarks.
//!
//! Floods of TCP connections that stall before or in their handshake (and
//! come back when closed), connections that measure how fast a node
//! refuses them, and libp2p peers that send garbage on every protocol the
//! overlay speaks, never read what they are sent, or gossip offers from
//! unstaked keys. Hostile traffic comes from loopback addresses other than
//! 127.0.0.1, as it would from other hosts.

use std::net::SocketAddr;
use std::time::Duration;

use futures::{AsyncReadExt, AsyncWriteExt, StreamExt};
use idlegrid_net::libp2p_keypair;
use idlegrid_net::protocol::{WORK_PROTOCOL, encode_frame};
use idlegrid_types::{Keypair, Offer, codec};
use libp2p::core::upgrade::OutboundConnectionUpgrade;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::NetworkBehaviour;
use libp2p::{Multiaddr, PeerId, StreamProtocol, Swarm, gossipsub, identify, noise, tcp, yamux};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpSocket, TcpStream};

/// How long any one hostile exchange may take before the test moves on.
const EXCHANGE: Duration = Duration::from_secs(10);
/// How long a peer keeps trying to open a stream to its target.
const OPENING: Duration = Duration::from_secs(30);

/// The `hosts` loopback addresses from 127.0.1.1 on: hostile traffic comes
/// from other addresses than the honest peers' 127.0.0.1, as it would
/// from other hosts.
pub fn hosts(count: u8) -> Vec<[u8; 4]> {
    (1..=count).map(|host| [127, 0, 1, host]).collect()
}

/// A multistream-select message: its length as a varint, the text, a
/// newline.
pub fn multistream(text: &str) -> Vec<u8> {
    let mut message = varint(text.len() as u64 + 1);
    message.extend_from_slice(text.as_bytes());
    message.push(b'\n');
    message
}

/// An unsigned LEB128 varint, as libp2p's length prefixes are.
pub fn varint(mut value: u64) -> Vec<u8> {
    let mut bytes = Vec::new();
    loop {
        let byte = (value & 0x7f) as u8;
        value >>= 7;
        if value == 0 {
            bytes.push(byte);
            return bytes;
        }
        bytes.push(byte | 0x80);
    }
}

/// Bytes no protocol expects, the same on every run.
pub fn garbage(length: usize, seed: u64) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..length)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The TCP socket address a multiaddr `/ip4/…/tcp/…` names.
pub fn socket_of(address: &Multiaddr) -> Option<SocketAddr> {
    let mut ip = None;
    let mut port = None;
    for part in address.iter() {
        match part {
            Protocol::Ip4(found) => ip = Some(found),
            Protocol::Tcp(found) => port = Some(found),
            _ => {}
        }
    }
    Some(SocketAddr::from((ip?, port?)))
}

/// A TCP connection to `target` from `host`, or none if it failed or took
/// too long.
pub async fn tcp_from(host: [u8; 4], target: SocketAddr) -> Option<TcpStream> {
    let socket = TcpSocket::new_v4().ok()?;
    socket.bind(SocketAddr::from((host, 0))).ok()?;
    tokio::time::timeout(EXCHANGE, socket.connect(target))
        .await
        .ok()?
        .ok()
}

/// Keeps `count` TCP connections open to `target` from `hosts` in turn
/// until `end`, each writing `first` (nothing, or the start of a
/// handshake) and then nothing; one the target closes is opened again after
/// a pause, as a determined attacker would. Sends `opened` how many were
/// open once each had its first try.
pub async fn flood(
    target: SocketAddr,
    hosts: &[[u8; 4]],
    count: usize,
    first: &'static [u8],
    end: tokio::time::Instant,
    opened: tokio::sync::oneshot::Sender<usize>,
) {
    let (tried, mut tries) = tokio::sync::mpsc::channel(count.max(1));
    let attackers: Vec<_> = hosts
        .iter()
        .cycle()
        .take(count)
        .map(|host| {
            let (host, tried) = (*host, tried.clone());
            tokio::spawn(async move {
                let mut first_try = Some(tried);
                while tokio::time::Instant::now() < end {
                    let mut held = false;
                    if let Some(mut stream) = tcp_from(host, target).await
                        && stream.write_all(first).await.is_ok()
                    {
                        held = true;
                        if let Some(tried) = first_try.take() {
                            let _ = tried.send(true).await;
                        }
                        let _ = tokio::time::timeout_at(end, until_closed(&mut stream)).await;
                    }
                    if let Some(tried) = first_try.take() {
                        let _ = tried.send(held).await;
                    }
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            })
        })
        .collect();
    drop(tried);
    let mut open = 0;
    while let Some(held) = tries.recv().await {
        open += usize::from(held);
    }
    let _ = opened.send(open);
    for attacker in attackers {
        let _ = attacker.await;
    }
}

/// Reads until the peer closes the stream (or it fails).
async fn until_closed(stream: &mut TcpStream) {
    let mut buffer = [0u8; 256];
    while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
}

/// Connects to `target` from `host` over and over, `concurrency` at once,
/// sending nothing, until `end`; gives how many connections the target
/// closed within `quickly` of their opening: what it refused at once.
pub async fn refusals(
    target: SocketAddr,
    host: [u8; 4],
    concurrency: usize,
    quickly: Duration,
    end: tokio::time::Instant,
) -> u64 {
    let workers: Vec<_> = (0..concurrency)
        .map(|_| {
            tokio::spawn(async move {
                let mut refused = 0u64;
                while tokio::time::Instant::now() < end {
                    let Some(mut stream) = tcp_from(host, target).await else {
                        continue;
                    };
                    if tokio::time::timeout(quickly, until_closed(&mut stream))
                        .await
                        .is_ok()
                    {
                        refused += 1;
                    }
                }
                refused
            })
        })
        .collect();
    let mut refused = 0;
    for worker in workers {
        refused += worker.await.unwrap_or(0);
    }
    refused
}

/// A runtime for the attacker, in a process allowed as many open files as
/// the system lets it have (floods hold many connections).
pub fn runtime() -> tokio::runtime::Runtime {
    idlegrid_net::raise_open_files_limit().expect("the limit on open files");
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a runtime")
}

/// [`noise_session`], tried up to three times (a loaded target may let a
/// handshake run past its deadline).
pub async fn noise_session_retried(
    host: [u8; 4],
    target: SocketAddr,
    seed: u8,
) -> Option<noise::Output<tcp::tokio::TcpStream>> {
    for _ in 0..3 {
        if let Some(session) = noise_session(host, target, seed).await {
            return Some(session);
        }
    }
    None
}

/// Negotiates noise by hand and completes its handshake under a fresh
/// key; gives the encrypted session, or none if the target cut it.
pub async fn noise_session(
    host: [u8; 4],
    target: SocketAddr,
    seed: u8,
) -> Option<noise::Output<tcp::tokio::TcpStream>> {
    let mut stream = tcp::tokio::TcpStream(tcp_from(host, target).await?);
    let mut proposal = multistream("/multistream/1.0.0");
    proposal.extend(multistream("/noise"));
    stream.write_all(&proposal).await.ok()?;
    // The listener echoes both lines.
    let mut echo = vec![0u8; proposal.len()];
    tokio::time::timeout(EXCHANGE, stream.read_exact(&mut echo))
        .await
        .ok()?
        .ok()?;
    let config = noise::Config::new(&libp2p_keypair(&Keypair::from_seed([seed; 32]))).ok()?;
    let (_, session) = tokio::time::timeout(EXCHANGE, config.upgrade_outbound(stream, "/noise"))
        .await
        .ok()?
        .ok()?;
    Some(session)
}

/// A frame of the work protocol with request id 7 that claims `length`
/// bytes of body and carries `body`.
pub fn work_frame(length: u32, body: &[u8]) -> Vec<u8> {
    [&7u64.to_le_bytes()[..], &length.to_le_bytes(), body].concat()
}

/// Writes `bytes` and waits (a bounded time) for the target to close.
pub async fn write_and_wait<S: futures::AsyncRead + futures::AsyncWrite + Unpin>(
    stream: &mut S,
    bytes: &[u8],
) {
    let _ = stream.write_all(bytes).await;
    let _ = stream.flush().await;
    let mut buffer = [0u8; 4096];
    let _ = tokio::time::timeout(EXCHANGE, async {
        while matches!(stream.read(&mut buffer).await, Ok(read) if read > 0) {}
    })
    .await;
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    stream: libp2p_stream::Behaviour,
    identify: identify::Behaviour,
    gossipsub: gossipsub::Behaviour,
}

/// A libp2p peer with a fresh key, connected to a provider, whose swarm a
/// task drives.
pub struct Peer {
    control: libp2p_stream::Control,
    target: PeerId,
    commands: tokio::sync::mpsc::Sender<Vec<u8>>,
    driver: tokio::task::JoinHandle<()>,
}

impl std::fmt::Debug for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Peer")
            .field("target", &self.target)
            .finish_non_exhaustive()
    }
}

impl Drop for Peer {
    fn drop(&mut self) {
        self.driver.abort();
    }
}

/// The offers topic of the network named `chain_id`.
pub fn offers_topic(chain_id: &str) -> gossipsub::IdentTopic {
    gossipsub::IdentTopic::new(format!("idlegrid/{chain_id}/offers/1"))
}

impl Peer {
    /// Connects to `target` (a multiaddr ending in `/p2p/<peer id>`) as
    /// the key of `seed`, identifying as an idlegrid node and subscribed to
    /// the offers of `chain_id`.
    pub fn connect(seed: [u8; 32], target: &Multiaddr, chain_id: &str) -> Peer {
        let target_peer = match target.iter().last() {
            Some(Protocol::P2p(peer)) => peer,
            _ => panic!("{target} names no peer"),
        };
        let mut swarm: Swarm<Behaviour> =
            libp2p::SwarmBuilder::with_existing_identity(libp2p_keypair(&Keypair::from_seed(seed)))
                .with_tokio()
                .with_tcp(
                    tcp::Config::default(),
                    noise::Config::new,
                    yamux::Config::default,
                )
                .expect("tcp")
                .with_behaviour(|key| Behaviour {
                    stream: libp2p_stream::Behaviour::new(),
                    identify: identify::Behaviour::new(identify::Config::new(
                        idlegrid_net::overlay::PROTOCOL_VERSION.to_owned(),
                        key.public(),
                    )),
                    gossipsub: gossipsub::Behaviour::new(
                        gossipsub::MessageAuthenticity::Signed(key.clone()),
                        gossipsub::Config::default(),
                    )
                    .expect("gossipsub"),
                })
                .expect("behaviour")
                .build();
        let topic = offers_topic(chain_id);
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .expect("subscribe");
        swarm.dial(target.clone()).expect("dial");
        let control = swarm.behaviour().stream.new_control();
        let (commands, mut publish) = tokio::sync::mpsc::channel::<Vec<u8>>(1024);
        let driver = tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = swarm.select_next_some() => {}
                    Some(bytes) = publish.recv() => {
                        let _ = swarm.behaviour_mut().gossipsub.publish(topic.clone(), bytes);
                    }
                }
            }
        });
        Peer {
            control,
            target: target_peer,
            commands,
            driver,
        }
    }

    /// Opens a stream of `protocol` to the target, writes `bytes`, and
    /// waits (a bounded time) for the target to end it; false when the
    /// stream could not be opened.
    pub async fn send(&mut self, protocol: &str, bytes: &[u8]) -> bool {
        let Some(mut stream) = self.open(protocol).await else {
            return false;
        };
        write_and_wait(&mut stream, bytes).await;
        true
    }

    /// A stream of `protocol` to the target, the connection tried again
    /// (a loaded target may let a handshake run past its deadline) until
    /// [`OPENING`] has passed; none if it never opened.
    async fn open(&mut self, protocol: &str) -> Option<libp2p::swarm::Stream> {
        let protocol = StreamProtocol::try_from_owned(protocol.to_owned()).expect("a protocol");
        let deadline = tokio::time::Instant::now() + OPENING;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            match tokio::time::timeout(
                left,
                self.control.open_stream(self.target, protocol.clone()),
            )
            .await
            {
                Ok(Ok(stream)) => return Some(stream),
                // Not spoken at all: no retry changes that.
                Ok(Err(libp2p_stream::OpenStreamError::UnsupportedProtocol(_))) | Err(_) => {
                    return None;
                }
                Ok(Err(_)) => tokio::time::sleep(Duration::from_millis(200)).await,
            }
        }
    }

    /// Opens `streams` work streams and sends `requests` requests for the
    /// target's offer on each, never reading an answer; gives the streams,
    /// which stay open until dropped.
    pub async fn never_read(
        &mut self,
        streams: usize,
        requests: u64,
    ) -> Vec<libp2p::swarm::Stream> {
        let request = idlegrid_net::Request::Offer;
        let mut open = Vec::new();
        for _ in 0..streams {
            let Some(mut stream) = self.open(WORK_PROTOCOL.as_ref()).await else {
                continue;
            };
            for id in 0..requests {
                let frame = encode_frame(id, &request).expect("a frame");
                let written =
                    tokio::time::timeout(Duration::from_millis(200), stream.write_all(&frame))
                        .await;
                // The target stopped reading: its bound on requests in
                // flight holds the rest back.
                if !matches!(written, Ok(Ok(()))) {
                    break;
                }
            }
            open.push(stream);
        }
        open
    }

    /// Gossips `count` offers signed by this peer's key (which holds no
    /// stake), numbered from `first` on.
    pub async fn gossip_offers(&self, key: &Keypair, first: u64, count: u64) {
        for sequence in first + 1..=first + count {
            let offer = key.sign(Offer {
                cores: 64,
                memory_bytes: 1 << 40,
                gpu: None,
                benchmark_fuel_per_second: u64::MAX / 2,
                price_floor_per_million_fuel: 0,
                concurrency: 4096,
                idle_only: false,
                operator: None,
                sequence,
                expires_at_ms: u64::MAX,
            });
            let bytes = codec::encode(&offer).expect("an offer encodes");
            let _ = self.commands.send(bytes).await;
        }
    }
}
