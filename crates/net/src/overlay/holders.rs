//! Announcing content and finding who holds it: kademlia provider
//! records, one per content id a node holds, and lookups of the peers
//! that announced an id.

use std::time::Duration;

use idlegrid_types::{AccountId, ContentId};
use libp2p::kad;
use tokio::sync::oneshot;
use tracing::debug;

use super::Driver;
use crate::identity::account_of;

/// Provider records this node keeps, its own and its peers' (kademlia's
/// store): distinct content ids, and announcers of one id. A peer
/// announces only itself (kademlia drops a record naming another), and
/// what it announces past these bounds is not kept.
pub const ANNOUNCED_CIDS_MAX: usize = 4096;
pub const ANNOUNCERS_PER_CID_MAX: usize = 20;
/// Lookups of holders in flight at once; past it one is answered empty.
const HOLDER_LOOKUPS_MAX: usize = 64;
/// Holders a lookup gives at most.
pub const HOLDERS_FOUND_MAX: usize = 8;
/// How long a kademlia query (a lookup of holders or peers) runs at most.
pub(super) const KAD_QUERY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long a provider record lasts on the peers that keep it, unless its
/// announcer renews it; announcers renew theirs at half that. A record
/// withdrawn (its content evicted) may name its announcer until then: a
/// fetcher that asks it is told it is not held and asks the next.
pub(super) const PROVIDER_RECORD_TTL: Duration = Duration::from_secs(6 * 60 * 60);

/// The kademlia key content is announced under: its id's 32 bytes.
fn content_key(cid: &ContentId) -> kad::RecordKey {
    kad::RecordKey::new(cid.as_bytes())
}

/// A lookup of holders: what it found so far, and who waits for it.
pub(super) struct HolderLookup {
    found: Vec<AccountId>,
    done: oneshot::Sender<Vec<AccountId>>,
}

impl Driver {
    pub(super) fn announce(&mut self, cids: Vec<ContentId>) {
        let kademlia = &mut self.swarm.behaviour_mut().kademlia;
        for cid in cids {
            if let Err(error) = kademlia.start_providing(content_key(&cid)) {
                debug!(%cid, %error, "not announced");
            }
        }
    }

    pub(super) fn withdraw(&mut self, cid: ContentId) {
        self.swarm
            .behaviour_mut()
            .kademlia
            .stop_providing(&content_key(&cid));
    }

    pub(super) fn find_holders(&mut self, cid: ContentId, done: oneshot::Sender<Vec<AccountId>>) {
        if self.holder_lookups.len() >= HOLDER_LOOKUPS_MAX {
            let _ = done.send(Vec::new());
            return;
        }
        let query = self
            .swarm
            .behaviour_mut()
            .kademlia
            .get_providers(content_key(&cid));
        self.holder_lookups.insert(
            query,
            HolderLookup {
                found: Vec::new(),
                done,
            },
        );
    }

    /// A lookup of holders heard from a peer: the holders it names are
    /// kept, and the lookup ends with the first found (or its last step).
    pub(super) fn holders_found(
        &mut self,
        query: kad::QueryId,
        result: kad::GetProvidersResult,
        last: bool,
    ) {
        let local = *self.swarm.local_peer_id();
        let Some(lookup) = self.holder_lookups.get_mut(&query) else {
            return;
        };
        if let Ok(kad::GetProvidersOk::FoundProviders { providers, .. }) = result {
            for peer in providers {
                if peer == local || lookup.found.len() >= HOLDERS_FOUND_MAX {
                    continue;
                }
                if let Some(account) = account_of(&peer)
                    && !lookup.found.contains(&account)
                {
                    lookup.found.push(account);
                }
            }
        }
        if lookup.found.is_empty() && !last {
            return;
        }
        if let Some(lookup) = self.holder_lookups.remove(&query) {
            let _ = lookup.done.send(lookup.found);
        }
        if !last && let Some(mut running) = self.swarm.behaviour_mut().kademlia.query_mut(&query) {
            running.finish();
        }
    }
}
