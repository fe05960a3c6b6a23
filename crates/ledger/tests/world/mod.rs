//! The ledger world the transaction and dispute tests share: a ledger on
//! an in-memory store, funded keys, and helpers to submit and inspect.

#![allow(dead_code)]

use idlegrid_ledger::{
    Event, Genesis, Ledger, MemoryStore, NoReExecution, OpenJob, Params, Rejection,
    SignedTransaction, Transaction, TxKind,
};
use idlegrid_types::{AccountId, ContentId, ExecutionLimits, JobId, Keypair, ReExecute, Voucher};

pub const CHAIN: &str = "idlegrid-test";
pub const FEE: u64 = 10;
pub const START: u64 = 1_000_000;

pub struct World {
    pub ledger: Ledger<MemoryStore>,
    pub keys: Vec<Keypair>,
    pub executor: Box<dyn ReExecute>,
}

pub const ALICE: usize = 0;
pub const BOB: usize = 1;
pub const PROVIDER: usize = 2;
pub const CHEATER: usize = 3;
pub const VALIDATOR: usize = 4;

pub fn params() -> Params {
    Params {
        epoch_length_blocks: 1_000,
        unbonding_blocks: 5,
        ..Params::default()
    }
}

pub fn world_with(executor: Box<dyn ReExecute>) -> World {
    let keys: Vec<Keypair> = (1..=5u8)
        .map(|seed| Keypair::from_seed([seed; 32]))
        .collect();
    let genesis = Genesis {
        chain_id: CHAIN.to_owned(),
        params: params(),
        balances: keys.iter().map(|key| (key.account_id(), START)).collect(),
        validators: vec![(keys[VALIDATOR].account_id(), 50_000)],
    };
    World {
        ledger: Ledger::init(MemoryStore::default(), &genesis).expect("genesis"),
        keys,
        executor,
    }
}

pub fn world() -> World {
    world_with(Box::new(NoReExecution))
}

impl World {
    pub fn id(&self, who: usize) -> AccountId {
        self.keys[who].account_id()
    }

    pub fn sign(&self, who: usize, kind: TxKind) -> SignedTransaction {
        let nonce = self.ledger.account(&self.id(who)).expect("account").nonce;
        let tx = Transaction::new(CHAIN, nonce, FEE, kind).expect("tx");
        self.keys[who].sign(tx)
    }

    pub fn apply(&mut self, signed: SignedTransaction) -> Result<Vec<Event>, Rejection> {
        let height = self.ledger.height() + 1;
        let outcome = self
            .ledger
            .apply_block(height, 0, &[signed], self.executor.as_ref())
            .expect("block applies");
        outcome.transactions[0].outcome.clone()
    }

    pub fn submit(&mut self, who: usize, kind: TxKind) -> Result<Vec<Event>, Rejection> {
        let signed = self.sign(who, kind);
        self.apply(signed)
    }

    pub fn empty_blocks(&mut self, count: u64) {
        for _ in 0..count {
            let height = self.ledger.height() + 1;
            self.ledger
                .apply_block(height, 0, &[], self.executor.as_ref())
                .expect("block");
        }
    }

    pub fn balance(&self, who: usize) -> u64 {
        self.ledger.account(&self.id(who)).expect("account").balance
    }

    pub fn open_job(&mut self, who: usize, terms: OpenJob) -> JobId {
        let nonce = self.ledger.account(&self.id(who)).expect("account").nonce;
        self.submit(who, TxKind::OpenJob(terms)).expect("job opens");
        JobId::derive(&self.id(who), nonce)
    }

    pub fn voucher(
        &self,
        signer: usize,
        job: JobId,
        provider: usize,
        amount: u64,
        sequence: u64,
    ) -> TxKind {
        TxKind::Redeem {
            voucher: self.keys[signer].sign(Voucher {
                job,
                provider: self.id(provider),
                cumulative_amount: amount,
                cumulative_fuel: amount * 1_000,
                sequence,
            }),
        }
    }

    pub fn assert_books_balance(&self) {
        let supply = self.ledger.supply().expect("supply");
        assert_eq!(
            self.ledger.tokens_in_existence().expect("scan"),
            supply.expected_total()
        );
    }
}

pub fn terms(height: u64) -> OpenJob {
    OpenJob {
        module: ContentId::of(b"module"),
        spec: ContentId::of(b"spec"),
        escrow: 10_000,
        price_per_million_fuel: 5,
        deadline_height: height + 10,
        limits: ExecutionLimits {
            fuel: 1_000_000_000,
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
        },
        agent: None,
    }
}

/// The rejection's code, after checking it has a readable message.
pub fn rejected(result: Result<Vec<Event>, Rejection>) -> &'static str {
    match result {
        Ok(events) => panic!("expected a rejection, it applied: {events:?}"),
        Err(rejection) => {
            assert!(!rejection.to_string().is_empty());
            rejection.code()
        }
    }
}
