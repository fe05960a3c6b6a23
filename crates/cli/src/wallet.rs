//! `idlegrid wallet`: keys and transactions through a validator's HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::{Args, Subcommand, ValueEnum};
use idlegrid_api::client::{ApiClient, Sent};
use idlegrid_ledger::{FAULT_EVIDENCE_BYTES_MAX, StakeRole, TxKind};
use idlegrid_node::{generate, read_key, write_key};
use idlegrid_types::codec::Bounded;
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
    /// Delegate tokens to a validator: a share of its pool, earning its
    /// rewards less its commission, and slashed with it.
    ///
    /// JSON: as `wallet transfer`.
    #[command(after_help = "Examples:
  idlegrid wallet delegate --to did:key:z6Mk... --amount 5000 --wait
  idlegrid wallet delegate --to did:key:z6Mk... --amount 100 --json")]
    Delegate(DelegateArgs),
    /// Start undelegating from a validator (the tokens return after the
    /// chain's unbonding period, and stay slashable until then; more than
    /// the delegation is worth undelegates all of it).
    ///
    /// JSON: as `wallet transfer`.
    #[command(after_help = "Examples:
  idlegrid wallet undelegate --from did:key:z6Mk... --amount 1000 --wait
  idlegrid wallet undelegate --from did:key:z6Mk... --amount 18446744073709551615")]
    Undelegate(UndelegateArgs),
    /// Show an account's delegations and unclaimed rewards; with --claim,
    /// claim them (one transaction per validator with rewards).
    ///
    /// JSON: the node's delegations view: {"account", "delegations":
    /// [{"validator", "stake", "shares", "rewards", "unbonding"}],
    /// "rewards_total"}; with --claim, {"claimed": [{"validator",
    /// "rewards", "hash", "status", "height"?}]}.
    #[command(after_help = "Examples:
  idlegrid wallet rewards
  idlegrid wallet rewards --claim --wait --json")]
    Rewards(RewardsArgs),
    /// Show a validator's commission, or set it with --set (a validator
    /// may change it once per epoch, by the chain's largest step).
    ///
    /// JSON: {"validator", "commission_bps", "own_stake", "delegated",
    /// "delegators", "power", "in_set"}; with --set, as `wallet transfer`.
    #[command(after_help = "Examples:
  idlegrid wallet commission
  idlegrid wallet commission --set 500 --wait")]
    Commission(CommissionArgs),
    /// Report a validator that signed two conflicting consensus votes: the
    /// evidence (a file of its bytes) slashes it and every delegation to
    /// it, and pays the reporter a share.
    ///
    /// JSON: as `wallet transfer`.
    #[command(after_help = "Examples:
  idlegrid wallet report-fault --evidence fault.bin --wait")]
    ReportFault(ReportFaultArgs),
}

#[derive(Debug, Args)]
struct DelegateArgs {
    /// The validator (a did:key).
    #[arg(long, value_name = "VALIDATOR")]
    to: String,
    /// How many tokens.
    #[arg(long, value_name = "N")]
    amount: u64,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Args)]
struct UndelegateArgs {
    /// The validator (a did:key).
    #[arg(long, value_name = "VALIDATOR")]
    from: String,
    /// How many tokens.
    #[arg(long, value_name = "N")]
    amount: u64,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Args)]
struct RewardsArgs {
    /// The account [default: the key's].
    account: Option<String>,
    /// Claim the rewards (the key's own).
    #[arg(long, conflicts_with = "account")]
    claim: bool,
    /// Only from this validator.
    #[arg(long, value_name = "VALIDATOR", requires = "claim")]
    from: Option<String>,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Args)]
struct CommissionArgs {
    /// The validator [default: the key's account].
    validator: Option<String>,
    /// Set the key's commission to this many basis points.
    #[arg(long, value_name = "BPS", conflicts_with = "validator")]
    set: Option<u16>,
    #[command(flatten)]
    send: SendArgs,
}

#[derive(Debug, Args)]
struct ReportFaultArgs {
    /// A file holding the evidence bytes.
    #[arg(long, value_name = "FILE")]
    evidence: PathBuf,
    #[command(flatten)]
    send: SendArgs,
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
        WalletCommand::Delegate(delegate) => {
            let kind = TxKind::Delegate {
                validator: parse_account(&delegate.to)?,
                amount: delegate.amount,
            };
            send(&client, &load_key(&key_path)?, kind, &delegate.send, json)?;
        }
        WalletCommand::Undelegate(undelegate) => {
            let kind = TxKind::Undelegate {
                validator: parse_account(&undelegate.from)?,
                amount: undelegate.amount,
            };
            send(&client, &load_key(&key_path)?, kind, &undelegate.send, json)?;
        }
        WalletCommand::Rewards(rewards) => rewards_command(&client, &key_path, rewards, json)?,
        WalletCommand::Commission(commission) => {
            commission_command(&client, &key_path, commission, json)?
        }
        WalletCommand::ReportFault(report) => {
            let bytes = std::fs::read(&report.evidence).map_err(|error| {
                Failure::failed(
                    "evidence_file",
                    format!("reading {}: {error}", report.evidence.display()),
                )
            })?;
            let evidence = Bounded::new(bytes).map_err(|_| {
                Failure::failed(
                    "invalid_argument",
                    format!(
                        "the evidence is over {FAULT_EVIDENCE_BYTES_MAX} bytes; it is not a fault report"
                    ),
                )
            })?;
            let kind = TxKind::ReportFault { evidence };
            send(&client, &load_key(&key_path)?, kind, &report.send, json)?;
        }
    }
    Ok(())
}

