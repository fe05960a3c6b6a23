//! A blocking JSON client for a validator's HTTP API: how wallets,
//! providers and requestors read the ledger and send transactions.

use std::time::{Duration, Instant};

use idlegrid_ledger::{Transaction, TxKind};
use idlegrid_types::{AccountId, ErrorKind, JobId, Keypair, TaskOutcome, codec};
use serde_json::{Value, json};

/// How long one request to the node may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// How often [`ApiClient::wait_included`] asks.
const WAIT_POLL_INTERVAL: Duration = Duration::from_millis(100);
/// The fee when the node does not say what the chain's minimum is.
const FEE_DEFAULT: u64 = 1;

/// What a dispute's re-execution of a task gave, as the node reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub outcome: TaskOutcome,
    pub fuel_used: u64,
    /// The signers whose receipts differed from it, slashed by the dispute.
    pub wrong: Vec<AccountId>,
}

/// Why a call to the node failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApiError {
    #[error("could not reach the node at {base}: {message}")]
    Unreachable { base: String, message: String },
    /// The node answered with an error, or the transaction did not apply.
    #[error("{message}")]
    Refused { code: String, message: String },
    #[error("the node at {url} answered {what}")]
    BadAnswer { url: String, what: String },
    #[error("transaction {hash} was not included within {seconds} s; it may still be")]
    TimedOut { hash: String, seconds: u64 },
}

impl ApiError {
    /// A snake_case word for the failure, for `--json` output.
    pub fn code(&self) -> &str {
        match self {
            ApiError::Unreachable { .. } => "unreachable",
            ApiError::Refused { code, .. } => code,
            ApiError::BadAnswer { .. } => "bad_answer",
            ApiError::TimedOut { .. } => "timed_out",
        }
    }
}

/// A transaction the node accepted into its pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sent {
    pub hash: String,
    pub nonce: u64,
    pub fee: u64,
}

/// What the ledger holds for an account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct AccountState {
    pub balance: u64,
    pub next_nonce: u64,
    /// Bonded provider stake (what the market counts).
    pub provider_stake: u64,
    /// The provider's track record and what a slash would take.
    pub provider_record: ProviderRecordState,
}

/// A provider's track record on the ledger (`provider_record` in
/// `/v1/accounts/{account}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ProviderRecordState {
    pub fuel_paid: u64,
    pub jobs_paid: u64,
    pub disputes_lost: u64,
    /// What one slash would take from its stake now.
    pub slashable: u64,
    /// The speed it declared on the chain (0: none), in fuel per second on
    /// the capacity challenge.
    pub declared_fuel_per_second: u64,
    /// The speed the market may count on: the proven one, never above the
    /// declared one.
    pub usable_fuel_per_second: u64,
    /// The same two for its GPU, in fuel per second on the GPU challenge
    /// kernel (0: none declared).
    pub declared_gpu_fuel_per_second: u64,
    pub usable_gpu_fuel_per_second: u64,
}

/// One of a provider's open capacity challenges (`challenges` in
/// `/v1/accounts/{account}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChallengeState {
    pub epoch: u64,
    pub seed: [u8; 32],
    pub passes: u32,
    pub deadline_ms: u64,
    pub answered: bool,
    pub revealed: bool,
    pub settled: bool,
    pub may_reveal: bool,
}

/// One of a provider's open GPU challenges (`gpu_challenges` in
/// `/v1/accounts/{account}`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuChallengeState {
    pub epoch: u64,
    pub seed: [u8; 32],
    pub target: u64,
    pub deadline_ms: u64,
    pub answered: bool,
}

/// A provider's open challenges, CPU and GPU.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct OpenChallenges {
    pub cpu: Vec<ChallengeState>,
    pub gpu: Vec<GpuChallengeState>,
}

