//! A validator process: commonware's tokio runtime, its authenticated p2p
//! network (discovery over TCP, every peer identified by its validator
//! key), and the engine of [`crate::engine`]. Nothing here leaks a
//! commonware type to the caller.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use commonware_cryptography::ChaCha20Poly1305;
use commonware_cryptography::Signer as _;
use commonware_macros::select;
use commonware_p2p::Manager as _;
use commonware_p2p::authenticated::discovery;
use commonware_runtime::{Quota, Runner as _, Spawner as _, Supervisor as _, tokio};
use commonware_stream::cups::{self, Cups};
use commonware_stream::sake::{self, Sake};
use commonware_utils::{NZU32, NZUsize};
use idlegrid_ledger::{Store, VALIDATORS_MAX};
use idlegrid_types::AccountId;

use crate::engine::{
    Blocks, Channels, EngineConfig, EngineError, channel, max_message_size, private_key,
    public_key, start, validator_set,
};
use crate::node::SharedNode;

/// Everything a validator process needs besides its ledger.
#[derive(Debug, Clone)]
pub struct ValidatorSettings {
    /// The validator's secret key seed (its account key).
    pub seed: [u8; 32],
    /// Where it listens for the other validators.
    pub listen: SocketAddr,
    /// Validators to dial first; the rest are discovered through them.
    pub bootstrappers: Vec<(AccountId, SocketAddr)>,
    /// The consensus engine's journals and block archives.
    pub engine_dir: PathBuf,
    /// Worker threads of the runtime.
    pub worker_threads: usize,
    pub engine: EngineConfig,
}

/// Messages per second one peer may send on one channel (also sizes the
/// network's queues: peers × burst per channel).
const QUOTA_PER_SECOND: u32 = 1_000;

/// How long a stopping validator's tasks get to finish their writes.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

/// Runs a validator until `stop` resolves (its engine does not stop on its
/// own: when it does, this returns why, a damaged file named in full).
/// `started` is called once the engine runs, with the store of finalized
/// blocks (for the HTTP API). Stopping signals every task of the runtime
/// and waits for them to finish what they write, so the engine's journals
/// may be removed once this returns.
pub fn run<S: Store + Send + 'static>(
    settings: ValidatorSettings,
    node: SharedNode<S>,
    started: impl FnOnce(Blocks) + Send + 'static,
    stop: impl Future<Output = ()> + Send + 'static,
) -> Result<(), EngineError> {
    let participants = validator_set(&node)?;
    let bootstrappers = settings
        .bootstrappers
        .iter()
        .map(|(account, address)| Ok((public_key(account)?, (*address).into())))
        .collect::<Result<Vec<_>, EngineError>>()?;
    std::fs::create_dir_all(&settings.engine_dir).map_err(|error| EngineError::Storage {
        what: "the engine directory",
        location: settings.engine_dir.clone(),
        error: error.to_string(),
    })?;
    let engine_dir = settings.engine_dir.clone();
    let runtime = tokio::Config::new()
        .with_worker_threads(settings.worker_threads.max(1))
        .with_storage_directory(&settings.engine_dir)
        .with_catch_panics(false);
    tokio::Runner::new(runtime).start(|context| async move {
        let signer = private_key(settings.seed);
        // Sized for the largest validator set an epoch may have.
        let size = max_message_size(VALIDATORS_MAX as u32);
        let p2p = discovery::Config::local(
            Cups::<_, ChaCha20Poly1305>::new(
                Sake {
                    signer: signer.clone(),
                    synchrony_bound: Duration::from_secs(5),
                    max_handshake_age: Duration::from_secs(10),
                    version: sake::Version::V1,
                },
                cups::Version::V1,
            ),
            &settings.engine.namespace,
            settings.listen,
            settings.listen,
            bootstrappers,
            NZUsize!(VALIDATORS_MAX),
            size,
            NZUsize!(4096),
        );
        let (mut network, mut oracle) = discovery::Network::new(context.child("network"), p2p);
        let _ = oracle.track(0, participants);
        let quota = Quota::per_second(NZU32!(QUOTA_PER_SECOND));
        let mut register = |id| network.register(id, quota);
        let channels = Channels {
            votes: register(channel::VOTES),
            certificates: register(channel::CERTIFICATES),
            requests: register(channel::REQUESTS),
            broadcast: register(channel::BROADCAST),
            backfill: register(channel::BACKFILL),
            transactions: register(channel::TRANSACTIONS),
        };
        network.start();
        tracing::info!(key = %crate::engine::account_of(&signer.public_key()), listen = %settings.listen, "validator starting");
        let running = start(
            context.child("validator"),
            &settings.engine,
            signer,
            node,
            oracle.clone(),
            oracle,
            channels,
        )
        .await?;
        started(running.blocks);
        let stopper = context.child("stopper");
        select! {
            stopped = running.engine => {
                let error = stopped
                    .unwrap_or_else(|error| EngineError::Stopped(error.to_string()));
                tracing::error!(%error, "the consensus engine stopped");
                Err(error)
            },
            _ = stop => {
                tracing::info!("validator stopping");
                stopper
                    .stop(0, Some(STOP_TIMEOUT))
                    .await
                    .map_err(|_| EngineError::StopTimedOut(STOP_TIMEOUT))
            },
        }
    })
    .map_err(|error| error.under(&engine_dir))
}