fn rewards_command(
    client: &ApiClient,
    key_path: &std::path::Path,
    args: RewardsArgs,
    json: bool,
) -> Result<(), Failure> {
    if !args.claim {
        let account = match args.account {
            Some(text) => parse_account(&text)?,
            None => load_key(key_path)?.account_id(),
        };
        let answer = client.get(&format!("/v1/accounts/{account}/delegations"))?;
        if json {
            println!("{answer}");
        } else {
            print_delegations(&answer);
        }
        return Ok(());
    }
    let key = load_key(key_path)?;
    let only = args.from.as_deref().map(parse_account).transpose()?;
    let answer = client.get(&format!("/v1/accounts/{}/delegations", key.account_id()))?;
    let mut claimed = Vec::new();
    for delegation in answer["delegations"].as_array().into_iter().flatten() {
        let rewards = delegation["rewards"].as_u64().unwrap_or(0);
        let validator = parse_account(delegation["validator"].as_str().unwrap_or_default())?;
        if rewards == 0 || only.is_some_and(|only| only != validator) {
            continue;
        }
        let Sent { hash, .. } =
            client.send(&key, TxKind::ClaimRewards { validator }, args.send.fee)?;
        let mut entry = json!({
            "validator": validator.to_string(),
            "rewards": rewards,
            "hash": hash,
            "status": "pending",
        });
        if args.send.wait {
            let height = client.wait_included(&hash, WAIT_TIMEOUT)?;
            entry["status"] = json!("included");
            entry["height"] = json!(height);
        }
        if !json {
            println!("claimed {rewards} from {validator}: {hash}");
        }
        claimed.push(entry);
    }
    if json {
        println!("{}", json!({ "claimed": claimed }));
    } else if claimed.is_empty() {
        println!("no rewards to claim");
    }
    Ok(())
}

fn commission_command(
    client: &ApiClient,
    key_path: &std::path::Path,
    args: CommissionArgs,
    json: bool,
) -> Result<(), Failure> {
    if let Some(commission_bps) = args.set {
        let kind = TxKind::SetCommission { commission_bps };
        return send(client, &load_key(key_path)?, kind, &args.send, json);
    }
    let validator = match args.validator {
        Some(text) => parse_account(&text)?,
        None => load_key(key_path)?.account_id(),
    };
    let answer = client.get("/v1/validators")?;
    let entry = answer["validators"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|entry| entry["account"].as_str() == Some(&validator.to_string()))
        .cloned()
        .ok_or_else(|| {
            Failure::failed(
                "not_a_validator",
                format!("{validator} has no validator stake"),
            )
        })?;
    if json {
        let mut view = entry.clone();
        view["validator"] = entry["account"].clone();
        if let Some(object) = view.as_object_mut() {
            object.remove("account");
        }
        println!("{view}");
    } else {
        let number = |key: &str| entry[key].as_u64().unwrap_or_default();
        println!("validator    {validator}");
        println!("commission   {} bps", number("commission_bps"));
        println!("own stake    {}", number("own_stake"));
        println!(
            "delegated    {} ({} delegators)",
            number("delegated"),
            number("delegators")
        );
        println!("power        {}", number("power"));
    }
    Ok(())
}

fn print_delegations(answer: &Value) {
    let number = |value: &Value| value.as_u64().unwrap_or_default();
    let list = answer["delegations"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if list.is_empty() {
        println!("no delegations");
        return;
    }
    for delegation in &list {
        let unbonding: u64 = delegation["unbonding"]
            .as_array()
            .map(|entries| entries.iter().map(|entry| number(&entry["amount"])).sum())
            .unwrap_or_default();
        println!(
            "{}  stake {}{}  rewards {}",
            delegation["validator"].as_str().unwrap_or("?"),
            number(&delegation["stake"]),
            if unbonding > 0 {
                format!(" (+{unbonding} unbonding)")
            } else {
                String::new()
            },
            number(&delegation["rewards"])
        );
    }
    println!("rewards to claim  {}", number(&answer["rewards_total"]));
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
