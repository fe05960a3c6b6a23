//! `idlegrid validator`: opens the ledger, serves the HTTP API and runs
//! the consensus engine until the process is stopped.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, OnceLock};

use anyhow::Context as _;
use futures::channel::oneshot;
use idlegrid_chain::engine::{EngineConfig, FaultJudge};
use idlegrid_chain::validator::{ValidatorSettings, run};
use idlegrid_chain::{Chain, Mempool, MempoolConfig, SharedNode, shared};
use idlegrid_gpu::CpuReExecutor;
use idlegrid_ledger::{Genesis, Ledger, RedbStore};
use idlegrid_sandbox::limits::WALL_TIME_DEFAULT;
use idlegrid_sandbox::{LazySandbox, SandboxConfig};
use idlegrid_types::AccountId;
use idlegrid_types::ByModuleKind;

use crate::config::ValidatorConfig;
use crate::keys::read_key;
use idlegrid_api::{ApiState, Submissions, serve};

/// A validator running in this process. Dropping it stops it as
/// [`Validator::stop`] does (an error is logged).
#[derive(Debug)]
pub struct Validator {
    pub account: AccountId,
    /// Its chain state (for in-process observers such as benchmarks).
    pub node: SharedNode<RedbStore>,
    /// Where its HTTP API listens.
    pub api: SocketAddr,
    /// Until stopped or joined.
    threads: Option<Threads>,
}

#[derive(Debug)]
struct Threads {
    consensus: std::thread::JoinHandle<anyhow::Result<()>>,
    api: std::thread::JoinHandle<()>,
    /// Sent (or dropped) to stop consensus, and the API.
    stop_consensus: oneshot::Sender<()>,
    stop_api: oneshot::Sender<()>,
}

impl Threads {
    fn stop(self) -> anyhow::Result<()> {
        let _ = self.stop_consensus.send(());
        let consensus = self
            .consensus
            .join()
            .map_err(|_| anyhow::anyhow!("the consensus thread panicked"));
        let _ = self.stop_api.send(());
        let api = self
            .api
            .join()
            .map_err(|_| anyhow::anyhow!("the API thread panicked"));
        consensus??;
        api
    }
}

impl Validator {
    /// Runs the validator until its consensus engine stops (it does not
    /// on its own: only on an error, which this gives).
    pub fn join(mut self) -> anyhow::Result<()> {
        let Some(threads) = self.threads.take() else {
            return Ok(());
        };
        let result = threads
            .consensus
            .join()
            .map_err(|_| anyhow::anyhow!("the consensus thread panicked"))?;
        let _ = threads.stop_api.send(());
        let _ = threads.api.join();
        result
    }

    /// Stops the validator: consensus finishes what it writes and its
    /// tasks end, the API answers the requests in progress and closes.
    /// Once this returns nothing of the validator touches its data
    /// directory (its ledger closes when the last handle to `node` goes).
    pub fn stop(mut self) -> anyhow::Result<()> {
        self.threads.take().map_or(Ok(()), Threads::stop)
    }
}

impl Drop for Validator {
    fn drop(&mut self) {
        if let Some(threads) = self.threads.take()
            && let Err(error) = threads.stop()
        {
            tracing::error!(account = %self.account, error = %format!("{error:#}"), "the validator did not stop cleanly");
        }
    }
}

/// Runs the validator a configuration file describes until its engine
/// stops; returns early only on a startup error.
pub fn run_validator(config_path: &Path) -> anyhow::Result<()> {
    let validator = start_validator(config_path)?;
    println!(
        "validator {} started: API http://{}",
        validator.account, validator.api
    );
    validator.join()
}

/// Starts the validator a configuration file describes: opens its ledger,
/// serves its API, and runs consensus on a thread of its own.
pub fn start_validator(config_path: &Path) -> anyhow::Result<Validator> {
    let config = ValidatorConfig::load(config_path)?;
    let key = read_key(&config.key_file)?;
    let genesis = Genesis::from_file(&config.genesis)?;
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("creating data directory {}", config.data_dir.display()))?;
    let store = RedbStore::open(&config.data_dir.join("ledger.redb"))?;
    let ledger = Ledger::open_or_init(store, &genesis)?.with_tree_history(config.tree_history());
    anyhow::ensure!(
        ledger.chain_id() == genesis.chain_id,
        "the data directory holds chain `{}`, the genesis file is for `{}`",
        ledger.chain_id(),
        genesis.chain_id
    );
    let chain = Chain::new(ledger)?;
    // Disputes re-execute WebAssembly in the sandbox and GPU programs on
    // the CPU path (validators need no GPU); fault reports are checked
    // against the votes' signatures.
    let executor = FaultJudge {
        tasks: ByModuleKind {
            wasi: LazySandbox::new(SandboxConfig {
                cache_dir: Some(config.data_dir.join("modules")),
                ..SandboxConfig::default()
            }),
            gpu: CpuReExecutor {
                wall_time: WALL_TIME_DEFAULT,
            },
        },
    };
    let node = shared(
        chain,
        Mempool::new(MempoolConfig::default()),
        Box::new(executor),
    );
    let bootstrappers = config
        .peers
        .iter()
        .map(|peer| {
            peer.account
                .parse()
                .map(|account| (account, peer.address))
                .map_err(|_| anyhow::anyhow!("peer `{}` is not a did:key account", peer.account))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let blocks = Arc::new(OnceLock::new());
    let state = ApiState {
        node: node.clone(),
        submissions: Submissions::new(node.clone()),
        blocks: blocks.clone(),
        validator: key.account_id(),
    };
    let listener = std::net::TcpListener::bind(config.api_listen)
        .with_context(|| format!("binding the API to {}", config.api_listen))?;
    let api_address = listener.local_addr()?;
    let (stop_api, api_stopped) = oneshot::channel::<()>();
    let api_thread = std::thread::Builder::new()
        .name("api".to_owned())
        .spawn(move || {
            // Sent or dropped, the sender stops the API.
            let stop = async move {
                let _ = api_stopped.await;
            };
            if let Err(error) = serve(listener, state, stop) {
                tracing::error!(%error, "the HTTP API stopped");
            }
        })?;
    let settings = ValidatorSettings {
        seed: key.seed(),
        listen: config.p2p_listen,
        bootstrappers,
        engine_dir: config.data_dir.join("engine"),
        worker_threads: config.worker_threads,
        engine: {
            let mut engine = EngineConfig::new(&genesis.chain_id);
            if let Some(wait) = config.idle_block_wait_ms {
                engine.idle_block_wait = std::time::Duration::from_millis(wait);
            }
            engine
        },
    };
    let account = key.account_id();
    let p2p = config.p2p_listen;
    let shared_node = node.clone();
    let (stop_consensus, consensus_stopped) = oneshot::channel::<()>();
    let consensus = std::thread::Builder::new()
        .name("consensus".to_owned())
        .spawn(move || {
            let started = move |found| {
                let _ = blocks.set(Arc::new(found));
                tracing::info!(%account, %p2p, api = %api_address, "consensus running");
            };
            let stop = async move {
                let _ = consensus_stopped.await;
            };
            run(settings, shared_node, started, stop).map_err(anyhow::Error::from)
        })?;
    Ok(Validator {
        account,
        node,
        api: api_address,
        threads: Some(Threads {
            consensus,
            api: api_thread,
            stop_consensus,
            stop_api,
        }),
    })
}