/// A job as the ledger holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobState {
    pub requestor: String,
    pub module: String,
    pub escrow: u64,
    pub price_per_million_fuel: u64,
    pub deadline_height: u64,
    pub open: bool,
    pub redeemed_total: u64,
    /// The most memory each of its tasks may use.
    pub memory_bytes: u64,
    /// Who runs it for the requestor, if someone does.
    pub agent: Option<String>,
}

impl JobState {
    /// Who places its tasks and signs its vouchers: the agent, or the
    /// requestor.
    pub fn runner(&self) -> &str {
        self.agent.as_deref().unwrap_or(&self.requestor)
    }
}

/// A JSON client for one validator's API.
#[derive(Debug, Clone)]
pub struct ApiClient {
    base: String,
    agent: ureq::Agent,
}

impl ApiClient {
    pub fn new(base: &str) -> Self {
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

    pub fn base(&self) -> &str {
        &self.base
    }

    pub fn get(&self, path: &str) -> Result<Value, ApiError> {
        let answer = self.agent.get(format!("{}{path}", self.base)).call();
        self.answer(path, answer)
    }

    pub fn post(&self, path: &str, body: &Value) -> Result<Value, ApiError> {
        let answer = self
            .agent
            .post(format!("{}{path}", self.base))
            .send_json(body);
        self.answer(path, answer)
    }

    /// `/v1/status`.
    pub fn status(&self) -> Result<Value, ApiError> {
        self.get("/v1/status")
    }

    /// The finalized height.
    pub fn height(&self) -> Result<u64, ApiError> {
        let status = self.status()?;
        status["height"]
            .as_u64()
            .ok_or_else(|| self.bad_answer("/v1/status", "no height"))
    }

    pub fn account(&self, account: &AccountId) -> Result<AccountState, ApiError> {
        let path = format!("/v1/accounts/{account}");
        let answer = self.get(&path)?;
        let number = |value: &Value, what: &str| {
            value
                .as_u64()
                .ok_or_else(|| self.bad_answer(&path, &format!("no {what}")))
        };
        Ok(AccountState {
            balance: number(&answer["balance"], "balance")?,
            next_nonce: number(&answer["next_nonce"], "next_nonce")?,
            provider_stake: number(&answer["provider_stake"]["bonded"], "provider stake")?,
            provider_record: ProviderRecordState {
                fuel_paid: number(&answer["provider_record"]["fuel_paid"], "fuel paid")?,
                jobs_paid: number(&answer["provider_record"]["jobs_paid"], "jobs paid")?,
                disputes_lost: number(
                    &answer["provider_record"]["disputes_lost"],
                    "disputes lost",
                )?,
                slashable: number(&answer["provider_record"]["slashable"], "slashable stake")?,
                declared_fuel_per_second: number(
                    &answer["provider_record"]["capacity"]["declared_fuel_per_second"],
                    "declared speed",
                )?,
                usable_fuel_per_second: number(
                    &answer["provider_record"]["capacity"]["usable_fuel_per_second"],
                    "usable speed",
                )?,
                declared_gpu_fuel_per_second: number(
                    &answer["provider_record"]["gpu_capacity"]["declared_fuel_per_second"],
                    "declared GPU speed",
                )?,
                usable_gpu_fuel_per_second: number(
                    &answer["provider_record"]["gpu_capacity"]["usable_fuel_per_second"],
                    "usable GPU speed",
                )?,
            },
        })
    }

    /// The account's open capacity challenges, CPU and GPU.
    pub fn challenges(&self, account: &AccountId) -> Result<OpenChallenges, ApiError> {
        let path = format!("/v1/accounts/{account}");
        let answer = self.get(&path)?;
        let bad = |what: &str| self.bad_answer(&path, &format!("a challenge has no {what}"));
        let seed = |item: &Value| {
            item["seed"]
                .as_str()
                .and_then(|text| hex::decode(text).ok())
                .and_then(|bytes| <[u8; 32]>::try_from(bytes).ok())
                .ok_or_else(|| bad("seed"))
        };
        let (Some(cpu), Some(gpu)) = (
            answer["challenges"].as_array(),
            answer["gpu_challenges"].as_array(),
        ) else {
            return Err(self.bad_answer(&path, "no challenges"));
        };
        let cpu = cpu
            .iter()
            .map(|item| {
                let flag = |key: &str| item[key].as_bool().ok_or_else(|| bad(key));
                Ok(ChallengeState {
                    epoch: item["epoch"].as_u64().ok_or_else(|| bad("epoch"))?,
                    seed: seed(item)?,
                    passes: item["passes"]
                        .as_u64()
                        .and_then(|passes| u32::try_from(passes).ok())
                        .ok_or_else(|| bad("passes"))?,
                    deadline_ms: item["deadline_ms"]
                        .as_u64()
                        .ok_or_else(|| bad("deadline"))?,
                    answered: flag("answered")?,
                    revealed: flag("revealed")?,
                    settled: flag("settled")?,
                    may_reveal: flag("may_reveal")?,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        let gpu = gpu
            .iter()
            .map(|item| {
                Ok(GpuChallengeState {
                    epoch: item["epoch"].as_u64().ok_or_else(|| bad("epoch"))?,
                    seed: seed(item)?,
                    target: item["target"].as_u64().ok_or_else(|| bad("target"))?,
                    deadline_ms: item["deadline_ms"]
                        .as_u64()
                        .ok_or_else(|| bad("deadline"))?,
                    answered: item["answered"].as_bool().ok_or_else(|| bad("answered"))?,
                })
            })
            .collect::<Result<_, ApiError>>()?;
        Ok(OpenChallenges { cpu, gpu })
    }

    /// The job, or `None` when the ledger has no such job.
    pub fn job(&self, job: &JobId) -> Result<Option<JobState>, ApiError> {
        let path = format!("/v1/jobs/{job}");
        let answer = match self.get(&path) {
            Ok(answer) => answer,
            Err(ApiError::Refused { code, .. }) if code == "not_found" => return Ok(None),
            Err(error) => return Err(error),
        };
        let text = |key: &str| {
            answer[key]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| self.bad_answer(&path, &format!("no {key}")))
        };
        let number = |key: &str| {
            answer[key]
                .as_u64()
                .ok_or_else(|| self.bad_answer(&path, &format!("no {key}")))
        };
        Ok(Some(JobState {
            requestor: text("requestor")?,
            module: text("module")?,
            escrow: number("escrow")?,
            price_per_million_fuel: number("price_per_million_fuel")?,
            deadline_height: number("deadline_height")?,
            open: answer["status"].as_str() == Some("open"),
            redeemed_total: number("redeemed_total")?,
            memory_bytes: answer["limits"]["memory_bytes"]
                .as_u64()
                .ok_or_else(|| self.bad_answer(&path, "no limits.memory_bytes"))?,
            agent: answer["agent"].as_str().map(str::to_owned),
        }))
    }

    /// Signs `kind` with the chain id and nonce the node reports and submits it.
    pub fn send(&self, key: &Keypair, kind: TxKind, fee: Option<u64>) -> Result<Sent, ApiError> {
        let nonce = self.account(&key.account_id())?.next_nonce;
        self.send_with_nonce(key, kind, fee, nonce)
    }

    /// As [`ApiClient::send`], with a nonce the caller keeps (several
    /// transactions in a row without waiting for each).
    pub fn send_with_nonce(
        &self,
        key: &Keypair,
        kind: TxKind,
        fee: Option<u64>,
        nonce: u64,
    ) -> Result<Sent, ApiError> {
        let status = self.status()?;
        let chain_id = status["chain_id"]
            .as_str()
            .ok_or_else(|| self.bad_answer("/v1/status", "no chain_id"))?;
        let fee = fee
            .or_else(|| status["minimum_fee"].as_u64())
            .unwrap_or(FEE_DEFAULT);
        let body = Transaction::new(chain_id, nonce, fee, kind)
            .map_err(|error| self.bad_answer("/v1/status", &format!("the chain id is {error}")))?;
        let signed = key.sign(body);
        let bytes = codec::encode(&signed).map_err(|error| ApiError::Refused {
            code: "encode".to_owned(),
            message: format!("failed to encode the transaction: {error}"),
        })?;
        let answer = self.post(
            "/v1/transactions",
            &json!({ "transaction": hex::encode(bytes) }),
        )?;
        let hash = answer["hash"]
            .as_str()
            .ok_or_else(|| self.bad_answer("/v1/transactions", "no hash"))?
            .to_owned();
        Ok(Sent { hash, nonce, fee })
    }

    /// What a finalized dispute's re-execution found: `None` when the
    /// transaction is not (yet) a dispute that applied.
    pub fn verdict(&self, hash: &str) -> Result<Option<Verdict>, ApiError> {
        let path = format!("/v1/transactions/{hash}");
        let answer = self.get(&path)?;
        let verdict = &answer["verdict"];
        if !verdict.is_object() {
            return Ok(None);
        }
        let bad = |what: &str| self.bad_answer(&path, what);
        let outcome = match (verdict["exit_code"].as_i64(), verdict["error"].as_str()) {
            (Some(exit_code), None) => TaskOutcome::Completed {
                exit_code: i32::try_from(exit_code)
                    .map_err(|_| bad("an exit code out of range"))?,
                output: verdict["output"]
                    .as_str()
                    .and_then(|text| text.parse().ok())
                    .ok_or_else(|| bad("a verdict without its output"))?,
            },
            (None, Some(error)) => TaskOutcome::Failed(
                ErrorKind::ALL
                    .into_iter()
                    .find(|kind| kind.as_str() == error)
                    .ok_or_else(|| bad("a verdict with an unknown error"))?,
            ),
            _ => return Err(bad("a verdict with neither an exit code nor an error")),
        };
        let wrong = verdict["wrong"]
            .as_array()
            .ok_or_else(|| bad("a verdict without `wrong`"))?
            .iter()
            .map(|account| account.as_str().and_then(|text| text.parse().ok()))
            .collect::<Option<Vec<AccountId>>>()
            .ok_or_else(|| bad("a verdict naming something that is not an account"))?;
        Ok(Some(Verdict {
            outcome,
            fuel_used: verdict["fuel_used"]
                .as_u64()
                .ok_or_else(|| bad("a verdict without fuel_used"))?,
            wrong,
        }))
    }

    /// Polls a transaction until it is in a block (its height) or cannot be
    /// any more (`Refused` with the ledger's or the pool's reason).
    pub fn wait_included(&self, hash: &str, timeout: Duration) -> Result<u64, ApiError> {
        let path = format!("/v1/transactions/{hash}");
        let deadline = Instant::now() + timeout;
        loop {
            let answer = self.get(&path)?;
            let rejected = || ApiError::Refused {
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
                        self.bad_answer(&path, "an included transaction without a height")
                    });
                }
                Some("dropped") => return Err(rejected()),
                Some("pending" | "unknown") => {}
                _ => return Err(self.bad_answer(&path, "no status")),
            }
            if Instant::now() >= deadline {
                return Err(ApiError::TimedOut {
                    hash: hash.to_owned(),
                    seconds: timeout.as_secs(),
                });
            }
            std::thread::sleep(WAIT_POLL_INTERVAL);
        }
    }

    /// A 2xx answer's JSON, or the error it carries.
    fn answer(
        &self,
        path: &str,
        answer: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ) -> Result<Value, ApiError> {
        let response = answer.map_err(|error| ApiError::Unreachable {
            base: self.base.clone(),
            message: error.to_string(),
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
            (Some(code), Some(message)) => Err(ApiError::Refused {
                code: code.to_owned(),
                message: message.to_owned(),
            }),
            _ => Err(self.bad_answer(path, &format!("HTTP {status} without an error"))),
        }
    }

    fn bad_answer(&self, path: &str, what: &str) -> ApiError {
        ApiError::BadAnswer {
            url: format!("{}{path}", self.base),
            what: what.to_owned(),
        }
    }
}
