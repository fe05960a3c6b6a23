//! The swarm: one task owns it, the rest of the node talks to it through an
//! [`Overlay`] handle (commands in) and a bounded queue of [`Event`]s (out).
//!
//! Peers are named by their ledger accounts. Anything a peer sends is
//! decoded with limits; a peer whose request, response or offer does not
//! decode, or whose offer is not signed by its author, is disconnected and
//! blocked.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures::StreamExt;
use idlegrid_types::{AccountId, ContentId, Keypair, SignedOffer, codec};
use libp2p::core::ConnectedPoint;
use libp2p::core::transport::ListenerId;
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::toggle::Toggle;
use libp2p::swarm::{NetworkBehaviour, SwarmEvent};
use libp2p::{
    Multiaddr, PeerId, StreamProtocol, Swarm, allow_block_list, connection_limits, dcutr,
    gossipsub, identify, kad, mdns, noise, ping, relay, tcp, yamux,
};
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, info, warn};

use crate::guard::Guard;
use crate::identity::{account_of, libp2p_keypair};
use crate::link::{LinkConfig, Links, PeerNote};
use crate::protocol::{OFFER_BYTES_MAX, Request, Response, check_offer, decode_offer};

mod heal;
mod holders;

use heal::{Anchor, Backoff, HEAL_INTERVAL, PROTECTED_PEERS_MAX, RELAY_LISTEN_RETRY};
pub use holders::{ANNOUNCED_CIDS_MAX, ANNOUNCERS_PER_CID_MAX, HOLDERS_FOUND_MAX};
use holders::{HolderLookup, KAD_QUERY_TIMEOUT, PROVIDER_RECORD_TTL};

/// The identify protocol version every idlegrid node announces.
pub const PROTOCOL_VERSION: &str = "/idlegrid/1";
/// A gateway's circuits carry task traffic, not only hole-punching
/// handshakes: an hour and 1 GiB each unless configured otherwise.
pub const RELAY_CIRCUIT_DURATION_MAX_DEFAULT: Duration = Duration::from_secs(60 * 60);
pub const RELAY_CIRCUIT_BYTES_MAX_DEFAULT: u64 = 1 << 30;

/// How an overlay node behaves. Every bound is here, with its unit last.
#[derive(Debug, Clone)]
pub struct OverlayConfig {
    /// Names the network (the chain id): the offers topic and the kademlia
    /// protocol carry it, so two networks never mix.
    pub network: String,
    /// Addresses to listen on (TCP and QUIC).
    pub listen: Vec<Multiaddr>,
    /// Peers to connect to first; each address ends in `/p2p/<peer id>`.
    pub bootstrap: Vec<Multiaddr>,
    /// Find peers on the local network by multicast DNS.
    pub mdns: bool,
    /// Connect to every provider whose offer arrives (a requestor does).
    pub dial_offer_authors: bool,
    /// How long a request waits for its response.
    pub request_timeout: Duration,
    /// Events waiting for the node before new requests are refused.
    pub events_queue_max: usize,
    /// Requests in flight at once on one work link (each way, per peer):
    /// a peer past it waits, its link's window full, until answers go out.
    pub requests_in_flight_per_peer_max: usize,
    /// Established connections in all; protected peers (bootstrap peers,
    /// relays, peers this node exchanged work with) may still connect
    /// past it.
    pub connections_max: u32,
    pub connections_per_peer_max: u32,
    /// Established inbound connections from one IP address (protected
    /// peers excepted).
    pub connections_per_ip_max: u32,
    /// Inbound connections still in their handshake, from everyone and
    /// from one IP address: past either, a new one is refused at once.
    pub pending_incoming_max: u32,
    pub pending_incoming_per_ip_max: u32,
    /// How long a connection may take to become authenticated and
    /// multiplexed; one that sends nothing is closed after it.
    pub handshake_timeout: Duration,
    /// How long a connected peer has to identify itself as an idlegrid
    /// node before it is disconnected (protected peers excepted).
    pub identify_timeout: Duration,
    /// The longest wait between redials of a bootstrap peer or relay this
    /// node is not connected to (the wait doubles from a second up to it).
    pub redial_backoff_max: Duration,
    pub idle_connection_timeout: Duration,
    /// Peers remembered as blocked; the oldest is forgiven beyond this.
    pub blocked_peers_max: usize,
    /// Relay circuits for peers behind NAT (a gateway runs this).
    pub relay_server: bool,
    /// How long a relayed circuit lasts at most before the relay closes it
    /// (a gateway's; the peers behind it then open a fresh one).
    pub relay_circuit_duration_max: Duration,
    /// Bytes a relayed circuit carries at most, both ways together.
    pub relay_circuit_bytes_max: u64,
    /// Gateways to be reachable through (each ending in `/p2p/<peer id>`):
    /// this node reserves a circuit with each and listens on it, and DCUtR
    /// upgrades relayed connections to direct ones where the NAT allows.
    pub relays: Vec<Multiaddr>,
}

