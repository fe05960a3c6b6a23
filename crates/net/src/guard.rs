//! Bounds per remote IP address, which libp2p's `connection_limits` does
//! not keep: how many connections one address may have waiting on their
//! handshake, and how many established. A flood from one host then costs
//! the node an accept and a close per connection and leaves the shared
//! bounds (pending handshakes and connections in all, in
//! `connection_limits`) to everybody else.
//!
//! Protected peers (bootstrap peers, relays, peers this node has exchanged
//! work with) pass the bound on established connections, as they pass
//! `connection_limits`'.

use std::collections::{HashMap, HashSet};
use std::convert::Infallible;
use std::net::IpAddr;
use std::task::{Context, Poll};

use libp2p::core::transport::PortUse;
use libp2p::core::{ConnectedPoint, Endpoint};
use libp2p::multiaddr::Protocol;
use libp2p::swarm::behaviour::{ConnectionEstablished, ListenFailure};
use libp2p::swarm::{
    ConnectionClosed, ConnectionDenied, ConnectionId, FromSwarm, NetworkBehaviour, THandler,
    THandlerInEvent, THandlerOutEvent, ToSwarm, dummy,
};
use libp2p::{Multiaddr, PeerId};

/// Why a connection was refused.
#[derive(Debug, thiserror::Error)]
#[error("{address} has {count} {what} connections, the most one address may have")]
pub struct PerAddressLimit {
    address: IpAddr,
    count: u32,
    what: &'static str,
}

/// The bounds per address, and the connections counted against them.
pub(crate) struct Guard {
    pending_per_ip_max: u32,
    established_per_ip_max: u32,
    protected: HashSet<PeerId>,
    /// Inbound connections still in their handshake, by remote address.
    pending: HashMap<ConnectionId, IpAddr>,
    /// Established inbound connections, by remote address.
    established: HashMap<ConnectionId, IpAddr>,
    pending_by_ip: HashMap<IpAddr, u32>,
    established_by_ip: HashMap<IpAddr, u32>,
}

/// The IP address a remote address starts with; none for a relayed
/// connection (the relay bounds its circuits itself, and every peer behind
/// it would share its address).
fn remote_ip(address: &Multiaddr) -> Option<IpAddr> {
    if address.iter().any(|part| part == Protocol::P2pCircuit) {
        return None;
    }
    match address.iter().next()? {
        Protocol::Ip4(ip) => Some(IpAddr::V4(ip)),
        Protocol::Ip6(ip) => Some(IpAddr::V6(ip)),
        _ => None,
    }
}

fn take(counts: &mut HashMap<IpAddr, u32>, ip: IpAddr) {
    if let Some(count) = counts.get_mut(&ip) {
        *count -= 1;
        if *count == 0 {
            counts.remove(&ip);
        }
    }
}

impl Guard {
    pub(crate) fn new(pending_per_ip_max: u32, established_per_ip_max: u32) -> Self {
        Self {
            pending_per_ip_max,
            established_per_ip_max,
            protected: HashSet::new(),
            pending: HashMap::new(),
            established: HashMap::new(),
            pending_by_ip: HashMap::new(),
            established_by_ip: HashMap::new(),
        }
    }

    pub(crate) fn protect(&mut self, peer: PeerId) {
        self.protected.insert(peer);
    }

    fn check(
        &self,
        ip: IpAddr,
        what: &'static str,
        max: u32,
        by_ip: fn(&Self) -> &HashMap<IpAddr, u32>,
    ) -> Result<(), ConnectionDenied> {
        let count = by_ip(self).get(&ip).copied().unwrap_or(0);
        if count >= max {
            return Err(ConnectionDenied::new(PerAddressLimit {
                address: ip,
                count,
                what,
            }));
        }
        Ok(())
    }
}

impl NetworkBehaviour for Guard {
    type ConnectionHandler = dummy::ConnectionHandler;
    type ToSwarm = Infallible;

    fn handle_pending_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<(), ConnectionDenied> {
        let Some(ip) = remote_ip(remote) else {
            return Ok(());
        };
        self.check(ip, "pending", self.pending_per_ip_max, |guard| {
            &guard.pending_by_ip
        })?;
        self.pending.insert(connection_id, ip);
        *self.pending_by_ip.entry(ip).or_default() += 1;
        Ok(())
    }

    fn handle_established_inbound_connection(
        &mut self,
        connection_id: ConnectionId,
        peer: PeerId,
        _: &Multiaddr,
        remote: &Multiaddr,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        if let Some(ip) = self.pending.remove(&connection_id) {
            take(&mut self.pending_by_ip, ip);
        }
        if let Some(ip) = remote_ip(remote)
            && !self.protected.contains(&peer)
        {
            self.check(ip, "established", self.established_per_ip_max, |guard| {
                &guard.established_by_ip
            })?;
        }
        Ok(dummy::ConnectionHandler)
    }

