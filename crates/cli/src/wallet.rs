//! `idlegrid wallet`: keys and transactions through a validator's HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use idlegrid_api::client::{ApiClient, Sent};
use idlegrid_ledger::{StakeRole, TxKind};
use idlegrid_node::{generate, read_key, write_key};
use idlegrid_types::{AccountId, Keypair};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::resolve;

/// How long `--wait` waits for a transaction to be included.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// Keys, balances, transfers and stake.
///
/// Transactions are signed locally and sent to a validator's HTTP API.
///
/// Exit status: 0 done; 1 the node refused the request or the transaction
/// was rejected; 2 usage error; 3 the wallet could not finish (node
/// unreachable, unusable key file, `--wait` timed out).
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid wallet new
  idlegrid wallet balance --json
  idlegrid wallet --key friend.key new
  idlegrid wallet transfer --to $(idlegrid wallet --key friend.key address) --amount 10
  idlegrid wallet --key /tmp/tn/faucet.key --node http://127.0.0.1:7700 balance")]
pub struct WalletArgs {
    #[command(subcommand)]
    command: WalletCommand,
    /// The key file [default: $IDLEGRID_HOME/wallet.key; IDLEGRID_HOME
    /// defaults to ~/.idlegrid].
    #[arg(long, value_name = "FILE", global = true)]
    key: Option<PathBuf>,
    /// A validator's HTTP API [default: $IDLEGRID_NODE, else
    /// http://127.0.0.1:7700].
    #[arg(long, value_name = "URL", global = true)]
    node: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long, global = true)]
    json: bool,
}

#[derive(Debug, Subcommand)]
enum WalletCommand {
    /// Create a new key file (never overwrites one).
    ///
    /// JSON: {"account", "key"} (the account's did:key, the file written).
    #[command(after_help = "Examples:
  idlegrid wallet new
  idlegrid wallet --key friend.key new --json")]
    New,
    /// Print the key's account (a did:key).
    ///
    /// JSON: {"account"}.
    #[command(after_help = "Examples:
  idlegrid wallet address
  idlegrid wallet --key friend.key address --json")]
    Address,
    /// Show an account's balance, nonce and stake.
    ///
    /// JSON: the node's account view: {"account", "balance", "nonce",
    /// "next_nonce", "provider_stake", "validator_stake"}, each stake
    /// {"bonded", "unbonding": [{"amount", "release_height"}]}.
    #[command(after_help = "Examples:
  idlegrid wallet balance
  idlegrid wallet balance $(idlegrid wallet --key friend.key address) --json")]
    Balance {
        /// The account [default: the key's].
        account: Option<String>,
    },
    /// Send tokens to another account.
    ///
    /// JSON: {"hash", "nonce", "fee", "status": "pending"}, or with --wait
    /// {"hash", "nonce", "fee", "status": "included", "height"}.
    #[command(after_help = "Examples:
  idlegrid wallet transfer --to $(idlegrid wallet --key friend.key address) --amount 10
  ME=$(idlegrid wallet address)
  idlegrid wallet --key /tmp/tn/faucet.key transfer --to \"$ME\" --amount 5000 --wait --json")]
    Transfer(TransferArgs),
    /// Bond tokens as provider or validator stake.
    ///
    /// JSON: as `wallet transfer`.
    #[command(after_help = "Examples:
  idlegrid wallet stake --amount 5000 --role provider --wait
  idlegrid wallet stake --amount 1000000 --role validator --wait --json")]
    Stake(StakeArgs),
    /// Start unbonding stake (it returns to the balance after the chain's
    /// unbonding period; validator stake leaves the set from the next epoch).
    ///
    /// JSON: as `wallet transfer`.
    #[command(after_help = "Examples:
  idlegrid wallet unstake --amount 1000 --role provider --wait
  idlegrid wallet unstake --amount 1000000 --role validator --json")]
    Unstake(StakeArgs),
}

#[derive(Debug, Args)]
struct TransferArgs {
    /// The receiving account (a did:key).
    #[arg(long, value_name = "ACCOUNT")]
    to: String,
    /// How many tokens to send.
    #[arg(long, value_name = "N")]
    amount: u64,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Args)]
struct StakeArgs {
    /// How many tokens (validator stake counts from the next epoch).
    #[arg(long, value_name = "N")]
    amount: u64,
    /// Which stake.
    #[arg(long, value_enum, default_value_t = Role::Provider)]
    role: Role,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Args)]
struct SendArgs {
    /// The fee [default: the chain's minimum fee].
    #[arg(long, value_name = "N")]
    fee: Option<u64>,
    /// Wait (up to 60 s) until the transaction is in a finalized block.
    #[arg(long)]
    wait: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    Provider,
    Validator,
}