impl OverlayConfig {
    pub fn new(network: impl Into<String>) -> Self {
        Self {
            network: network.into(),
            listen: vec![
                "/ip4/0.0.0.0/tcp/0".parse().expect("a valid address"),
                "/ip4/0.0.0.0/udp/0/quic-v1"
                    .parse()
                    .expect("a valid address"),
            ],
            bootstrap: Vec::new(),
            mdns: true,
            dial_offer_authors: false,
            request_timeout: Duration::from_secs(60),
            events_queue_max: 4096,
            requests_in_flight_per_peer_max: 256,
            connections_max: 1024,
            connections_per_peer_max: 2,
            connections_per_ip_max: 64,
            pending_incoming_max: 128,
            pending_incoming_per_ip_max: 8,
            handshake_timeout: Duration::from_secs(5),
            identify_timeout: Duration::from_secs(15),
            redial_backoff_max: Duration::from_secs(8),
            idle_connection_timeout: Duration::from_secs(300),
            blocked_peers_max: 10_000,
            relay_server: false,
            relay_circuit_duration_max: RELAY_CIRCUIT_DURATION_MAX_DEFAULT,
            relay_circuit_bytes_max: RELAY_CIRCUIT_BYTES_MAX_DEFAULT,
            relays: Vec::new(),
        }
    }

    fn offers_topic(&self) -> gossipsub::IdentTopic {
        gossipsub::IdentTopic::new(format!("idlegrid/{}/offers/1", self.network))
    }
}

/// Something the overlay saw, for the node to act on.
#[derive(Debug)]
pub enum Event {
    Listening(Multiaddr),
    Connected(AccountId),
    Disconnected(AccountId),
    /// A peer subscribed to offers (a provider may want to publish again).
    OfferSubscriber(AccountId),
    /// A provider's offer, its signature checked and signed by its author.
    Offer {
        provider: AccountId,
        offer: SignedOffer,
    },
    /// A peer's request; answer through `reply` (dropping it refuses).
    Request {
        peer: AccountId,
        request: Request,
        reply: Reply,
    },
    /// A peer sent something malformed (or content that is not what it
    /// was asked for) and was disconnected and blocked.
    Misbehaved {
        peer: PeerId,
        reason: String,
    },
}

/// Where the answer to an inbound request goes.
#[derive(Debug)]
pub struct Reply(oneshot::Sender<Response>);

impl Reply {
    pub(crate) fn new(sender: oneshot::Sender<Response>) -> Self {
        Reply(sender)
    }

    pub fn send(self, response: Response) {
        // The requester may be gone; nobody is left to tell.
        let _ = self.0.send(response);
    }
}

/// Why a request got no response.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error("could not connect to {0}")]
    Unreachable(AccountId),
    #[error("{0} did not answer in time")]
    Timeout(AccountId),
    #[error("the connection to {0} closed before it answered")]
    ConnectionClosed(AccountId),
    #[error("{0} does not speak the idlegrid work protocol")]
    Unsupported(AccountId),
    #[error("the exchange with {peer} failed: {message}")]
    Io { peer: AccountId, message: String },
    #[error("the overlay has stopped")]
    Stopped,
}

/// Why the overlay could not start or do what it was asked.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("failed to build the transport: {0}")]
    Transport(String),
    #[error("failed to listen on {address}: {message}")]
    Listen { address: Multiaddr, message: String },
    #[error("failed to start multicast DNS: {0}")]
    Mdns(String),
    #[error("failed to publish: {0}")]
    Publish(String),
    #[error("failed to dial {address}: {message}")]
    Dial { address: Multiaddr, message: String },
    #[error("{0}")]
    Config(String),
    #[error("the overlay has stopped")]
    Stopped,
}

