//! The authenticated state root: a Jellyfish Merkle tree (the `jmt` crate)
//! over BLAKE3 hashes of every state key, updated with each block's changes
//! only, so a block costs O(changes × log n) hashes, not a rehash of the state.

use jmt::storage::{LeafNode, Node, NodeKey, TreeReader};
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

fn node_key(node: &NodeKey) -> Vec<u8> {
    let encoded = borsh::to_vec(node).expect("tree node keys encode");
    [&[keys::TREE_NODE][..], &encoded].concat()
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

/// Folds the overlay's state changes into the tree as `version`, writes the
/// new nodes into the overlay, and returns the new root.
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
    let (root, batch) = {
        let nodes = Nodes(overlay);
        JellyfishMerkleTree::<_, Blake3Tree>::new(&nodes)
            .put_value_set(changes, version)
            .map_err(|error| StoreError(format!("failed to update the state tree: {error}")))?
    };
    for (key, node) in batch.node_batch.nodes() {
        overlay.put_raw(
            node_key(key),
            Some(borsh::to_vec(node).expect("tree nodes encode")),
        );
    }
    overlay.put_raw(keys::root_at(version), Some(root.0.to_vec()));
    Ok(root.0)
}