    fn handle_established_outbound_connection(
        &mut self,
        _: ConnectionId,
        _: PeerId,
        _: &Multiaddr,
        _: Endpoint,
        _: PortUse,
    ) -> Result<THandler<Self>, ConnectionDenied> {
        Ok(dummy::ConnectionHandler)
    }

    fn on_swarm_event(&mut self, event: FromSwarm) {
        match event {
            FromSwarm::ConnectionEstablished(ConnectionEstablished {
                connection_id,
                endpoint: ConnectedPoint::Listener { send_back_addr, .. },
                ..
            }) => {
                if let Some(ip) = remote_ip(send_back_addr) {
                    self.established.insert(connection_id, ip);
                    *self.established_by_ip.entry(ip).or_default() += 1;
                }
            }
            FromSwarm::ConnectionClosed(ConnectionClosed { connection_id, .. }) => {
                if let Some(ip) = self.established.remove(&connection_id) {
                    take(&mut self.established_by_ip, ip);
                }
            }
            FromSwarm::ListenFailure(ListenFailure { connection_id, .. }) => {
                if let Some(ip) = self.pending.remove(&connection_id) {
                    take(&mut self.pending_by_ip, ip);
                }
            }
            _ => {}
        }
    }

    fn on_connection_handler_event(
        &mut self,
        _: PeerId,
        _: ConnectionId,
        event: THandlerOutEvent<Self>,
    ) {
        libp2p::core::util::unreachable(event)
    }

    fn poll(&mut self, _: &mut Context<'_>) -> Poll<ToSwarm<Self::ToSwarm, THandlerInEvent<Self>>> {
        Poll::Pending
    }
}

/// Raises this process's limit on open files to its hard maximum: each
/// connection is a file, and the soft limit many systems start a process
/// with (1,024) is less than the connections an overlay node may hold.
/// Gives the limit now in force.
pub fn raise_open_files_limit() -> std::io::Result<u64> {
    use rustix::process::{Resource, Rlimit, getrlimit, setrlimit};
    // Linux refuses an unlimited soft limit on files; its default ceiling.
    const UNLIMITED_AS: u64 = 1 << 20;
    let limit = getrlimit(Resource::Nofile);
    let wanted = limit.maximum.unwrap_or(UNLIMITED_AS);
    if limit.current.is_some_and(|current| current < wanted) {
        setrlimit(
            Resource::Nofile,
            Rlimit {
                current: Some(wanted),
                maximum: limit.maximum,
            },
        )?;
        return Ok(wanted);
    }
    Ok(limit.current.unwrap_or(wanted))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_relayed_address_counts_against_no_ip() {
        let direct: Multiaddr = "/ip4/10.0.0.1/tcp/4001".parse().expect("address");
        assert_eq!(remote_ip(&direct), Some("10.0.0.1".parse().expect("ip")));
        let relayed: Multiaddr = "/ip4/10.0.0.1/tcp/4001/p2p/12D3KooWDpJ7As7BWAwRMfu1VU2WCqNjvq387JEYKDBj4kx6nXTN/p2p-circuit"
            .parse()
            .expect("address");
        assert_eq!(remote_ip(&relayed), None);
    }

    #[test]
    fn one_address_is_refused_past_its_bound_and_admitted_again_as_its_connections_end() {
        let mut guard = Guard::new(2, 10);
        let remote: Multiaddr = "/ip4/10.0.0.1/tcp/5000".parse().expect("address");
        let other: Multiaddr = "/ip4/10.0.0.2/tcp/5000".parse().expect("address");
        let local: Multiaddr = "/ip4/10.0.0.9/tcp/4001".parse().expect("address");
        let first = ConnectionId::new_unchecked(1);
        let second = ConnectionId::new_unchecked(2);
        let third = ConnectionId::new_unchecked(3);
        assert!(
            guard
                .handle_pending_inbound_connection(first, &local, &remote)
                .is_ok()
        );
        assert!(
            guard
                .handle_pending_inbound_connection(second, &local, &remote)
                .is_ok()
        );
        assert!(
            guard
                .handle_pending_inbound_connection(third, &local, &remote)
                .is_err()
        );
        // Another address has its own bound.
        assert!(
            guard
                .handle_pending_inbound_connection(ConnectionId::new_unchecked(4), &local, &other)
                .is_ok()
        );
        // A handshake that fails frees its place.
        guard.on_swarm_event(FromSwarm::ListenFailure(ListenFailure {
            local_addr: &local,
            send_back_addr: &remote,
            error: &libp2p::swarm::ListenError::Aborted,
            connection_id: first,
            peer_id: None,
        }));
        assert!(
            guard
                .handle_pending_inbound_connection(third, &local, &remote)
                .is_ok()
        );
    }
}