enum Command {
    PublishOffer {
        bytes: Vec<u8>,
        done: oneshot::Sender<Result<(), NetError>>,
    },
    Dial {
        address: Multiaddr,
        done: oneshot::Sender<Result<(), NetError>>,
    },
    ListenAddresses(oneshot::Sender<Vec<Multiaddr>>),
    Connected(oneshot::Sender<Vec<AccountId>>),
    Block {
        peer: PeerId,
        reason: String,
    },
    Announce(Vec<ContentId>),
    Withdraw(ContentId),
    FindHolders {
        cid: ContentId,
        done: oneshot::Sender<Vec<AccountId>>,
    },
}

/// The handle the rest of the node uses. Cheap to clone.
#[derive(Clone)]
pub struct Overlay {
    commands: mpsc::Sender<Command>,
    links: Arc<Links>,
    account: AccountId,
    peer_id: PeerId,
}

impl std::fmt::Debug for Overlay {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Overlay")
            .field("account", &self.account)
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

/// Commands waiting for the swarm task.
const COMMANDS_QUEUE_MAX: usize = 1024;

impl Overlay {
    /// Builds the swarm, starts listening and dialing, and spawns the task
    /// that drives it on the current tokio runtime.
    pub fn start(
        keypair: &Keypair,
        config: OverlayConfig,
    ) -> Result<(Overlay, mpsc::Receiver<Event>, tokio::task::JoinHandle<()>), NetError> {
        match crate::guard::raise_open_files_limit() {
            Ok(limit) => debug!(limit, "open files"),
            Err(error) => warn!(%error, "could not raise the limit on open files"),
        }
        let mut swarm = build_swarm(keypair, &config)?;
        let topic = config.offers_topic();
        swarm
            .behaviour_mut()
            .gossipsub
            .subscribe(&topic)
            .map_err(|error| NetError::Config(format!("failed to subscribe to offers: {error}")))?;
        for address in &config.listen {
            swarm
                .listen_on(address.clone())
                .map_err(|error| NetError::Listen {
                    address: address.clone(),
                    message: error.to_string(),
                })?;
        }
        for address in config.bootstrap.iter().chain(&config.relays) {
            let Some(Protocol::P2p(peer)) = address.iter().last() else {
                return Err(NetError::Config(format!(
                    "the address {address} does not end in /p2p/<peer id>"
                )));
            };
            swarm
                .behaviour_mut()
                .kademlia
                .add_address(&peer, address.clone());
            swarm
                .dial(address.clone())
                .map_err(|error| NetError::Dial {
                    address: address.clone(),
                    message: error.to_string(),
                })?;
        }
        // Circuits are reserved once the connection to each relay is up.
        let relays: HashMap<PeerId, Multiaddr> = config
            .relays
            .iter()
            .filter_map(|relay| match relay.iter().last() {
                Some(Protocol::P2p(peer)) => Some((peer, relay.clone())),
                _ => None,
            })
            .collect();
        let (commands, command_queue) = mpsc::channel(COMMANDS_QUEUE_MAX);
        let (events, event_queue) = mpsc::channel(config.events_queue_max.max(1));
        let (notes, noted) = mpsc::channel(PEER_NOTES_QUEUE_MAX);
        let (stop, stopped) = watch::channel(());
        let links = Links::start(
            swarm.behaviour().work.new_control(),
            LinkConfig {
                request_timeout: config.request_timeout,
                in_flight_max: config.requests_in_flight_per_peer_max,
                idle_timeout: config.idle_connection_timeout,
                links_max: usize::try_from(config.connections_max).unwrap_or(usize::MAX),
            },
            events.clone(),
            notes,
            stopped,
        )
        .map_err(NetError::Config)?;
        let peer_id = *swarm.local_peer_id();
        let anchors = config
            .bootstrap
            .iter()
            .chain(&config.relays)
            .filter_map(|address| match address.iter().last() {
                Some(Protocol::P2p(peer)) => Some((peer, Anchor::new(address.clone()))),
                _ => None,
            })
            .collect();
        let mut driver = Driver {
            swarm,
            config,
            events,
            _stop: stop,
            blocked: VecDeque::new(),
            connected: HashSet::new(),
            bootstrapped: false,
            relays,
            relay_listeners: HashMap::new(),
            lookups: HashMap::new(),
            anchors,
            lonely: Backoff::new(),
            protected: HashSet::new(),
            unidentified: HashMap::new(),
            holder_lookups: HashMap::new(),
        };
        let anchors: Vec<PeerId> = driver.anchors.keys().copied().collect();
        for peer in anchors {
            driver.protect(peer);
        }
        let task = tokio::spawn(driver.run(command_queue, noted));
        let overlay = Overlay {
            commands,
            links,
            account: keypair.account_id(),
            peer_id,
        };
        Ok((overlay, event_queue, task))
    }

