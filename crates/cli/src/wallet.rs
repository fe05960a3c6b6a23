//! `idlegrid wallet`: keys and transactions through a validator's HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use idlegrid_ledger::{StakeRole, TxKind};
use idlegrid_node::client::{ApiClient, ApiError, Sent};
use idlegrid_node::{generate, read_key, write_key};
use idlegrid_types::{AccountId, Keypair};
use serde_json::{Value, json};

/// The node's API when neither `--node` nor `IDLEGRID_NODE` names one.
const NODE_DEFAULT: &str = "http://127.0.0.1:7700";
/// How long `--wait` waits for a transaction to be included.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);

/// The node refused the request, or the transaction was rejected.
const EXIT_REFUSED: u8 = 1;
/// (clap's) the command line was wrong.
const _EXIT_USAGE: u8 = 2;
/// The wallet could not finish: the node is unreachable or answered
/// nonsense, the key file is unusable, or `--wait` timed out.
const EXIT_FAILED: u8 = 3;

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
  idlegrid wallet balance
  idlegrid wallet transfer --to did:key:z6Mk… --amount 1000 --wait
  idlegrid wallet stake --amount 5000 --role provider --wait --json")]
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
    New,
    /// Print the key's account (a did:key).
    Address,
    /// Show an account's balance, nonce and stake.
    Balance {
        /// The account [default: the key's].
        account: Option<String>,
    },
    /// Send tokens to another account.
    Transfer(TransferArgs),
    /// Bond tokens as provider or validator stake.
    Stake(StakeArgs),
    /// Start unbonding stake (it returns to the balance after the chain's
    /// unbonding period; validator stake leaves the set from the next epoch).
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

/// Why a wallet command failed.
#[derive(Debug)]
enum Failure {
    /// The node answered with an error, or the transaction did not apply.
    Refused { code: String, message: String },
    /// Anything else, with a code for `--json`.
    Failed { code: &'static str, message: String },
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        match error {
            ApiError::Refused { code, message } => Failure::Refused { code, message },
            other => Failure::Failed {
                code: match other {
                    ApiError::Unreachable { .. } => "unreachable",
                    ApiError::TimedOut { .. } => "timed_out",
                    _ => "bad_answer",
                },
                message: other.to_string(),
            },
        }
    }
}

impl Failure {
    fn failed(code: &'static str, message: impl Into<String>) -> Self {
        Failure::Failed {
            code,
            message: message.into(),
        }
    }

    fn code(&self) -> &str {
        match self {
            Failure::Refused { code, .. } => code,
            Failure::Failed { code, .. } => code,
        }
    }

    fn message(&self) -> &str {
        match self {
            Failure::Refused { message, .. } | Failure::Failed { message, .. } => message,
        }
    }
}

pub fn run(args: WalletArgs) -> ExitCode {
    let json = args.json;
    match execute(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            if json {
                println!(
                    "{}",
                    json!({ "error": { "code": failure.code(), "message": failure.message() } })
                );
            }
            match &failure {
                Failure::Refused { code, message } => eprintln!("error: {code}: {message}"),
                Failure::Failed { message, .. } => eprintln!("error: {message}"),
            }
            ExitCode::from(match failure {
                Failure::Refused { .. } => EXIT_REFUSED,
                Failure::Failed { .. } => EXIT_FAILED,
            })
        }
    }
}

fn execute(args: WalletArgs) -> Result<(), Failure> {
    let key_path = match &args.key {
        Some(path) => path.clone(),
        None => default_key_path()?,
    };
    let node = args
        .node
        .clone()
        .or_else(|| std::env::var("IDLEGRID_NODE").ok())
        .unwrap_or_else(|| NODE_DEFAULT.to_owned());
    let client = ApiClient::new(&node);
    let json = args.json;
    match args.command {
        WalletCommand::New => {
            let key = generate().map_err(|error| Failure::failed("key_file", error.to_string()))?;
            write_key(&key_path, &key)
                .map_err(|error| Failure::failed("key_file", error.to_string()))?;
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

fn default_key_path() -> Result<PathBuf, Failure> {
    let home = match std::env::var_os("IDLEGRID_HOME") {
        Some(home) => PathBuf::from(home),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".idlegrid"))
            .ok_or_else(|| {
                Failure::failed(
                    "key_file",
                    "neither IDLEGRID_HOME nor HOME is set; name the key file with --key",
                )
            })?,
    };
    Ok(home.join("wallet.key"))
}

fn load_key(path: &std::path::Path) -> Result<Keypair, Failure> {
    read_key(path).map_err(|error| Failure::failed("key_file", error.to_string()))
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