impl From<Role> for StakeRole {
    fn from(role: Role) -> Self {
        match role {
            Role::Provider => StakeRole::Provider,
            Role::Validator => StakeRole::Validator,
        }
    }
}

pub fn run(args: WalletArgs) -> ExitCode {
    let json = args.json;
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => failure.report(json),
    }
}

fn execute(args: WalletArgs) -> Result<(), Failure> {
    let key_path = resolve::key_path(args.key.as_deref())
        .map_err(|error| Failure::failed("key_file", format!("{error:#}")))?;
    let node = resolve::node_url(args.node.as_deref());
    let client = ApiClient::new(&node);
    let json = args.json;
    match args.command {
        WalletCommand::New => {
            let key = generate().map_err(|error| Failure::key(&error))?;
            write_key(&key_path, &key).map_err(|error| Failure::key(&error))?;
            let account = key.account_id().to_string();
            if json {
                println!(
                    "{}",
                    json!({ "account": account, "key": key_path.display().to_string() })
                );
            } else {
                println!("wrote a new key to {}", key_path.display());
                println!("account {account}");
            }
        }
        WalletCommand::Address => {
            let account = load_key(&key_path)?.account_id().to_string();
            if json {
                println!("{}", json!({ "account": account }));
            } else {
                println!("{account}");
            }
        }
        WalletCommand::Balance { account } => {
            let account = match account {
                Some(text) => parse_account(&text)?,
                None => load_key(&key_path)?.account_id(),
            };
            let answer = client.get(&format!("/v1/accounts/{account}"))?;
            if json {
                println!("{answer}");
            } else {
                print_balance(&answer);
            }
        }
        WalletCommand::Transfer(transfer) => {
            let to = parse_account(&transfer.to)?;
            let kind = TxKind::Transfer {
                to,
                amount: transfer.amount,
            };
            send(&client, &load_key(&key_path)?, kind, &transfer.send, json)?;
        }
        WalletCommand::Stake(stake) => {
            let kind = TxKind::Stake {
                role: stake.role.into(),
                amount: stake.amount,
            };
            send(&client, &load_key(&key_path)?, kind, &stake.send, json)?;
        }
        WalletCommand::Unstake(stake) => {
            let kind = TxKind::Unstake {
                role: stake.role.into(),
                amount: stake.amount,
            };
            send(&client, &load_key(&key_path)?, kind, &stake.send, json)?;
        }
    }
    Ok(())
}

fn load_key(path: &std::path::Path) -> Result<Keypair, Failure> {
    read_key(path).map_err(|error| Failure::key(&error))
}

fn parse_account(text: &str) -> Result<AccountId, Failure> {
    text.parse().map_err(|error| {
        Failure::failed(
            "invalid_argument",
            format!("`{text}` is not an account: {error}"),
        )
    })
}

/// Signs `kind` with the chain id and nonce the node reports, submits it,
/// and (with `--wait`) waits for its block.
fn send(
    client: &ApiClient,
    key: &Keypair,
    kind: TxKind,
    send: &SendArgs,
    json: bool,
) -> Result<(), Failure> {
    let Sent { hash, nonce, fee } = client.send(key, kind, send.fee)?;
    if !send.wait {
        if json {
            println!(
                "{}",
                json!({ "hash": hash, "nonce": nonce, "fee": fee, "status": "pending" })
            );
        } else {
            println!("{hash}");
        }
        return Ok(());
    }
    if !json {
        println!("{hash}");
    }
    let height = client.wait_included(&hash, WAIT_TIMEOUT)?;
    if json {
        println!(
            "{}",
            json!({ "hash": hash, "nonce": nonce, "fee": fee, "status": "included", "height": height })
        );
    } else {
        println!("included at height {height}");
    }
    Ok(())
}

fn print_balance(answer: &Value) {
    let number = |value: &Value| value.as_u64().unwrap_or_default();
    let stake = |role: &str| {
        let stake = &answer[format!("{role}_stake")];
        let unbonding: u64 = stake["unbonding"]
            .as_array()
            .map(|entries| entries.iter().map(|entry| number(&entry["amount"])).sum())
            .unwrap_or_default();
        if unbonding > 0 {
            format!("{} (+{unbonding} unbonding)", number(&stake["bonded"]))
        } else {
            number(&stake["bonded"]).to_string()
        }
    };
    println!(
        "account          {}",
        answer["account"].as_str().unwrap_or("?")
    );
    println!("balance          {}", number(&answer["balance"]));
    println!("next nonce       {}", number(&answer["next_nonce"]));
    println!("provider stake   {}", stake("provider"));
    println!("validator stake  {}", stake("validator"));
}
