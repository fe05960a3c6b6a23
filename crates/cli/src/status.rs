//! `idlegrid status`: the network and the ledger at a glance, from one
//! node's API (a validator's, or a gateway's).

use std::process::ExitCode;

use clap::Args;
use idlegrid_api::JOBS_LIMIT_MAX;
use idlegrid_api::client::{ApiClient, ApiError};
use serde_json::{Value, json};

use crate::failure::Failure;
use crate::resolve;

/// The most entries of one list (validators, peers, providers) the human
/// output shows; `--json` has them all.
const LIST_SHOWN_MAX: usize = 10;

/// Show the chain, its validators and providers, and the open jobs.
///
/// Asks one node's API: a validator's, or a gateway's (which answers as
/// its validator does, and also for itself: its peers and the providers
/// whose offers it has seen).
///
/// JSON: {"node", "chain_id", "validator", "height", "finalized_height",
/// "epoch", "state_root", "minimum_fee", "mempool": {"transactions",
/// "bytes"}, "validators": [{"account", "stake"}], "peers": [{"account",
/// "last_seen_ms"}], "providers": [{"account", "stake"}], "open_jobs",
/// "open_jobs_truncated", "gateway"}; "gateway" is null for a validator,
/// else {"account", "addresses", "peers", "node", "providers": [{"account",
/// "online", "stake", "cores", "benchmark_fuel_per_second", …}]}.
///
/// Exit status: 0 done; 1 the node refused; 3 the node is unreachable or
/// answered nonsense.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid status
  idlegrid status --node http://127.0.0.1:8080    # a gateway, such as the devnet's
  idlegrid status --json")]
pub struct StatusArgs {
    /// A validator's or gateway's HTTP API [default: $IDLEGRID_NODE, else
    /// http://127.0.0.1:7700].
    #[arg(long, value_name = "URL")]
    node: Option<String>,
    /// Print one JSON object on stdout.
    #[arg(long)]
    json: bool,
}

pub fn run(args: StatusArgs) -> ExitCode {
    let client = ApiClient::new(&resolve::node_url(args.node.as_deref()));
    match gather(&client) {
        Ok(status) => {
            if args.json {
                println!("{status}");
            } else {
                print_human(&status);
            }
            ExitCode::SUCCESS
        }
        Err(failure) => failure.report(args.json),
    }
}

/// Everything `status` shows, as its `--json` object.
fn gather(client: &ApiClient) -> Result<Value, Failure> {
    let status = client.status()?;
    let providers = client.get("/v1/providers")?;
    let open = client.get(&format!("/v1/jobs?status=open&limit={JOBS_LIMIT_MAX}"))?;
    let open_jobs = open["jobs"].as_array().map_or(0, Vec::len);
    let gateway = match client.get("/v1/gateway") {
        Ok(mut gateway) => {
            let seen = client.get("/v1/network")?;
            gateway["providers"] = seen["providers"].clone();
            gateway
        }
        // A validator has no such route.
        Err(ApiError::Refused { code, .. }) if code == "not_found" => Value::Null,
        Err(error) => return Err(error.into()),
    };
    let field = |key: &str| status[key].clone();
    Ok(json!({
        "node": client.base(),
        "chain_id": field("chain_id"),
        "validator": field("validator"),
        "height": field("height"),
        "finalized_height": field("finalized_height"),
        "epoch": field("epoch"),
        "state_root": field("state_root"),
        "minimum_fee": field("minimum_fee"),
        "mempool": field("mempool"),
        "validators": list(&status["validators"]),
        "peers": list(&status["peers"]),
        "providers": list(&providers["providers"]),
        "open_jobs": open_jobs,
        "open_jobs_truncated": open_jobs >= JOBS_LIMIT_MAX,
        "gateway": gateway,
    }))
}

/// `value` when it is a list, else an empty one.
fn list(value: &Value) -> Value {
    if value.is_array() {
        value.clone()
    } else {
        json!([])
    }
}

fn print_human(status: &Value) {
    let text = |value: &Value| match value {
        Value::String(text) => text.clone(),
        Value::Null => "?".to_owned(),
        other => other.to_string(),
    };
    let number = |value: &Value| value.as_u64().unwrap_or_default();
    let entries = |value: &Value| value.as_array().cloned().unwrap_or_default();

    println!("node        {}", text(&status["node"]));
    println!("chain       {}", text(&status["chain_id"]));
    println!(
        "height      {} (finalized {})",
        number(&status["height"]),
        number(&status["finalized_height"])
    );
    println!("epoch       {}", number(&status["epoch"]));
    println!(
        "mempool     {} transactions, {} bytes",
        number(&status["mempool"]["transactions"]),
        number(&status["mempool"]["bytes"])
    );
    let stakes = |title: &str, list: &Value| {
        let list = entries(list);
        println!("{title:<12}{}", list.len());
        print_some(&list, |entry| {
            format!(
                "  {}  stake {}",
                text(&entry["account"]),
                number(&entry["stake"])
            )
        });
    };
    stakes("validators", &status["validators"]);
    let peers = entries(&status["peers"]);
    println!("peers       {}", peers.len());
    print_some(&peers, |peer| {
        format!(
            "  {}  heard {:.1} s ago",
            text(&peer["account"]),
            number(&peer["last_seen_ms"]) as f64 / 1000.0
        )
    });
    stakes("providers", &status["providers"]);
    let plus = if status["open_jobs_truncated"] == true {
        "+"
    } else {
        ""
    };
    println!("open jobs   {}{plus}", number(&status["open_jobs"]));
    let gateway = &status["gateway"];
    if gateway.is_null() {
        return;
    }
    println!(
        "gateway     {}  {} peers, validator {}",
        text(&gateway["account"]),
        number(&gateway["peers"]),
        text(&gateway["node"])
    );
    print_some(&entries(&gateway["addresses"]), |address| {
        format!("  listening  {}", text(address))
    });
    let seen = entries(&gateway["providers"]);
    println!("  providers seen  {}", seen.len());
    print_some(&seen, |provider| {
        let state = if provider["online"] == true {
            "online"
        } else {
            "offline"
        };
        let mut line = format!(
            "    {}  {state}  stake {}",
            text(&provider["account"]),
            number(&provider["stake"])
        );
        if let Some(cores) = provider["cores"].as_u64() {
            line.push_str(&format!(
                ", {cores} cores, {:.0} Mfuel/s",
                number(&provider["benchmark_fuel_per_second"]) as f64 / 1e6
            ));
        }
        line
    });
}

/// Prints the first [`LIST_SHOWN_MAX`] entries, and how many more there are.
fn print_some(list: &[Value], line: impl Fn(&Value) -> String) {
    for entry in list.iter().take(LIST_SHOWN_MAX) {
        println!("{}", line(entry));
    }
    if list.len() > LIST_SHOWN_MAX {
        println!(
            "  … and {} more (--json lists them all)",
            list.len() - LIST_SHOWN_MAX
        );
    }
}
