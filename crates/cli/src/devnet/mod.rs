//! `idlegrid devnet`: the whole network in one process, with the dashboard.

mod network;

use std::path::PathBuf;
use std::process::ExitCode;

use self::network::{DevnetConfig, DevnetNotice, DevnetReady, run_devnet};
use anyhow::Context;
use clap::Args;
use serde_json::json;
use tokio::sync::mpsc;

use crate::compute::shutdown_signal;

/// Start a whole network on this machine: one validator, three providers
/// (one deliberately slower, so placement by speed is visible), a gateway
/// and the dashboard, with funded accounts and no configuration.
///
/// State lives in --dir; a second run resumes the chain, --reset starts
/// over. Ctrl-C stops everything cleanly: providers redeem their vouchers
/// first. With --demo it also submits a Mandelbrot job, one task per tile,
/// and writes the image when every tile is verified.
#[derive(Debug, Args)]
#[command(after_help = "Examples:
  idlegrid devnet --demo           # then open http://127.0.0.1:8080
  idlegrid devnet --reset --port 9090")]
pub struct DevnetArgs {
    /// Where the devnet keeps its chain, keys and results.
    #[arg(long, value_name = "DIR", default_value = ".idlegrid")]
    dir: PathBuf,
    /// The dashboard's port on 127.0.0.1 (the gateway's API is there too, under /v1).
    #[arg(long, default_value_t = 8080)]
    port: u16,
    /// Delete the devnet's state first and start a new chain.
    #[arg(long)]
    reset: bool,
    /// Submit the demo job (Mandelbrot tiles) and write its image.
    #[arg(long)]
    demo: bool,
    /// Print one JSON object per event (ready, demo_done, demo_failed, stopped).
    #[arg(long)]
    json: bool,
    /// Take HTTP jobs only from the API keys in this file (docs/http-jobs.md);
    /// without it, the devnet's gateway takes them from anyone on this machine.
    #[arg(long, value_name = "FILE")]
    api_keys: Option<PathBuf>,
}

pub fn run(args: DevnetArgs) -> ExitCode {
    match run_devnet_command(&args) {
        Ok(code) => code,
        Err(error) => {
            if args.json {
                println!(
                    "{}",
                    json!({ "event": "error", "error": format!("{error:#}") })
                );
            } else {
                eprintln!("error: {error:#}");
            }
            ExitCode::from(3)
        }
    }
}

