//! The `idlegrid` command line.

mod blob;
mod compute;
mod devnet;
mod exec;
mod failure;
mod jobs;
mod node;
mod resolve;
mod status;
mod wallet;

use std::process::ExitCode;

use clap::{Args, CommandFactory, Parser, Subcommand};

/// idlegrid: rent out idle compute, or run many tasks on it and pay only for verified results.
#[derive(Debug, Parser)]
#[command(
    name = "idlegrid",
    version,
    propagate_version = true,
    after_help = "Examples:
  idlegrid devnet --demo                            # a whole network on this machine
  idlegrid status --node http://127.0.0.1:8080      # the devnet at a glance
  idlegrid exec examples/pi/pi.wasm -- 1000000      # run a module as a provider would
  idlegrid <COMMAND> --help                         # more about one command"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Devnet(devnet::DevnetArgs),
    Exec(exec::ExecArgs),
    Provide(compute::ProvideArgs),
    Gateway(compute::GatewayArgs),
    Submit(compute::SubmitArgs),
    Status(status::StatusArgs),
    Jobs(jobs::JobsArgs),
    Validator(node::ValidatorArgs),
    Testnet(node::TestnetArgs),
    Wallet(wallet::WalletArgs),
    Blob(blob::BlobArgs),
    Completions(CompletionsArgs),
}

/// Print a shell completion script for idlegrid.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid completions bash > ~/.local/share/bash-completion/completions/idlegrid
  idlegrid completions zsh > ~/.zfunc/_idlegrid      # with fpath+=(~/.zfunc) in ~/.zshrc
  idlegrid completions fish > ~/.config/fish/completions/idlegrid.fish")]
struct CompletionsArgs {
    /// The shell.
    #[arg(value_enum)]
    shell: clap_complete::Shell,
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
        Command::Devnet(args) => devnet::run(args),
        Command::Blob(args) => blob::blob(args),
        Command::Exec(args) => exec::run(args),
        Command::Provide(args) => compute::provide(args),
        Command::Gateway(args) => compute::gateway(args),
        Command::Submit(args) => compute::submit_job(args),
        Command::Status(args) => status::run(args),
        Command::Jobs(args) => jobs::run(args),
        Command::Validator(args) => node::validator(args),
        Command::Testnet(args) => node::testnet(args),
        Command::Wallet(args) => wallet::run(args),
        Command::Completions(args) => {
            clap_complete::generate(
                args.shell,
                &mut Cli::command(),
                "idlegrid",
                &mut std::io::stdout(),
            );
            ExitCode::SUCCESS
        }
    }
}
