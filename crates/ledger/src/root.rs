//! The authenticated state root: a Jellyfish Merkle tree (the `jmt` crate)
//! over BLAKE3 hashes of every state key, updated with each block's changes
//! only, so a block costs O(changes × log n) hashes, not a rehash of the state.

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader, TreeUpdateBatch};
use jmt::{JellyfishMerkleTree, KeyHash, OwnedValue, Version};

use crate::state::{Overlay, keys};
use crate::store::{Store, StoreError};

/// BLAKE3 as the tree's hash function.
pub(crate) struct Blake3Tree(blake3::Hasher);

impl jmt::SimpleHasher for Blake3Tree {
    fn new() -> Self {
        Self(blake3::Hasher::new())
    }

    fn update(&mut self, data: &[u8]) {
        self.0.update(data);
    }

    fn finalize(self) -> [u8; 32] {
        *self.0.finalize().as_bytes()
    }
}

fn encode_node_key(node: &NodeKey) -> Vec<u8> {
    borsh::to_vec(node).expect("tree node keys encode")
}

fn node_key(node: &NodeKey) -> Vec<u8> {
    keys::tree_node(&encode_node_key(node))
}

struct Nodes<'a, 's, S: Store>(&'a Overlay<'s, S>);

impl<S: Store> TreeReader for Nodes<'_, '_, S> {
    fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
        match self.0.get_raw(&node_key(key))? {
            Some(bytes) => Ok(Some(borsh::from_slice(&bytes)?)),
            None => Ok(None),
        }
    }

    fn get_value_option(
        &self,
        _max_version: Version,
        _key_hash: KeyHash,
    ) -> anyhow::Result<Option<OwnedValue>> {
        anyhow::bail!("the ledger keeps current values only, not the tree's value history")
    }

    fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
        anyhow::bail!("restoring the tree from a snapshot is not supported")
    }
}

/// Puts one version's changes into the tree. A set without deletions (a
/// block of transfers, say) goes in as one batch, which hashes each changed
/// node once; the tree takes deletions only key by key, which rehashes the
/// path above each key. Both give the same tree.
fn put<R: TreeReader>(
    nodes: &R,
    changes: Vec<(KeyHash, Option<OwnedValue>)>,
    version: Version,
) -> anyhow::Result<(jmt::RootHash, TreeUpdateBatch)> {
    let tree = JellyfishMerkleTree::<_, Blake3Tree>::new(nodes);
    if changes.is_empty() || changes.iter().any(|(_, value)| value.is_none()) {
        return tree.put_value_set(changes, version);
    }
    let values = changes
        .into_iter()
        .filter_map(|(key, value)| value.map(|value| (key, value)))
        .collect();
    let (roots, batch) = tree.batch_put_value_sets(vec![values], None, version)?;
    let root = roots
        .first()
        .copied()
        .ok_or_else(|| anyhow::anyhow!("the tree returned no root for version {version}"))?;
    Ok((root, batch))
}

