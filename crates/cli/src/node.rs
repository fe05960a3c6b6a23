//! `idlegrid validator` and `idlegrid testnet`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use idlegrid_node::{TestnetPlan, start_validator, testnet};
use serde_json::json;

use crate::resolve;

/// Run a validator: keys, listen address, peers, data directory and
/// genesis come from its configuration file.
///
/// Prints one line when its API is up (with --json: {"account", "api"}),
/// then runs until it is killed; killed at any moment, it resumes from its
/// data directory when started again with the same command.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid testnet init --validators 1 --dir /tmp/tn
  idlegrid validator --config /tmp/tn/validator-0/config.toml
  idlegrid validator --config /tmp/tn/validator-0/config.toml --json")]
pub struct ValidatorArgs {
    /// The validator's configuration file (see `idlegrid testnet init`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
    /// Print the start line as JSON.
    #[arg(long)]
    json: bool,
}

pub fn validator(args: ValidatorArgs) -> ExitCode {
    let started = start_validator(&args.config).and_then(|validator| {
        if args.json {
            println!(
                "{}",
                json!({
                    "account": validator.account.to_string(),
                    "api": format!("http://{}", validator.api),
                })
            );
        } else {
            println!(
                "validator {} started: API http://{}",
                validator.account, validator.api
            );
        }
        validator.join()
    });
    match started {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => fail(&error, args.json),
    }
}

fn fail(error: &anyhow::Error, json: bool) -> ExitCode {
    resolve::report_error(error, json);
    ExitCode::FAILURE
}

/// Local networks for trying idlegrid out.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid testnet init --validators 4 --dir /tmp/tn
  idlegrid testnet init --validators 1 --dir /tmp/tn1 --api-port 7710 --json
  idlegrid testnet join --dir /tmp/tn")]
pub struct TestnetArgs {
    #[command(subcommand)]
    command: TestnetCommand,
}

#[derive(Debug, Subcommand)]
enum TestnetCommand {
    /// Write keys, a genesis and one configuration file per validator.
    ///
    /// Validator i listens for peers on --p2p-port + i and serves its API
    /// on --api-port + i; faucet.key holds the genesis funds. With --json:
    /// {"genesis", "faucet_key", "configs": [FILE], "apis": [URL]}.
    #[command(after_help = "Examples:
  idlegrid testnet init --validators 4 --dir /tmp/tn
  idlegrid testnet init --validators 1 --dir /tmp/tn1 --epoch-length 20 --json
  idlegrid testnet init --dir /tmp/quiet --emission-per-epoch 0")]
    Init(InitArgs),
    /// Add a validator that is not in genesis to the testnet in --dir.
    ///
    /// Writes validator-N/ (the next free N) with a new key, a
    /// configuration over the same genesis on the next free ports of the
    /// init's scheme, and the testnet's validators as peers; nothing is
    /// overwritten. The new validator is in the set from the epoch after
    /// its key stakes as a validator. Until then the others do not accept
    /// its connections and it stays at genesis, so send its transactions
    /// through another validator's API (--node); once elected it catches
    /// up and votes. With --json: {"config", "account", "api", "key"}.
    #[command(after_help = "Examples:
  idlegrid testnet join --dir /tmp/tn
  idlegrid testnet join --dir /tmp/tn --json
  # fund it, start it, and stake through a validator already in the set:
  NEW=$(idlegrid wallet --key /tmp/tn/validator-4/validator.key address)
  idlegrid wallet --key /tmp/tn/faucet.key transfer --to $NEW --amount 2000000 --wait
  idlegrid validator --config /tmp/tn/validator-4/config.toml
  idlegrid wallet --key /tmp/tn/validator-4/validator.key --node http://127.0.0.1:7700 \\
    stake --role validator --amount 1000000 --wait")]
    Join(JoinArgs),
}

