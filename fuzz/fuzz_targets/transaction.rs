//! Decodes untrusted bytes as a signed transaction and applies it to a small
//! ledger. A `Rejection` is fine; a `LedgerError`, a panic or a broken
//! supply invariant is a bug.

#![no_main]

use idlegrid_fuzz::{Fixture, NoReExecution};
use idlegrid_ledger::decode_transaction;
use idlegrid_types::codec;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|bytes: &[u8]| {
    let Ok(transaction) = decode_transaction(bytes) else {
        return;
    };
    // The encoding is canonical: one byte string per value.
    assert_eq!(codec::encode(&transaction).expect("it encodes"), bytes);

    let fixture = Fixture::get();
    let mut ledger = fixture.ledger();
    // As decoded (almost always a bad signature), then signed again so that
    // the rest of the checks are reached.
    let block = [transaction.clone(), fixture.sign_all(&transaction)];
    if let Err(error) =
        ledger.apply_block(2, idlegrid_fuzz::BLOCK_2_TIME_MS, &block, &NoReExecution)
    {
        panic!("the ledger failed on {transaction:?}: {error}");
    }
    let supply = ledger.supply().expect("supply reads");
    let tokens = ledger.tokens_in_existence().expect("tokens read");
    assert_eq!(tokens, supply.expected_total(), "{supply:?}");
});