fn run_devnet_command(args: &DevnetArgs) -> anyhow::Result<ExitCode> {
    let config = DevnetConfig {
        dir: args.dir.clone(),
        port: args.port,
        reset: args.reset,
        demo: args.demo,
        access: match &args.api_keys {
            Some(file) => idlegrid_gateway::Access::load(file)?,
            None => idlegrid_gateway::Access::Open,
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("failed to start the async runtime")?;
    let json = args.json;
    let demo_failed = runtime.block_on(async move {
        let (notices_tx, mut notices) = mpsc::unbounded_channel();
        let devnet = tokio::spawn(run_devnet(config, notices_tx, shutdown_signal()));
        let mut demo_failed = false;
        while let Some(notice) = notices.recv().await {
            match notice {
                DevnetNotice::Ready(ready) => print_ready(&ready, json),
                DevnetNotice::DemoDone { image, report } => {
                    if json {
                        println!(
                            "{}",
                            json!({
                                "event": "demo_done",
                                "image": image.display().to_string(),
                                "job": report.job,
                                "tasks": report.tasks_total,
                                "accepted": report.accepted,
                                "paid": report.paid,
                                "fuel_executed": report.fuel_executed,
                                "providers": report.providers,
                                "elapsed_ms": report.elapsed_ms,
                            })
                        );
                    } else {
                        println!(
                            "demo: {} tiles verified by {} providers in {:.1} s, {} tokens paid; image written to {}",
                            report.accepted,
                            report.providers.len(),
                            report.elapsed_ms as f64 / 1000.0,
                            report.paid,
                            image.display()
                        );
                        for (provider, record) in &report.providers {
                            println!(
                                "  {provider}  {} results · paid {}",
                                record.results, record.paid
                            );
                        }
                        println!("Ctrl-C stops the devnet.");
                    }
                }
                DevnetNotice::DemoFailed(error) => {
                    demo_failed = true;
                    if json {
                        println!("{}", json!({ "event": "demo_failed", "error": error }));
                    } else {
                        eprintln!("demo: failed: {error}");
                    }
                }
            }
        }
        let summary = devnet.await.context("the devnet failed")??;
        if json {
            let providers: Vec<_> = summary
                .providers
                .iter()
                .map(|(account, done)| {
                    json!({
                        "account": account.to_string(),
                        "tasks_done": done.tasks_done,
                        "fuel_used": done.fuel_used,
                        "earned": done.earned,
                        "unredeemed": done.unredeemed,
                    })
                })
                .collect();
            println!("{}", json!({ "event": "stopped", "providers": providers }));
        } else {
            println!("devnet stopped");
            for (account, done) in &summary.providers {
                println!(
                    "  {account}  {} tasks · earned {} · unredeemed {}",
                    done.tasks_done, done.earned, done.unredeemed
                );
            }
        }
        anyhow::Ok(demo_failed)
    })?;
    // The validator's threads do not stop on their own; the ledger is
    // committed block by block, so leaving now loses nothing.
    Ok(if demo_failed {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

fn print_ready(ready: &DevnetReady, json: bool) {
    let dashboard = format!("http://{}", ready.dashboard);
    let gateway = ready
        .gateway_addresses
        .first()
        .map(ToString::to_string)
        .unwrap_or_default();
    let key = ready.requestor_key.display();
    let submit = format!(
        "idlegrid submit examples/pi/job.toml --node {dashboard} --key {key} --bootstrap {gateway} --no-mdns"
    );
    if json {
        println!(
            "{}",
            json!({
                "event": "ready",
                "dir": ready.dir.display().to_string(),
                "resumed": ready.resumed,
                "height": ready.height,
                "dashboard": dashboard,
                "validator": ready.validator.to_string(),
                "validator_api": format!("http://{}", ready.validator_api),
                "gateway": ready.gateway.to_string(),
                "gateway_addresses": ready.gateway_addresses.iter().map(ToString::to_string).collect::<Vec<_>>(),
                "providers": ready.providers.iter().map(|provider| json!({
                    "account": provider.account.to_string(),
                    "label": provider.label,
                    "cores": provider.cores,
                    "benchmark_fuel_per_second": provider.benchmark_fuel_per_second,
                    "gpu": provider.gpu,
                })).collect::<Vec<_>>(),
                "requestor_key": key.to_string(),
                "try": submit,
            })
        );
        return;
    }
    if ready.resumed {
        println!(
            "idlegrid devnet: resumed the chain in {} at height {}",
            ready.dir.display(),
            ready.height
        );
    } else {
        println!("idlegrid devnet: a new chain in {}", ready.dir.display());
    }
    println!();
    println!("  dashboard   {dashboard}");
    println!(
        "  validator   {}  API http://{}",
        ready.validator, ready.validator_api
    );
    println!("  gateway     {gateway}");
    for provider in &ready.providers {
        let gpu = provider
            .gpu
            .as_ref()
            .map(|gpu| format!(", GPU {gpu}"))
            .unwrap_or_default();
        println!(
            "  {:<22}{}  {} core, {:.0} Mfuel/s{gpu}",
            provider.label,
            provider.account,
            provider.cores,
            provider.benchmark_fuel_per_second as f64 / 1e6
        );
    }
    println!("  requestor   {key} (funded)");
    println!();
    println!("Next: open {dashboard}, or run a job of your own:");
    println!("  {submit}");
    if ready
        .providers
        .iter()
        .any(|provider| provider.gpu.is_some())
    {
        println!("or one of GPU tasks:");
        println!(
            "  {}",
            submit.replace("examples/pi/job.toml", "examples/mandelbrot-gpu/job.toml")
        );
    }
    println!("Ctrl-C stops everything (providers redeem their vouchers first).");
}
