//! What a peer sends is decoded without panicking, within bounds, and only
//! canonical bytes decode: blocks (ours and as commonware carries them)
//! and relay messages, from arbitrary bytes and from valid encodings with
//! bytes changed.

// Only the transfers of the shared test module are used here.
#[expect(dead_code)]
mod common;

use bytes::Bytes;
use common::transfer;
use commonware_codec::{DecodeExt, Encode};
use idlegrid_chain::engine::{EngineBlock, decode_relay};
use idlegrid_chain::{Block, genesis_digest};
use idlegrid_types::codec::{self, Bounded};
use proptest::collection::vec;
use proptest::prelude::*;

fn block() -> Block {
    Block {
        parent: genesis_digest("idlegrid-chain-test"),
        height: 1,
        time_ms: 1_700_000_000_000,
        parent_state_root: [7; 32],
        transactions: Bounded::new((0..3).map(|nonce| transfer(1, nonce, 2, 10)).collect())
            .expect("within bounds"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn arbitrary_bytes_never_panic_a_decoder(bytes in vec(any::<u8>(), 0..2048)) {
        let _ = Block::decode(&bytes);
        let _ = decode_relay(&bytes);
        let _ = EngineBlock::decode(Bytes::from(bytes));
    }

    #[test]
    fn changed_bytes_of_a_valid_encoding_decode_canonically_or_not_at_all(
        changes in vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
    ) {
        let original = block();
        let mut ours = original.encode();
        let mut relay = codec::encode(&original.transactions).expect("encodes");
        let mut carried = EngineBlock(original).encode().to_vec();
        for (index, byte) in &changes {
            let at = index.index(ours.len());
            ours[at] = *byte;
            let at = index.index(relay.len());
            relay[at] = *byte;
            let at = index.index(carried.len());
            carried[at] = *byte;
        }
        if let Ok(decoded) = Block::decode(&ours) {
            prop_assert_eq!(decoded.encode(), ours);
        }
        if let Some(decoded) = decode_relay(&relay) {
            prop_assert_eq!(codec::encode(&decoded).expect("encodes"), relay);
        }
        if let Ok(decoded) = EngineBlock::decode(Bytes::from(carried.clone())) {
            prop_assert_eq!(decoded.encode().to_vec(), carried);
        }
    }
}
