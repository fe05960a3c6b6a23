//! What the chain's tests share: keys, a genesis ledger, transfers.

use idlegrid_ledger::{
    Genesis, Ledger, MemoryStore, Params, SignedTransaction, Transaction, TxKind,
};
use idlegrid_types::Keypair;

pub const CHAIN: &str = "idlegrid-chain-test";

pub fn key(seed: u8) -> Keypair {
    Keypair::from_seed([seed; 32])
}

/// A fresh ledger where accounts `1..=accounts` hold 1,000 each.
pub fn ledger(accounts: u8) -> Ledger<MemoryStore> {
    let genesis = Genesis {
        chain_id: CHAIN.to_owned(),
        params: Params::default(),
        balances: (1..=accounts)
            .map(|seed| (key(seed).account_id(), 1_000))
            .collect(),
        validators: vec![(key(200).account_id(), 50_000)],
    };
    Ledger::init(MemoryStore::default(), &genesis).expect("genesis")
}

/// A transfer of `amount` from account `from` to account 100.
pub fn transfer(from: u8, nonce: u64, fee: u64, amount: u64) -> SignedTransaction {
    let to = key(100).account_id();
    let body = Transaction::new(CHAIN, nonce, fee, TxKind::Transfer { to, amount }).expect("tx");
    key(from).sign(body)
}
