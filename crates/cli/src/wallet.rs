//! `idlegrid wallet`: keys and transactions through a validator's HTTP API.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand, ValueEnum};
use idlegrid_ledger::{StakeRole, Transaction, TxKind};
use idlegrid_node::{generate, read_key, write_key};
use idlegrid_types::{AccountId, Keypair, codec};
use serde_json::{Value, json};

/// The node's API when neither `--node` nor `IDLEGRID_NODE` names one.
const NODE_DEFAULT: &str = "http://127.0.0.1:7700";
/// The fee when the node does not say what the chain's minimum is.
const FEE_DEFAULT: u64 = 1;
/// How long `--wait` waits for a transaction to be included.
const WAIT_TIMEOUT: Duration = Duration::from_secs(60);
/// How often `--wait` asks.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// How long one request to the node may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);

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
    let client = Client::new(&node);
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
    client: &Client,
    key: &Keypair,
    kind: TxKind,
    send: &SendArgs,
    json: bool,
) -> Result<(), Failure> {
    let status = client.get("/v1/status")?;
    let chain_id = status["chain_id"]
        .as_str()
        .ok_or_else(|| client.bad_answer("/v1/status", "no chain_id"))?;
    let fee = send
        .fee
        .or_else(|| status["minimum_fee"].as_u64())
        .unwrap_or(FEE_DEFAULT);
    let account_path = format!("/v1/accounts/{}", key.account_id());
    let nonce = client.get(&account_path)?["next_nonce"]
        .as_u64()
        .ok_or_else(|| client.bad_answer(&account_path, "no next_nonce"))?;
    let body = Transaction::new(chain_id, nonce, fee, kind)
        .map_err(|error| client.bad_answer("/v1/status", &format!("the chain id is {error}")))?;
    let signed = key.sign(body);
    let bytes = codec::encode(&signed).map_err(|error| {
        Failure::failed(
            "encode",
            format!("failed to encode the transaction: {error}"),
        )
    })?;
    let answer = client.post(
        "/v1/transactions",
        &json!({ "transaction": hex::encode(bytes) }),
    )?;
    let hash = answer["hash"]
        .as_str()
        .ok_or_else(|| client.bad_answer("/v1/transactions", "no hash"))?
        .to_owned();
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
    let height = wait_for(client, &hash)?;
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

/// Polls the transaction's status until it is in a block (its height) or
/// cannot be any more.
fn wait_for(client: &Client, hash: &str) -> Result<u64, Failure> {
    let path = format!("/v1/transactions/{hash}");
    let deadline = Instant::now() + WAIT_TIMEOUT;
    loop {
        let answer = client.get(&path)?;
        let rejected = || Failure::Refused {
            code: answer["rejected"]["code"]
                .as_str()
                .unwrap_or("rejected")
                .to_owned(),
            message: answer["rejected"]["message"]
                .as_str()
                .unwrap_or("the transaction did not apply")
                .to_owned(),
        };
        match answer["status"].as_str() {
            Some("included") if answer["rejected"].is_object() => return Err(rejected()),
            Some("included") => {
                return answer["height"].as_u64().ok_or_else(|| {
                    client.bad_answer(&path, "an included transaction without a height")
                });
            }
            Some("dropped") => return Err(rejected()),
            Some("pending" | "unknown") => {}
            _ => return Err(client.bad_answer(&path, "no status")),
        }
        if Instant::now() >= deadline {
            return Err(Failure::failed(
                "timed_out",
                format!(
                    "transaction {hash} was not included within {} s; it may still be",
                    WAIT_TIMEOUT.as_secs()
                ),
            ));
        }
        std::thread::sleep(WAIT_POLL_INTERVAL);
    }
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

/// A JSON client for one validator's API.
struct Client {
    base: String,
    agent: ureq::Agent,
}

impl Client {
    fn new(base: &str) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(REQUEST_TIMEOUT))
            .build()
            .new_agent();
        Self {
            base: base.trim_end_matches('/').to_owned(),
            agent,
        }
    }

    fn get(&self, path: &str) -> Result<Value, Failure> {
        let answer = self.agent.get(format!("{}{path}", self.base)).call();
        self.answer(path, answer)
    }

    fn post(&self, path: &str, body: &Value) -> Result<Value, Failure> {
        let answer = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(body);
        self.answer(path, answer)
    }

    /// A 2xx answer's JSON, or the error it carries.
    fn answer(
        &self,
        path: &str,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, Failure> {
        let response = answer.map_err(|error| {
            Failure::failed(
                "unreachable",
                format!("could not reach the node at {}: {error}", self.base),
            )
        })?;
        let status = response.status();
        let body: Value = response
            .into_body()
            .read_json()
            .map_err(|_| self.bad_answer(path, &format!("HTTP {status} without a JSON body")))?;
        if status.is_success() {
            return Ok(body);
        }
        match (
            body["error"]["code"].as_str(),
            body["error"]["message"].as_str(),
        ) {
            (Some(code), Some(message)) => Err(Failure::Refused {
                code: code.to_owned(),
                message: message.to_owned(),
            }),
            _ => Err(self.bad_answer(path, &format!("HTTP {status} without an error"))),
        }
    }

    fn bad_answer(&self, path: &str, what: &str) -> Failure {
        Failure::failed(
            "bad_answer",
            format!("the node at {}{path} answered {what}", self.base),
        )
    }
}