    pub fn account(&self) -> AccountId {
        self.account
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Sends a request and waits for its response (or the timeout).
    pub async fn request(
        &self,
        peer: &AccountId,
        request: Request,
    ) -> Result<Response, RequestError> {
        self.send(peer, request).await
    }

    /// Puts a request on its way now (when the peer's link has room) and
    /// returns the wait for its response, which needs no borrow of this
    /// handle: a node's loop can send without waiting and hand the wait
    /// to a task. Requests to one peer leave in the order they are sent.
    pub fn send(
        &self,
        peer: &AccountId,
        request: Request,
    ) -> impl Future<Output = Result<Response, RequestError>> + Send + use<> {
        self.links.send(*peer, request)
    }

    /// Disconnects and blocks `peer`, which proved itself dishonest (it
    /// sent bytes that are not the content it was asked for): no request
    /// goes to it or is taken from it again, as for a peer that sends a
    /// malformed message.
    pub fn block(&self, peer: &AccountId, reason: String) {
        // A full queue means the overlay is stopping or swamped; the next
        // proof of the same lie blocks it then.
        let _ = self.commands.try_send(Command::Block {
            peer: crate::peer_id_of(peer),
            reason,
        });
    }

    /// Announces that this node holds `cids` and serves them (kademlia
    /// provider records, renewed while held): peers that need them find
    /// this node with [`Overlay::holders`]. Past [`ANNOUNCED_CIDS_MAX`]
    /// ids an announcement is not kept.
    pub fn announce(&self, cids: Vec<ContentId>) {
        if cids.is_empty() {
            return;
        }
        // A full queue means the overlay is stopping or swamped: the
        // content is still served to whoever asks.
        if self.commands.try_send(Command::Announce(cids)).is_err() {
            debug!("an announcement of held content was dropped");
        }
    }

    /// Stops announcing `cid` (it is no longer held). Records already on
    /// peers lapse with their lifetime.
    pub fn withdraw(&self, cid: ContentId) {
        let _ = self.commands.try_send(Command::Withdraw(cid));
    }

    /// Peers that announced holding `cid` (not this node), at most
    /// [`HOLDERS_FOUND_MAX`], as soon as a lookup finds any; none when the
    /// lookup ends without (or the overlay has stopped).
    pub async fn holders(&self, cid: ContentId) -> Vec<AccountId> {
        let (done, found) = oneshot::channel();
        if self
            .commands
            .send(Command::FindHolders { cid, done })
            .await
            .is_err()
        {
            return Vec::new();
        }
        found.await.unwrap_or_default()
    }

    /// Publishes a signed offer on the network's offers topic.
    pub async fn publish_offer(&self, offer: &SignedOffer) -> Result<(), NetError> {
        let bytes = codec::encode(offer).map_err(|error| NetError::Publish(error.to_string()))?;
        if bytes.len() > OFFER_BYTES_MAX {
            return Err(NetError::Publish(format!(
                "an offer of {} bytes is over the limit of {OFFER_BYTES_MAX}",
                bytes.len()
            )));
        }
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::PublishOffer { bytes, done })
            .await
            .map_err(|_| NetError::Stopped)?;
        result.await.map_err(|_| NetError::Stopped)?
    }

    pub async fn dial(&self, address: Multiaddr) -> Result<(), NetError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Dial { address, done })
            .await
            .map_err(|_| NetError::Stopped)?;
        result.await.map_err(|_| NetError::Stopped)?
    }

    /// Where this node listens, each address ending in its `/p2p/` id.
    pub async fn listen_addresses(&self) -> Result<Vec<Multiaddr>, NetError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::ListenAddresses(done))
            .await
            .map_err(|_| NetError::Stopped)?;
        result.await.map_err(|_| NetError::Stopped)
    }

    /// The accounts this node has a connection with.
    pub async fn connected(&self) -> Result<Vec<AccountId>, NetError> {
        let (done, result) = oneshot::channel();
        self.commands
            .send(Command::Connected(done))
            .await
            .map_err(|_| NetError::Stopped)?;
        result.await.map_err(|_| NetError::Stopped)
    }
}

