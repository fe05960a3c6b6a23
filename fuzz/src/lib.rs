//! The ledger state the fuzz targets start from, shared with the seed writer
//! (`examples/write_seeds.rs`).

use std::sync::OnceLock;

pub use idlegrid_ledger::NoReExecution;
use idlegrid_ledger::{
    Dispute, Evidence, Genesis, Ledger, MemoryStore, OpenJob, Params, SignedTransaction, StakeRole,
    Transaction, TxKind,
};
use idlegrid_types::codec::Bounded;
use idlegrid_types::{
    AccountId, ContentId, ExecutionLimits, JobId, Keypair, Receipt, Signable, Signed,
    SignedReceipt, TaskInput, TaskOutcome, Voucher,
};

pub const CHAIN: &str = "idlegrid-fuzz";
pub const REQUESTOR: usize = 0;
pub const PROVIDER: usize = 1;
pub const VALIDATOR: usize = 2;
const MODULE: &[u8] = b"not a module: nothing is re-executed";

/// The fixture's block times: the block that opens the job, and the block
/// a fuzzed transaction is applied in.
pub const BLOCK_1_TIME_MS: u64 = 1_000;
pub const BLOCK_2_TIME_MS: u64 = 2_000;

/// Three funded accounts (one a validator) after block 1, in which the
/// requestor opened a job; the next block is at height 2.
#[derive(Debug)]
pub struct Fixture {
    pub keys: Vec<Keypair>,
    pub job: JobId,
    store: MemoryStore,
}

