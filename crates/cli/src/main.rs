//! The `idlegrid` command line.

mod compute;
mod exec;
mod node;
mod wallet;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// idlegrid: rent out idle compute, or run many tasks on it and pay only for verified results.
#[derive(Debug, Parser)]
#[command(name = "idlegrid", version, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Exec(exec::ExecArgs),
    Provide(compute::ProvideArgs),
    Gateway(compute::GatewayArgs),
    Submit(compute::SubmitArgs),
    Validator(node::ValidatorArgs),
    Testnet(node::TestnetArgs),
    Wallet(wallet::WalletArgs),
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("IDLEGRID_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    match cli.command {
        Command::Exec(args) => exec::run(args),
        Command::Provide(args) => compute::provide(args),
        Command::Gateway(args) => compute::gateway(args),
        Command::Submit(args) => compute::submit_job(args),
        Command::Validator(args) => node::validator(args),
        Command::Testnet(args) => node::testnet(args),
        Command::Wallet(args) => wallet::run(args),
    }
}
