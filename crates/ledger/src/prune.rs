//! Bounded storage: deleting the state tree's nodes that no kept height
//! needs, in the same write as the block that makes them unneeded.
//!
//! Each block's tree update lists the nodes it supersedes (`jmt`'s stale
//! node index), and the block's write records them under the height that
//! superseded them (`keys::STALE_NODE`, outside the state root). A node
//! superseded at height `v` belongs to the tree of heights before `v` only,
//! so once the ledger keeps no height below `v` it can go. When height `h`
//! commits with a history of `n` heights, the nodes superseded at heights
//! up to `h − n`, and their index entries, are deleted in that write: the
//! trees of heights `h − n ..= h` stay whole.
//!
//! Roots are recorded per height apart from the tree (`keys::ROOT_AT`) and
//! are never pruned, so `Ledger::state_root_at` answers for every height.
//! Nodes superseded before this index existed are not listed and stay.

use std::num::NonZeroU64;

use crate::state::keys;
use crate::store::{Store, StoreError, WriteBatch};

/// The heights of the state tree a ledger keeps by default, besides its tip.
pub const TREE_HISTORY_HEIGHTS_DEFAULT: NonZeroU64 = NonZeroU64::new(1_000).expect("not zero");

/// The most due nodes one commit deletes, unless its own block superseded
/// more than half as many: then twice what it superseded. Pruning keeps up
/// with the chain, and a backlog (a store that kept everything, reopened
/// with a history) drains over the following blocks rather than in one
/// unbounded write.
pub const PRUNE_NODES_PER_COMMIT_BASE: usize = 4_096;

/// How much of the state tree's history a ledger keeps on disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TreeHistory {
    /// Every height's tree: the store grows with every block.
    Unlimited,
    /// The tip's tree and the trees of this many heights before it; nodes
    /// only older heights need are deleted as blocks commit.
    Heights(NonZeroU64),
}

impl Default for TreeHistory {
    fn default() -> Self {
        Self::Heights(TREE_HISTORY_HEIGHTS_DEFAULT)
    }
}

impl TreeHistory {
    /// The oldest height whose tree is whole when the tip is `tip`.
    pub fn oldest_kept(self, tip: u64) -> u64 {
        match self {
            Self::Unlimited => 0,
            Self::Heights(heights) => tip.saturating_sub(heights.get()),
        }
    }
}

/// Adds to `batch`, the writes that take the ledger to `height`, the
/// deletion of the nodes superseded at heights up to `height − n` (and of
/// their index entries), oldest first, as many as the bound allows.
pub(crate) fn superseded_nodes<S: Store>(
    store: &S,
    batch: &mut WriteBatch,
    height: u64,
    history: TreeHistory,
) -> Result<(), StoreError> {
    let TreeHistory::Heights(heights) = history else {
        return Ok(());
    };
    let Some(through) = height.checked_sub(heights.get()) else {
        return Ok(());
    };
    let superseded_now = batch
        .range(vec![keys::STALE_NODE]..)
        .take_while(|(key, _)| key.first() == Some(&keys::STALE_NODE))
        .count();
    let limit = PRUNE_NODES_PER_COMMIT_BASE.max(superseded_now.saturating_mul(2));
    // Everything listed at heights up to `through`, which is below
    // `height`: this block's own entries (not in the store yet either)
    // are never due.
    let start = [keys::STALE_NODE];
    let end = keys::stale_node(through.saturating_add(1), &[]);
    for (key, _) in store.scan_range(&start, &end, limit)? {
        let (_, node) = keys::split_stale_node(&key)
            .filter(|(stale_since, _)| *stale_since <= through)
            .ok_or_else(|| StoreError("a stale tree node's index key is malformed".to_owned()))?;
        batch.insert(keys::tree_node(node), None);
        batch.insert(key, None);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use jmt::storage::{NibblePath, Node, NodeKey};
    use proptest::prelude::*;

    use super::*;
    use crate::root;
    use crate::state::Overlay;
    use crate::store::MemoryStore;

    /// Every node key the tree of `version` reaches from its root.
    fn reachable(store: &MemoryStore, version: u64, into: &mut BTreeSet<Vec<u8>>) {
        // The root is the version's node at the empty path (a key `jmt`
        // builds only inside the crate).
        let root = store
            .scan_prefix(&[keys::TREE_NODE])
            .expect("scan")
            .into_iter()
            .map(|(key, _)| borsh::from_slice::<NodeKey>(&key[1..]).expect("decode"))
            .find(|key| key.version() == version && key.nibble_path().is_empty())
            .unwrap_or_else(|| panic!("version {version} has no root"));
        let mut pending = vec![root];
        while let Some(key) = pending.pop() {
            let encoded = borsh::to_vec(&key).expect("encode");
            let bytes = store
                .get(&keys::tree_node(&encoded))
                .expect("read")
                .unwrap_or_else(|| panic!("version {version} misses node {key:?}"));
            into.insert(encoded);
            if let Node::Internal(internal) = borsh::from_slice(&bytes).expect("decode") {
                for (nibble, child) in internal.children_sorted() {
                    let path: NibblePath = key
                        .nibble_path()
                        .nibbles()
                        .chain(std::iter::once(nibble))
                        .collect();
                    pending.push(NodeKey::new(child.version, path));
                }
            }
        }
    }

    fn stored_nodes(store: &MemoryStore) -> BTreeSet<Vec<u8>> {
        store
            .scan_prefix(&[keys::TREE_NODE])
            .expect("scan")
            .into_iter()
            .map(|(key, _)| key[1..].to_vec())
            .collect()
    }

    /// Versions of changes over a few state keys: a value or a deletion each.
    fn versions() -> impl Strategy<Value = Vec<Vec<(u8, Option<u8>)>>> {
        prop::collection::vec(
            prop::collection::vec((0u8..48, prop::option::weighted(0.8, any::<u8>())), 0..12),
            1..40,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// After each version, the store holds exactly the nodes that the
        /// kept versions' trees reach: nothing a kept version needs is
        /// gone, and nothing else is left.
        #[test]
        fn pruning_keeps_exactly_the_kept_versions_nodes(
            versions in versions(),
            heights in 1u64..6,
        ) {
            let history = TreeHistory::Heights(NonZeroU64::new(heights).expect("not zero"));
            let mut store = MemoryStore::default();
            for (version, changes) in versions.iter().enumerate() {
                let version = version as u64;
                let mut batch = {
                    let mut overlay = Overlay::new(&store);
                    for (key, value) in changes {
                        // Only keys the tree holds can be deleted.
                        let key = keys::meta(&format!("key-{key}"));
                        if value.is_some() || store.get(&key).expect("read").is_some() {
                            overlay.put_raw(key, value.map(|byte| vec![byte]));
                        }
                    }
                    root::update(&mut overlay, &store, version).expect("update");
                    overlay.into_batch()
                };
                superseded_nodes(&store, &mut batch, version, history).expect("prune");
                store.commit(batch).expect("commit");
                let mut needed = BTreeSet::new();
                for kept in history.oldest_kept(version)..=version {
                    reachable(&store, kept, &mut needed);
                }
                prop_assert_eq!(stored_nodes(&store), needed, "version {}", version);
            }
        }
    }
}