#[derive(NetworkBehaviour)]
struct Behaviour {
    blocked: allow_block_list::Behaviour<allow_block_list::BlockedPeers>,
    limits: connection_limits::Behaviour,
    guard: Guard,
    identify: identify::Behaviour,
    ping: ping::Behaviour,
    kademlia: kad::Behaviour<kad::store::MemoryStore>,
    gossipsub: gossipsub::Behaviour,
    work: libp2p_stream::Behaviour,
    mdns: Toggle<mdns::tokio::Behaviour>,
    relay_client: relay::client::Behaviour,
    relay_server: Toggle<relay::Behaviour>,
    dcutr: dcutr::Behaviour,
}

fn build_swarm(keypair: &Keypair, config: &OverlayConfig) -> Result<Swarm<Behaviour>, NetError> {
    let transport_error = |error: &dyn std::fmt::Display| NetError::Transport(error.to_string());
    let kad_protocol =
        StreamProtocol::try_from_owned(format!("/idlegrid/{}/kad/1", config.network)).map_err(
            |error| NetError::Config(format!("the network name makes no protocol: {error}")),
        )?;
    let swarm = libp2p::SwarmBuilder::with_existing_identity(libp2p_keypair(keypair))
        .with_tokio()
        .with_tcp(
            tcp::Config::default().nodelay(true),
            noise::Config::new,
            yamux::Config::default,
        )
        .map_err(|error| transport_error(&error))?
        .with_quic()
        .with_relay_client(noise::Config::new, yamux::Config::default)
        .map_err(|error| transport_error(&error))?
        .with_behaviour(
            |key, relay_client| -> Result<Behaviour, Box<dyn std::error::Error + Send + Sync>> {
                let peer_id = key.public().to_peer_id();
                let gossip_config = gossipsub::ConfigBuilder::default()
                    .validation_mode(gossipsub::ValidationMode::Strict)
                    .validate_messages()
                    .max_transmit_size(64 << 10)
                    .build()?;
                let gossipsub = gossipsub::Behaviour::new(
                    gossipsub::MessageAuthenticity::Signed(key.clone()),
                    gossip_config,
                )?;
                let mut kad_config = kad::Config::new(kad_protocol);
                kad_config
                    .set_query_timeout(KAD_QUERY_TIMEOUT)
                    .set_provider_record_ttl(Some(PROVIDER_RECORD_TTL))
                    .set_provider_publication_interval(Some(PROVIDER_RECORD_TTL / 2));
                let records = kad::store::MemoryStoreConfig {
                    max_provided_keys: ANNOUNCED_CIDS_MAX,
                    max_providers_per_key: ANNOUNCERS_PER_CID_MAX,
                    ..kad::store::MemoryStoreConfig::default()
                };
                let mut kademlia = kad::Behaviour::with_config(
                    peer_id,
                    kad::store::MemoryStore::with_config(peer_id, records),
                    kad_config,
                );
                kademlia.set_mode(Some(kad::Mode::Server));
                let mdns = if config.mdns {
                    Some(mdns::tokio::Behaviour::new(
                        mdns::Config::default(),
                        peer_id,
                    )?)
                } else {
                    None
                };
                let limits = connection_limits::ConnectionLimits::default()
                    .with_max_established(Some(config.connections_max))
                    .with_max_established_per_peer(Some(config.connections_per_peer_max))
                    .with_max_pending_incoming(Some(config.pending_incoming_max));
                Ok(Behaviour {
                    blocked: allow_block_list::Behaviour::default(),
                    limits: connection_limits::Behaviour::new(limits),
                    guard: Guard::new(
                        config.pending_incoming_per_ip_max,
                        config.connections_per_ip_max,
                    ),
                    identify: identify::Behaviour::new(
                        identify::Config::new(PROTOCOL_VERSION.to_owned(), key.public())
                            .with_agent_version(format!("idlegrid/{}", env!("CARGO_PKG_VERSION")))
                            // A circuit through a relay is listened on after
                            // the connection to the relay opens (and again
                            // after it ends): peers hear of it at once rather
                            // than at the next identify, minutes later.
                            .with_push_listen_addr_updates(true),
                    ),
                    ping: ping::Behaviour::default(),
                    kademlia,
                    gossipsub,
                    work: libp2p_stream::Behaviour::new(),
                    mdns: Toggle::from(mdns),
                    relay_client,
                    relay_server: Toggle::from(
                        config
                            .relay_server
                            .then(|| relay::Behaviour::new(peer_id, relay_config(config))),
                    ),
                    dcutr: dcutr::Behaviour::new(peer_id),
                })
            },
        )
        .map_err(|error| transport_error(&error))?
        .with_swarm_config(|swarm_config| {
            swarm_config.with_idle_connection_timeout(config.idle_connection_timeout)
        })
        .with_connection_timeout(config.handshake_timeout)
        .build();
    Ok(swarm)
}

