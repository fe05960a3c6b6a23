//! `idlegrid validator` and `idlegrid testnet`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use idlegrid_node::{TestnetPlan, run_validator, testnet};

/// Run a validator: keys, listen address, peers, data directory and
/// genesis come from its configuration file.
#[derive(Debug, Args)]
pub struct ValidatorArgs {
    /// The validator's configuration file (see `idlegrid testnet init`).
    #[arg(long, value_name = "FILE")]
    config: PathBuf,
}

pub fn validator(args: ValidatorArgs) -> ExitCode {
    match run_validator(&args.config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

/// Local networks for trying idlegrid out.
#[derive(Debug, Args)]
pub struct TestnetArgs {
    #[command(subcommand)]
    command: TestnetCommand,
}

#[derive(Debug, Subcommand)]
enum TestnetCommand {
    /// Write keys, a genesis and one configuration file per validator.
    Init(InitArgs),
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
    /// Print what was written as JSON.
    #[arg(long)]
    json: bool,
}

pub fn testnet(args: TestnetArgs) -> ExitCode {
    let TestnetCommand::Init(args) = args.command;
    let plan = TestnetPlan {
        validators: args.validators,
        chain_id: args.chain_id,
        p2p_port: args.p2p_port,
        api_port: args.api_port,
        epoch_length: args.epoch_length,
        emission_per_epoch: args.emission_per_epoch,
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
                    serde_json::json!({
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
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}
