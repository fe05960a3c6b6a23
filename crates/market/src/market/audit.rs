//! The audit trail of a job: every task accepted on providers' word, kept
//! so that the tasks a provider vouched for can be checked again when it is
//! caught lying. It is read only then, so where it is kept is the caller's
//! choice ([`AuditLog`]): in memory by default, in a file for a requestor
//! whose jobs have millions of tasks, so that a job's memory does not grow
//! with its tasks.

use idlegrid_types::{SignedReceipt, TaskOutcome, codec};

use super::ProviderIndex;

/// Largest record read back: a receipt and at most 255 providers.
pub const AUDIT_RECORD_BYTES_MAX: usize = 64 << 10;

/// Where a job's audit records are kept: appended one at a time, read back
/// all at once (rarely: when a provider is caught).
pub trait AuditLog: Send + std::fmt::Debug {
    /// Keeps one record (at most [`AUDIT_RECORD_BYTES_MAX`] bytes).
    fn append(&mut self, record: &[u8]);
    /// Gives every record kept, oldest first. A store that cannot read
    /// some back (a damaged file) gives those before the damage.
    fn for_each(&mut self, each: &mut dyn FnMut(&[u8]));
}

/// Makes the audit log of each job a market takes.
pub type AuditLogs = fn() -> Box<dyn AuditLog>;

/// Records in memory: the default, for markets whose jobs are small (a
/// simulation, the tests).
#[derive(Debug, Default)]
pub struct MemoryAuditLog(Vec<Vec<u8>>);

impl MemoryAuditLog {
    pub fn boxed() -> Box<dyn AuditLog> {
        Box::new(Self::default())
    }
}

impl AuditLog for MemoryAuditLog {
    fn append(&mut self, record: &[u8]) {
        self.0.push(record.to_vec());
    }

    fn for_each(&mut self, each: &mut dyn FnMut(&[u8])) {
        for record in &self.0 {
            each(record);
        }
    }
}

/// A task accepted on these providers' word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Backing {
    pub task: u64,
    /// How often the task had been reopened when it was accepted: a record
    /// of an earlier acceptance no longer stands.
    pub generation: u8,
    /// Matching results it needed: a task reopened needs as many again.
    pub quorum: u8,
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    pub providers: Vec<ProviderIndex>,
    /// One of their receipts, the evidence if the result proves wrong.
    pub receipt: Option<SignedReceipt>,
}

type Encoded = (
    u64,
    u8,
    u8,
    TaskOutcome,
    u64,
    Vec<ProviderIndex>,
    Option<SignedReceipt>,
);

impl Backing {
    pub fn keep(&self, log: &mut dyn AuditLog) {
        let encoded: Encoded = (
            self.task,
            self.generation,
            self.quorum,
            self.outcome,
            self.fuel_used,
            self.providers.clone(),
            self.receipt.clone(),
        );
        if let Ok(record) = codec::encode(&encoded)
            && record.len() <= AUDIT_RECORD_BYTES_MAX
        {
            log.append(&record);
        }
    }

    /// Every record in `log` naming `provider`, oldest first.
    pub fn naming(log: &mut dyn AuditLog, provider: ProviderIndex) -> Vec<Backing> {
        let mut found = Vec::new();
        log.for_each(&mut |record| {
            let Ok((task, generation, quorum, outcome, fuel_used, providers, receipt)) =
                codec::decode::<Encoded>(record, AUDIT_RECORD_BYTES_MAX)
            else {
                return;
            };
            if providers.contains(&provider) {
                found.push(Backing {
                    task,
                    generation,
                    quorum,
                    outcome,
                    fuel_used,
                    providers,
                    receipt,
                });
            }
        });
        found
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use idlegrid_types::ContentId;

    #[test]
    fn records_naming_a_provider_come_back_in_order() {
        let mut log = MemoryAuditLog::default();
        for task in 0..10u64 {
            Backing {
                task,
                generation: (task % 2) as u8,
                quorum: 2,
                outcome: TaskOutcome::Completed {
                    exit_code: 0,
                    output: ContentId::of(&task.to_le_bytes()),
                },
                fuel_used: task * 7,
                providers: vec![(task % 3) as ProviderIndex, 9],
                receipt: None,
            }
            .keep(&mut log);
        }
        let named = Backing::naming(&mut log, 1);
        let tasks: Vec<u64> = named.iter().map(|backing| backing.task).collect();
        assert_eq!(tasks, [1, 4, 7]);
        assert_eq!(named[1].fuel_used, 28);
        assert_eq!(named[1].generation, 0);
        assert_eq!(Backing::naming(&mut log, 9).len(), 10);
        assert!(Backing::naming(&mut log, 5).is_empty());
    }
}