/// Circuits a gateway relays: task traffic, not just hole-punching
/// handshakes, so longer and larger than libp2p's defaults, and bounded.
fn relay_config(config: &OverlayConfig) -> relay::Config {
    relay::Config {
        max_reservations: 1024,
        max_reservations_per_peer: 4,
        max_circuits: 256,
        max_circuits_per_peer: 16,
        // libp2p sends the limit in whole seconds as a u32 (and panics past it).
        max_circuit_duration: config
            .relay_circuit_duration_max
            .min(Duration::from_secs(u32::MAX.into())),
        max_circuit_bytes: config.relay_circuit_bytes_max,
        ..relay::Config::default()
    }
}

/// Links' notes on peers (misbehaving, exchanging work), waiting for the
/// swarm.
const PEER_NOTES_QUEUE_MAX: usize = 256;

struct Driver {
    swarm: Swarm<Behaviour>,
    config: OverlayConfig,
    events: mpsc::Sender<Event>,
    /// Dropped when the swarm stops, which ends the work links.
    _stop: watch::Sender<()>,
    blocked: VecDeque<PeerId>,
    connected: HashSet<PeerId>,
    bootstrapped: bool,
    /// Relays whose circuit this node has yet to listen on (again).
    relays: HashMap<PeerId, Multiaddr>,
    /// Listeners on a relay's circuit: the relay, its address, and when
    /// the listener began.
    relay_listeners: HashMap<ListenerId, (PeerId, Multiaddr, Instant)>,
    /// When each unreachable peer was last looked up in the DHT.
    lookups: HashMap<PeerId, Instant>,
    /// Bootstrap peers and relays, redialed while not connected.
    anchors: HashMap<PeerId, Anchor>,
    /// When a node connected to nobody next dials the peers it knew.
    lonely: Backoff,
    /// Peers past the connection bounds: anchors and peers that exchanged
    /// work with this node.
    protected: HashSet<PeerId>,
    /// Connected peers that have not yet identified themselves as idlegrid
    /// nodes, with when they connected.
    unidentified: HashMap<PeerId, Instant>,
    /// Lookups of content holders: what each found so far, and who waits.
    holder_lookups: HashMap<kad::QueryId, HolderLookup>,
}

impl Driver {
    async fn run(
        mut self,
        mut commands: mpsc::Receiver<Command>,
        mut noted: mpsc::Receiver<PeerNote>,
    ) {
        let mut bootstrap_timer = tokio::time::interval(Duration::from_secs(30));
        let mut heal_timer = tokio::time::interval(HEAL_INTERVAL);
        heal_timer.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first listen through each relay waits for its connection.
        let mut relay_timer = tokio::time::interval_at(
            tokio::time::Instant::now() + RELAY_LISTEN_RETRY,
            RELAY_LISTEN_RETRY,
        );
        loop {
            tokio::select! {
                command = commands.recv() => match command {
                    Some(command) => self.command(command),
                    // Every handle is gone: the node is shutting down.
                    None => break,
                },
                Some(note) = noted.recv() => match note {
                    PeerNote::Misbehaved(peer, reason) => self.misbehaved(peer, reason),
                    PeerNote::Worked(peer) => self.protect(peer),
                    PeerNote::Unreachable(peer) => self.look_up(peer),
                },
                event = self.swarm.select_next_some() => self.swarm_event(event).await,
                _ = bootstrap_timer.tick() => self.bootstrap(),
                _ = heal_timer.tick() => self.heal(),
                _ = relay_timer.tick() => self.listen_through_relays(),
            }
        }
        debug!("overlay stopped");
    }

