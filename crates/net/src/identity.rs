//! One identity: a node's ledger key is its libp2p key, so a peer on the
//! overlay is an account on the ledger.

use idlegrid_types::{AccountId, Keypair};
use libp2p::PeerId;
use libp2p::identity;

/// The libp2p key pair of a ledger key pair (the same ed25519 key).
pub fn libp2p_keypair(keypair: &Keypair) -> identity::Keypair {
    let mut seed = keypair.seed();
    identity::Keypair::ed25519_from_bytes(&mut seed)
        .expect("a 32-byte seed is a valid ed25519 secret key")
}

/// The peer id of an account.
pub fn peer_id_of(account: &AccountId) -> PeerId {
    let public = identity::ed25519::PublicKey::try_from_bytes(account.as_bytes())
        .map(identity::PublicKey::from);
    match public {
        Ok(public) => public.to_peer_id(),
        // Not a curve point: no peer can hold this id, so no peer will match.
        Err(_) => PeerId::from_multihash(
            libp2p::multihash::Multihash::wrap(0, account.as_bytes())
                .expect("32 bytes fit an identity multihash"),
        )
        .expect("an identity multihash is a peer id"),
    }
}

/// The account behind a peer id, when the peer id names an ed25519 key
/// (every idlegrid node's does; a peer with another key type is not one).
pub fn account_of(peer: &PeerId) -> Option<AccountId> {
    let multihash: &libp2p::multihash::Multihash<64> = peer.as_ref();
    // Peer ids of small keys inline the key: the identity hash (code 0).
    if multihash.code() != 0 {
        return None;
    }
    let public = identity::PublicKey::try_decode_protobuf(multihash.digest()).ok()?;
    let ed25519 = public.try_into_ed25519().ok()?;
    Some(AccountId::from_bytes(ed25519.to_bytes()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ledger_key_and_its_peer_id_name_the_same_account() {
        for seed in [[0u8; 32], [7u8; 32], [255u8; 32]] {
            let keypair = Keypair::from_seed(seed);
            let peer = libp2p_keypair(&keypair).public().to_peer_id();
            assert_eq!(peer, peer_id_of(&keypair.account_id()));
            assert_eq!(account_of(&peer), Some(keypair.account_id()));
        }
    }

    #[test]
    fn a_peer_id_of_another_key_type_is_no_account() {
        // A sha2-256 multihash: how peers with large (RSA) keys are named.
        let digest = libp2p::multihash::Multihash::wrap(0x12, &[9u8; 32]).expect("fits");
        let hashed = PeerId::from_multihash(digest).expect("a sha2-256 multihash is a peer id");
        assert_eq!(account_of(&hashed), None);
    }
}