#[derive(Debug, Args)]
struct JoinArgs {
    /// The testnet's directory (as written by `idlegrid testnet init`).
    #[arg(long)]
    dir: PathBuf,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

#[derive(Debug, Args)]
struct InitArgs {
    /// How many validators.
    #[arg(long, default_value_t = 4)]
    validators: usize,
    /// An empty (or new) directory to write into.
    #[arg(long)]
    dir: PathBuf,
    /// The chain's id (signed into every transaction).
    #[arg(long, default_value = "idlegrid-testnet")]
    chain_id: String,
    /// Validator i listens for peers on this port + i.
    #[arg(long, default_value_t = 7600)]
    p2p_port: u16,
    /// Validator i serves its HTTP API on this port + i.
    #[arg(long, default_value_t = 7700)]
    api_port: u16,
    /// Blocks per epoch (the validator set follows stake at each boundary).
    #[arg(long, default_value_t = 100)]
    epoch_length: u64,
    /// Tokens minted at each epoch's end, shared by validators (by stake)
    /// and providers (by the fuel they were paid for).
    #[arg(long, default_value_t = idlegrid_ledger::Params::default().emission_per_epoch)]
    emission_per_epoch: u64,
    /// Share of the providers that declared a speed challenged at each
    /// epoch's end, in basis points (0: no capacity challenges).
    #[arg(long, default_value_t = 0)]
    challenge_share_bps: u16,
    /// Passes of each capacity challenge over its 64 MiB (its fuel grows
    /// with them).
    #[arg(long, default_value_t = idlegrid_ledger::Params::default().challenge_passes)]
    challenge_passes: u32,
    /// How long a GPU challenge takes at the GPU speed its provider
    /// declared, in milliseconds (its search is sized by that speed).
    #[arg(long, default_value_t = idlegrid_ledger::Params::default().gpu_challenge_ms)]
    gpu_challenge_ms: u64,
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

pub fn testnet(args: TestnetArgs) -> ExitCode {
    match args.command {
        TestnetCommand::Init(args) => init(args),
        TestnetCommand::Join(args) => join(args),
    }
}

fn join(args: JoinArgs) -> ExitCode {
    match testnet::join(&args.dir) {
        Ok(joined) => {
            let api = format!("http://{}", joined.validator.api_listen);
            if args.json {
                println!(
                    "{}",
                    json!({
                        "config": joined.config.display().to_string(),
                        "account": joined.account.to_string(),
                        "api": api,
                        "key": joined.key.display().to_string(),
                    })
                );
            } else {
                println!(
                    "wrote validator {} to {}",
                    joined.index,
                    joined.config.parent().unwrap_or(&args.dir).display()
                );
                println!("  account  {}", joined.account);
                println!("  key      {}", joined.key.display());
                println!(
                    "  idlegrid validator --config {}   (API {api})",
                    joined.config.display()
                );
                println!(
                    "It is in the set from the epoch after it stakes; fund it, start it, and stake through a validator already in the set:\n  idlegrid wallet --key {} --node http://{} stake --role validator --amount N --wait",
                    joined.key.display(),
                    joined.member_api
                );
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error, args.json),
    }
}

fn init(args: InitArgs) -> ExitCode {
    let plan = TestnetPlan {
        validators: args.validators,
        chain_id: args.chain_id,
        p2p_port: args.p2p_port,
        api_port: args.api_port,
        epoch_length: args.epoch_length,
        emission_per_epoch: args.emission_per_epoch,
        challenge_share_bps: args.challenge_share_bps,
        challenge_passes: args.challenge_passes,
        gpu_challenge_ms: args.gpu_challenge_ms,
        ..TestnetPlan::default()
    };
    match testnet::init(&args.dir, &plan) {
        Ok(net) => {
            if args.json {
                let configs: Vec<String> = net
                    .configs
                    .iter()
                    .map(|path| path.display().to_string())
                    .collect();
                let apis: Vec<String> = net
                    .validators
                    .iter()
                    .map(|config| format!("http://{}", config.api_listen))
                    .collect();
                println!(
                    "{}",
                    json!({
                        "genesis": net.genesis.display().to_string(),
                        "faucet_key": net.faucet_key.display().to_string(),
                        "configs": configs,
                        "apis": apis,
                    })
                );
            } else {
                println!(
                    "wrote a {}-validator testnet to {}",
                    net.configs.len(),
                    args.dir.display()
                );
                println!("  genesis     {}", net.genesis.display());
                println!("  faucet key  {}", net.faucet_key.display());
                for (path, config) in net.configs.iter().zip(&net.validators) {
                    println!(
                        "  idlegrid validator --config {}   (API http://{})",
                        path.display(),
                        config.api_listen
                    );
                }
            }
            ExitCode::SUCCESS
        }
        Err(error) => fail(&error, args.json),
    }
}