    fn command(&mut self, command: Command) {
        match command {
            Command::PublishOffer { bytes, done } => {
                let topic = self.config.offers_topic();
                let result = match self.swarm.behaviour_mut().gossipsub.publish(topic, bytes) {
                    Ok(_) => Ok(()),
                    // Nobody to tell yet; the next publication will reach them.
                    Err(gossipsub::PublishError::NoPeersSubscribedToTopic) => Ok(()),
                    Err(error) => Err(NetError::Publish(error.to_string())),
                };
                let _ = done.send(result);
            }
            Command::Dial { address, done } => {
                let result = self
                    .swarm
                    .dial(address.clone())
                    .map_err(|error| NetError::Dial {
                        address,
                        message: error.to_string(),
                    });
                let _ = done.send(result);
            }
            Command::ListenAddresses(done) => {
                let peer_id = *self.swarm.local_peer_id();
                let addresses = self
                    .swarm
                    .listeners()
                    .map(|address| match address.iter().last() {
                        // A circuit address already ends in this node's id.
                        Some(Protocol::P2p(_)) => address.clone(),
                        _ => address.clone().with(Protocol::P2p(peer_id)),
                    })
                    .collect();
                let _ = done.send(addresses);
            }
            Command::Connected(done) => {
                let accounts = self.connected.iter().filter_map(account_of).collect();
                let _ = done.send(accounts);
            }
            Command::Block { peer, reason } => self.misbehaved(peer, reason),
            Command::Announce(cids) => self.announce(cids),
            Command::Withdraw(cid) => self.withdraw(cid),
            Command::FindHolders { cid, done } => self.find_holders(cid, done),
        }
    }

    async fn emit(&mut self, event: Event) {
        // The node stopped reading: it is shutting down.
        let _ = self.events.send(event).await;
    }

    fn misbehaved(&mut self, peer: PeerId, reason: String) {
        warn!(%peer, %reason, "blocking a peer that sent a malformed message or wrong content");
        self.swarm.behaviour_mut().blocked.block_peer(peer);
        self.blocked.push_back(peer);
        if self.blocked.len() > self.config.blocked_peers_max
            && let Some(forgiven) = self.blocked.pop_front()
        {
            self.swarm.behaviour_mut().blocked.unblock_peer(forgiven);
        }
        let _ = self.events.try_send(Event::Misbehaved { peer, reason });
    }

    async fn swarm_event(&mut self, event: SwarmEvent<BehaviourEvent>) {
        match event {
            SwarmEvent::NewListenAddr { address, .. } => {
                info!(%address, "listening");
                if self.config.relay_server {
                    // A gateway is where it listens: a relay hands its
                    // addresses to the peers that reserve circuits with it.
                    self.swarm.add_external_address(address.clone());
                }
                self.emit(Event::Listening(address)).await;
            }
            SwarmEvent::ConnectionEstablished {
                peer_id,
                num_established,
                endpoint,
                ..
            } => {
                let Some(account) = account_of(&peer_id) else {
                    // Not an ed25519 identity, so not an idlegrid node.
                    let _ = self.swarm.disconnect_peer_id(peer_id);
                    return;
                };
                if let ConnectedPoint::Dialer { address, .. } = endpoint {
                    self.swarm
                        .behaviour_mut()
                        .kademlia
                        .add_address(&peer_id, address);
                }
                if let Some(relay) = self.relays.remove(&peer_id) {
                    self.listen_through(peer_id, relay);
                }
                if num_established.get() == 1 && self.connected.insert(peer_id) {
                    self.lonely.reset();
                    if let Some(anchor) = self.anchors.get_mut(&peer_id) {
                        anchor.backoff.reset();
                        // Back with a peer it lost: find the rest again.
                        self.bootstrapped = false;
                    }
                    if !self.bootstrapped {
                        self.bootstrapped = true;
                        let _ = self.swarm.behaviour_mut().kademlia.bootstrap();
                    }
                    if !self.protected.contains(&peer_id)
                        && self.unidentified.len() < PROTECTED_PEERS_MAX
                    {
                        self.unidentified.insert(peer_id, Instant::now());
                    }
                    info!(peer = %account, "connected");
                    self.emit(Event::Connected(account)).await;
                }
            }
            SwarmEvent::ConnectionClosed {
                peer_id,
                num_established: 0,
                ..
            } => self.peer_gone(peer_id).await,
            SwarmEvent::Behaviour(event) => self.behaviour_event(event).await,
            SwarmEvent::ListenerClosed {
                listener_id,
                addresses,
                reason,
            } => {
                warn!(?addresses, ?reason, "stopped listening");
                // A relay's circuit ends with the connection to the relay or
                // a refused renewal; listen through it again, at once unless
                // the last try was just now (then with the relay timer).
                if let Some((peer, relay, since)) = self.relay_listeners.remove(&listener_id) {
                    if since.elapsed() >= RELAY_LISTEN_RETRY {
                        info!(%relay, "listening through the relay again");
                        self.listen_through(peer, relay);
                    } else {
                        self.relays.insert(peer, relay);
                    }
                }
            }
            SwarmEvent::ListenerError { error, .. } => warn!(%error, "a listener failed"),
            SwarmEvent::OutgoingConnectionError { peer_id, error, .. } => {
                debug!(?peer_id, %error, "could not connect");
                if let Some(peer) = peer_id {
                    self.look_up(peer);
                }
            }
            _ => {}
        }
    }