/// Folds the overlay's state changes into the tree as `version`, writes the
/// new nodes into the overlay with an index of the nodes they supersede
/// (what pruning deletes once no kept version needs them), and returns the
/// new root.
pub(crate) fn update<S: Store>(
    overlay: &mut Overlay<'_, S>,
    store: &S,
    version: Version,
) -> Result<[u8; 32], StoreError> {
    let mut changes = Vec::new();
    for (key, value) in overlay.writes() {
        if !keys::is_state(key) {
            continue;
        }
        // Deleting a key the committed tree never held is no change.
        if value.is_none() && store.get(key)?.is_none() {
            continue;
        }
        changes.push((KeyHash::with::<Blake3Tree>(key), value.clone()));
    }
    let (root, batch) = put(&Nodes(overlay), changes, version)
        .map_err(|error| StoreError(format!("failed to update the state tree: {error}")))?;
    for (key, node) in batch.node_batch.nodes() {
        overlay.put_raw(
            node_key(key),
            Some(borsh::to_vec(node).expect("tree nodes encode")),
        );
    }
    for stale in &batch.stale_node_index_batch {
        overlay.put_raw(
            keys::stale_node(stale.stale_since_version, &encode_node_key(&stale.node_key)),
            Some(Vec::new()),
        );
    }
    // Every version has its own root node, so the previous root is needed
    // by the previous version only. The tree lists it as stale whenever a
    // change replaces it, but not when a version changes nothing and it
    // copies the root forward; listing it here covers that case (a key
    // written twice is one entry).
    if let Some(previous) = version.checked_sub(1) {
        let roots = batch.node_batch.nodes().iter();
        for (root, _) in roots.filter(|(key, _)| key.nibble_path().is_empty()) {
            let previous_root = NodeKey::new(previous, root.nibble_path().clone());
            overlay.put_raw(
                keys::stale_node(version, &encode_node_key(&previous_root)),
                Some(Vec::new()),
            );
        }
    }
    overlay.put_raw(keys::root_at(version), Some(root.0.to_vec()));
    Ok(root.0)
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use proptest::prelude::*;

    use super::*;

    /// Tree nodes in memory, as the ledger's store holds them.
    #[derive(Default)]
    struct Memory(HashMap<NodeKey, Node>);

    impl TreeReader for Memory {
        fn get_node_option(&self, key: &NodeKey) -> anyhow::Result<Option<Node>> {
            Ok(self.0.get(key).cloned())
        }

        fn get_value_option(
            &self,
            _max_version: Version,
            _key_hash: KeyHash,
        ) -> anyhow::Result<Option<OwnedValue>> {
            anyhow::bail!("not kept")
        }

        fn get_rightmost_leaf(&self) -> anyhow::Result<Option<(NodeKey, LeafNode)>> {
            anyhow::bail!("not kept")
        }
    }

    impl Memory {
        fn write(&mut self, batch: &TreeUpdateBatch) {
            for (key, node) in batch.node_batch.nodes() {
                self.0.insert(key.clone(), node.clone());
            }
        }
    }

    /// Versions of changes over a few keys: a value or a deletion each.
    fn versions() -> impl Strategy<Value = Vec<Vec<(u8, Option<u8>)>>> {
        prop::collection::vec(
            prop::collection::vec((0u8..40, prop::option::weighted(0.8, any::<u8>())), 0..30),
            1..8,
        )
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 64, failure_persistence: None, ..ProptestConfig::default() })]

        /// Whichever way a version goes in, the roots match those of a
        /// tree that takes every change key by key, version after version.
        #[test]
        fn batched_and_key_by_key_trees_agree(versions in versions()) {
            let mut batched = Memory::default();
            let mut keyed = Memory::default();
            let mut present = std::collections::BTreeSet::new();
            for (version, set) in versions.iter().enumerate() {
                let version = version as Version;
                // One change per key, deletions only of keys the tree holds.
                let mut changes = std::collections::BTreeMap::new();
                for (key, value) in set {
                    if value.is_some() || present.contains(key) {
                        changes.insert(*key, value.map(|byte| vec![byte]));
                    }
                }
                for (key, value) in &changes {
                    if value.is_some() {
                        present.insert(*key);
                    } else {
                        present.remove(key);
                    }
                }
                let changes: Vec<_> = changes
                    .into_iter()
                    .map(|(key, value)| (KeyHash::with::<Blake3Tree>([key]), value))
                    .collect();
                let (root, batch) = put(&batched, changes.clone(), version).expect("put");
                batched.write(&batch);
                let (expected, batch) = JellyfishMerkleTree::<_, Blake3Tree>::new(&keyed)
                    .put_value_set(changes, version)
                    .expect("put key by key");
                keyed.write(&batch);
                prop_assert_eq!(root, expected, "version {}", version);
            }
        }
    }
}
