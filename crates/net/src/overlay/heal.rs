//! Keeping a node on the network: anchors (bootstrap peers and relays)
//! redialed with a doubling wait, peers it knew dialed when it is alone,
//! circuits listened on again through relays, unreachable peers looked up
//! in the DHT, peers that never identify disconnected, and peers that
//! exchanged work protected past the bounds on connections.

use std::time::{Duration, Instant};

use libp2p::multiaddr::Protocol;
use libp2p::swarm::dial_opts::{DialOpts, PeerCondition};
use libp2p::{Multiaddr, PeerId};
use tracing::{debug, warn};

use super::Driver;

/// How often the node checks on its anchors and unidentified peers.
pub(super) const HEAL_INTERVAL: Duration = Duration::from_millis(500);
/// The first wait before redialing an anchor.
const REDIAL_BACKOFF_MIN: Duration = Duration::from_secs(1);
/// Peers protected past the connection bounds, at most.
pub(super) const PROTECTED_PEERS_MAX: usize = 4096;

/// Peers from the routing table a node connected to nobody dials at once.
const KNOWN_PEERS_REDIALED: usize = 8;

/// When to dial again: the wait doubles from [`REDIAL_BACKOFF_MIN`] after
/// each try, up to a maximum, and starts over once connected.
pub(super) struct Backoff {
    wait: Duration,
    next: Instant,
}

impl Backoff {
    /// The first try is a wait away (the dial at start is the try before).
    pub(super) fn new() -> Self {
        Self {
            wait: REDIAL_BACKOFF_MIN,
            next: Instant::now() + REDIAL_BACKOFF_MIN,
        }
    }

    pub(super) fn due(&self, now: Instant) -> bool {
        now >= self.next
    }

    pub(super) fn tried(&mut self, now: Instant, max: Duration) {
        self.next = now + self.wait;
        self.wait = (self.wait * 2).min(max);
    }

    pub(super) fn reset(&mut self) {
        self.wait = REDIAL_BACKOFF_MIN;
    }
}

/// A peer this node keeps connected to (a bootstrap peer or a relay): it
/// is redialed, with a doubling wait, whenever it is not connected.
pub(super) struct Anchor {
    pub(super) address: Multiaddr,
    pub(super) backoff: Backoff,
}

impl Anchor {
    pub(super) fn new(address: Multiaddr) -> Self {
        Self {
            address,
            backoff: Backoff::new(),
        }
    }
}
/// How often a node listens again through a relay whose circuit closed
/// (the connection to it dropped, or its reservation was refused): one
/// listen (and dial, when not connected) per relay per this.
pub(super) const RELAY_LISTEN_RETRY: Duration = Duration::from_secs(5);

/// How often one unreachable peer is looked up in the DHT.
const LOOKUP_INTERVAL: Duration = Duration::from_secs(2);
/// Unreachable peers whose last lookup is remembered.
const LOOKUPS_REMEMBERED_MAX: usize = 1024;

impl Driver {
    /// Lets `peer` connect past the bounds on connections.
    pub(super) fn protect(&mut self, peer: PeerId) {
        if self.protected.len() < PROTECTED_PEERS_MAX && self.protected.insert(peer) {
            let behaviour = self.swarm.behaviour_mut();
            behaviour.limits.bypass_peer_id(&peer);
            behaviour.guard.protect(peer);
            self.unidentified.remove(&peer);
        }
    }

    /// Redials the anchors that are not connected, each when its wait is
    /// over, and disconnects peers that never identified themselves.
    pub(super) fn heal(&mut self) {
        let now = Instant::now();
        let backoff_max = self.config.redial_backoff_max;
        for (peer, anchor) in &mut self.anchors {
            if self.connected.contains(peer) || !anchor.backoff.due(now) {
                continue;
            }
            debug!(%peer, address = %anchor.address, "redialing");
            if let Err(error) = self.swarm.dial(anchor.address.clone()) {
                debug!(%peer, %error, "could not redial");
            }
            anchor.backoff.tried(now, backoff_max);
        }
        if self.connected.is_empty() && self.lonely.due(now) {
            self.redial_known_peers();
            self.lonely.tried(now, backoff_max);
        }
        let deadline = self.config.identify_timeout;
        let silent: Vec<PeerId> = self
            .unidentified
            .iter()
            .filter(|(_, since)| now.duration_since(**since) >= deadline)
            .map(|(peer, _)| *peer)
            .collect();
        for peer in silent {
            debug!(%peer, "disconnecting a peer that never identified itself");
            self.unidentified.remove(&peer);
            let _ = self.swarm.disconnect_peer_id(peer);
        }
    }

    /// Dials peers from the routing table (every idlegrid node this one
    /// has known, with the addresses it knew them by): for a node connected
    /// to nobody, whose anchors (if it has any) do not answer.
    fn redial_known_peers(&mut self) {
        let known: Vec<(PeerId, Vec<Multiaddr>)> = self
            .swarm
            .behaviour_mut()
            .kademlia
            .kbuckets()
            .flat_map(|bucket| {
                bucket
                    .iter()
                    .map(|entry| {
                        (
                            *entry.node.key.preimage(),
                            entry.node.value.iter().cloned().collect(),
                        )
                    })
                    .collect::<Vec<_>>()
            })
            .take(KNOWN_PEERS_REDIALED)
            .collect();
        for (peer, addresses) in known {
            debug!(%peer, "redialing a known peer");
            let dial = DialOpts::peer_id(peer)
                .addresses(addresses)
                .condition(PeerCondition::DisconnectedAndNotDialing)
                .build();
            if let Err(error) = self.swarm.dial(dial) {
                debug!(%peer, %error, "could not redial");
            }
        }
    }

    pub(super) fn bootstrap(&mut self) {
        if !self.connected.is_empty() {
            // Fails only when no peer is known yet.
            let _ = self.swarm.behaviour_mut().kademlia.bootstrap();
        }
    }

    /// Listens through every relay whose circuit is not (or no longer)
    /// listened on; libp2p dials a relay this node is not connected to.
    pub(super) fn listen_through_relays(&mut self) {
        let relays: Vec<(PeerId, Multiaddr)> = self.relays.drain().collect();
        for (peer, relay) in relays {
            self.listen_through(peer, relay);
        }
    }

    pub(super) fn listen_through(&mut self, peer: PeerId, relay: Multiaddr) {
        let circuit = relay.clone().with(Protocol::P2pCircuit);
        match self.swarm.listen_on(circuit.clone()) {
            Ok(listener) => {
                self.relay_listeners
                    .insert(listener, (peer, relay, Instant::now()));
            }
            Err(error) => {
                warn!(%circuit, %error, "could not listen through a relay");
                self.relays.insert(peer, relay);
            }
        }
    }

    /// Asks the DHT where a peer that could not be dialled is now (a
    /// restarted node listens on new ports); the addresses found serve the
    /// next dial. At most one lookup per peer per [`LOOKUP_INTERVAL`].
    pub(super) fn look_up(&mut self, peer: PeerId) {
        let now = Instant::now();
        if self
            .lookups
            .get(&peer)
            .is_some_and(|last| now.duration_since(*last) < LOOKUP_INTERVAL)
        {
            return;
        }
        if self.lookups.len() >= LOOKUPS_REMEMBERED_MAX {
            self.lookups
                .retain(|_, last| now.duration_since(*last) < LOOKUP_INTERVAL);
        }
        if self.lookups.len() < LOOKUPS_REMEMBERED_MAX {
            self.lookups.insert(peer, now);
            self.swarm.behaviour_mut().kademlia.get_closest_peers(peer);
        }
    }
}