    /// The last connection to `peer` closed.
    async fn peer_gone(&mut self, peer: PeerId) {
        if !self.connected.remove(&peer) {
            return;
        }
        self.unidentified.remove(&peer);
        if self.connected.is_empty() {
            // Alone: the next connection bootstraps again.
            self.bootstrapped = false;
        }
        if let Some(account) = account_of(&peer) {
            info!(peer = %account, "disconnected");
            self.emit(Event::Disconnected(account)).await;
        }
    }

    async fn behaviour_event(&mut self, event: BehaviourEvent) {
        match event {
            BehaviourEvent::Identify(identify::Event::Received { peer_id, info, .. }) => {
                if info.protocol_version != PROTOCOL_VERSION {
                    return;
                }
                self.unidentified.remove(&peer_id);
                for address in info.listen_addrs {
                    self.swarm
                        .behaviour_mut()
                        .kademlia
                        .add_address(&peer_id, address);
                }
            }
            BehaviourEvent::Mdns(mdns::Event::Discovered(found)) => {
                for (peer_id, address) in found {
                    self.swarm
                        .behaviour_mut()
                        .kademlia
                        .add_address(&peer_id, address.clone());
                    if !self.connected.contains(&peer_id) {
                        let _ = self.swarm.dial(address);
                    }
                }
            }
            BehaviourEvent::Gossipsub(gossipsub::Event::Message {
                propagation_source,
                message_id,
                message,
            }) => self.offer(propagation_source, message_id, message),
            BehaviourEvent::Gossipsub(gossipsub::Event::Subscribed { peer_id, topic, .. }) => {
                if topic == self.config.offers_topic().hash()
                    && let Some(account) = account_of(&peer_id)
                {
                    let _ = self.events.try_send(Event::OfferSubscriber(account));
                }
            }
            BehaviourEvent::Kademlia(kad::Event::OutboundQueryProgressed {
                result: kad::QueryResult::GetClosestPeers(Ok(found)),
                ..
            }) => {
                // Only the addresses of peers this node looked up: the rest of
                // a lookup's answer is other peers' say-so about third parties.
                for info in found.peers {
                    if self.lookups.contains_key(&info.peer_id) {
                        for address in info.addrs {
                            self.swarm
                                .behaviour_mut()
                                .kademlia
                                .add_address(&info.peer_id, address);
                        }
                    }
                }
            }
            BehaviourEvent::Kademlia(kad::Event::OutboundQueryProgressed {
                id,
                result: kad::QueryResult::GetProviders(result),
                step,
                ..
            }) => self.holders_found(id, result, step.last),
            BehaviourEvent::RelayClient(event) => info!(?event, "relay client"),
            BehaviourEvent::RelayServer(event) => info!(?event, "relay"),
            BehaviourEvent::Dcutr(event) => info!(?event, "direct connection upgrade"),
            _ => {}
        }
    }

    fn offer(&mut self, source: PeerId, id: gossipsub::MessageId, message: gossipsub::Message) {
        let checked = (|| {
            let author = message.source.ok_or("an offer without an author")?;
            let author_account =
                account_of(&author).ok_or("an offer from a peer that is no account")?;
            let offer = decode_offer(&message.data).map_err(|_| "an offer that does not decode")?;
            check_offer(&author_account, &offer)?;
            Ok::<_, &'static str>((author, author_account, offer))
        })();
        let gossip = &mut self.swarm.behaviour_mut().gossipsub;
        match checked {
            Ok((author, provider, offer)) => {
                gossip.report_message_validation_result(
                    &id,
                    &source,
                    gossipsub::MessageAcceptance::Accept,
                );
                if self.config.dial_offer_authors && !self.connected.contains(&author) {
                    let _ = self.swarm.dial(author);
                }
                // Offers come again; one lost while the node is busy costs nothing.
                let _ = self.events.try_send(Event::Offer { provider, offer });
            }
            Err(reason) => {
                gossip.report_message_validation_result(
                    &id,
                    &source,
                    gossipsub::MessageAcceptance::Reject,
                );
                self.misbehaved(source, reason.to_owned());
            }
        }
    }
}