impl Fixture {
    pub fn get() -> &'static Fixture {
        static FIXTURE: OnceLock<Fixture> = OnceLock::new();
        FIXTURE.get_or_init(Fixture::new)
    }

    fn new() -> Self {
        let keys: Vec<Keypair> = (1..=3u8)
            .map(|seed| Keypair::from_seed([seed; 32]))
            .collect();
        let genesis = Genesis {
            chain_id: CHAIN.to_owned(),
            // Rewards every block, and unbondings that release soon.
            params: Params {
                epoch_length_blocks: 1,
                unbonding_blocks: 1,
                ..Params::default()
            },
            balances: keys
                .iter()
                .map(|key| (key.account_id(), 1_000_000))
                .collect(),
            validators: vec![(keys[VALIDATOR].account_id(), 50_000)],
        };
        let mut ledger = Ledger::init(MemoryStore::default(), &genesis).expect("genesis applies");
        let requestor = &keys[REQUESTOR];
        let open = sign(requestor, 0, TxKind::OpenJob(open_job()));
        let outcome = ledger
            .apply_block(1, BLOCK_1_TIME_MS, &[open], &NoReExecution)
            .expect("block 1 applies");
        assert!(outcome.transactions[0].outcome.is_ok(), "{outcome:?}");
        Self {
            job: JobId::derive(&requestor.account_id(), 0),
            store: ledger.into_store(),
            keys,
        }
    }

    /// A ledger at height 1 over a copy of the fixture's state.
    pub fn ledger(&self) -> Ledger<MemoryStore> {
        Ledger::open(self.store.clone()).expect("the fixture's store opens")
    }

    /// The fixture's key for `account`, or one chosen by its first byte.
    fn key_for(&self, account: &AccountId) -> &Keypair {
        self.keys
            .iter()
            .find(|key| key.account_id() == *account)
            .unwrap_or(&self.keys[usize::from(account.as_bytes()[0]) % self.keys.len()])
    }

    fn sign_again<T: Signable + Clone>(&self, signed: &Signed<T>) -> Signed<T> {
        self.key_for(&signed.signer).sign(signed.body.clone())
    }

    /// A receipt signed again alone (a batch of one) by the fixture's key.
    fn sign_receipt_again(&self, receipt: &SignedReceipt) -> SignedReceipt {
        self.sign_receipt(self.key_for(&receipt.signer), receipt.body.clone())
    }

    fn sign_receipt(&self, key: &Keypair, receipt: Receipt) -> SignedReceipt {
        SignedReceipt::sign_batch(key, vec![receipt])
            .pop()
            .expect("a batch of one")
    }

    /// The transaction with every signature (its own, a voucher's, the
    /// receipts') made again with the fixture's keys, so that mutated
    /// inputs get past the signature checks.
    pub fn sign_all(&self, transaction: &SignedTransaction) -> SignedTransaction {
        let mut body = transaction.body.clone();
        match &mut body.kind {
            TxKind::Redeem { voucher } => *voucher = self.sign_again(voucher),
            TxKind::Dispute(dispute) => match &mut dispute.evidence {
                Evidence::Conflicting(first, second) => {
                    *first = self.sign_receipt_again(first);
                    *second = self.sign_receipt_again(second);
                }
                Evidence::Claimed(receipt) => *receipt = self.sign_receipt_again(receipt),
            },
            _ => {}
        }
        self.key_for(&transaction.signer).sign(body)
    }

    /// Valid transactions of every kind for block 2, to seed the corpus.
    pub fn seeds(&self) -> Vec<(&'static str, SignedTransaction)> {
        let key = |who: usize| &self.keys[who];
        let id = |who: usize| self.keys[who].account_id();
        let input = TaskInput::new(vec!["1".to_owned()], Vec::new()).expect("a small input");
        let receipt = self.sign_receipt(
            key(PROVIDER),
            Receipt {
                job: self.job,
                task_index: 0,
                module: ContentId::of(MODULE),
                input: input.content_id(),
                outcome: TaskOutcome::Completed {
                    exit_code: 0,
                    output: ContentId::of(b"output"),
                },
                fuel_used: 1_000,
                energy_millijoules: 0,
            },
        );
        let voucher = key(REQUESTOR).sign(Voucher {
            job: self.job,
            provider: id(PROVIDER),
            cumulative_amount: 100,
            cumulative_fuel: 1_000_000,
            sequence: 1,
        });
        let dispute = Dispute {
            evidence: Evidence::Claimed(receipt),
            module: Bounded::new(MODULE.to_vec()).expect("a small module"),
            input: Bounded::new(input.encode()).expect("a small input"),
        };
        let transfer = TxKind::Transfer {
            to: id(REQUESTOR),
            amount: 100,
        };
        vec![
            ("transfer", sign(key(PROVIDER), 0, transfer)),
            (
                "stake",
                sign(
                    key(PROVIDER),
                    0,
                    TxKind::Stake {
                        role: StakeRole::Provider,
                        amount: 1_000,
                    },
                ),
            ),
            (
                "unstake",
                sign(
                    key(VALIDATOR),
                    0,
                    TxKind::Unstake {
                        role: StakeRole::Validator,
                        amount: 100,
                    },
                ),
            ),
            (
                "open_job",
                sign(key(REQUESTOR), 1, TxKind::OpenJob(open_job())),
            ),
            (
                "top_up_job",
                sign(
                    key(REQUESTOR),
                    1,
                    TxKind::TopUpJob {
                        job: self.job,
                        amount: 500,
                    },
                ),
            ),
            ("redeem", sign(key(PROVIDER), 0, TxKind::Redeem { voucher })),
            (
                "close_job",
                sign(key(REQUESTOR), 1, TxKind::CloseJob { job: self.job }),
            ),
            (
                "dispute",
                sign(key(VALIDATOR), 0, TxKind::Dispute(Box::new(dispute))),
            ),
        ]
    }
}

fn open_job() -> OpenJob {
    OpenJob {
        module: ContentId::of(MODULE),
        spec: ContentId::of(b"spec"),
        escrow: 10_000,
        price_per_million_fuel: 100,
        deadline_height: 50,
        limits: ExecutionLimits {
            fuel: 1_000_000,
            memory_bytes: 1 << 20,
            output_bytes: 1 << 10,
        },
        agent: None,
    }
}

fn sign(key: &Keypair, nonce: u64, kind: TxKind) -> SignedTransaction {
    key.sign(Transaction::new(CHAIN, nonce, 10, kind).expect("the chain id is short"))
}
