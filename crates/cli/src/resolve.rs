//! Where a command finds its node and its key when the command line does not
//! say, and what to tell the user when neither is there.

use std::path::{Path, PathBuf};

use anyhow::Context;
use idlegrid_api::client::ApiError;
use idlegrid_node::KeyError;

/// The node's API when neither `--node` nor `IDLEGRID_NODE` names one.
pub const NODE_DEFAULT: &str = "http://127.0.0.1:7700";

/// Where `idlegrid devnet` serves the API (its gateway) by default.
const DEVNET_API_DEFAULT: &str = "http://127.0.0.1:8080";

/// The node's HTTP API: `--node`, else `$IDLEGRID_NODE`, else [`NODE_DEFAULT`].
pub fn node_url(flag: Option<&str>) -> String {
    flag.map(str::to_owned)
        .or_else(|| std::env::var("IDLEGRID_NODE").ok())
        .unwrap_or_else(|| NODE_DEFAULT.to_owned())
}

/// `$IDLEGRID_HOME`, else `~/.idlegrid`.
pub fn idlegrid_home() -> anyhow::Result<PathBuf> {
    match std::env::var_os("IDLEGRID_HOME") {
        Some(home) => Ok(PathBuf::from(home)),
        None => std::env::var_os("HOME")
            .map(|home| PathBuf::from(home).join(".idlegrid"))
            .context("neither IDLEGRID_HOME nor HOME is set; name the key file with --key"),
    }
}

/// `--key`, else `$IDLEGRID_HOME/wallet.key`.
pub fn key_path(flag: Option<&Path>) -> anyhow::Result<PathBuf> {
    match flag {
        Some(path) => Ok(path.to_owned()),
        None => Ok(idlegrid_home()?.join("wallet.key")),
    }
}

/// What to do when the node at `base` does not answer.
pub fn unreachable_hint(base: &str) -> String {
    format!(
        "is a node running at {base}? Name another with --node URL or IDLEGRID_NODE, \
         or start a local network with `idlegrid devnet` (then --node {DEVNET_API_DEFAULT})"
    )
}

/// What to do when there is no key file at `path`.
pub fn missing_key_hint(path: &str) -> String {
    let is_default = key_path(None).is_ok_and(|default| default.as_os_str() == path);
    if is_default {
        "make a key with `idlegrid wallet new`, or name another key file with --key".to_owned()
    } else {
        format!(
            "make a key with `idlegrid wallet --key {path} new`, or name another key file with --key"
        )
    }
}

/// What to do about an API error, where there is something to do.
pub fn api_hint(error: &ApiError) -> Option<String> {
    match error {
        ApiError::Unreachable { base, .. } => Some(unreachable_hint(base)),
        _ => None,
    }
}

/// What to do about a key error, where there is something to do.
pub fn key_hint(error: &KeyError) -> Option<String> {
    match error {
        KeyError::Read { path, source } if source.kind() == std::io::ErrorKind::NotFound => {
            Some(missing_key_hint(path))
        }
        _ => None,
    }
}

/// A hint for the first cause in `error`'s chain that has one.
pub fn hint(error: &anyhow::Error) -> Option<String> {
    error.chain().find_map(|cause| {
        cause
            .downcast_ref::<ApiError>()
            .and_then(api_hint)
            .or_else(|| cause.downcast_ref::<KeyError>().and_then(key_hint))
    })
}

/// Reports `error` as one line on stderr (the causes, then what to do about
/// them), and with `json` also as `{"error": {"message", "hint"}}` on stdout.
pub fn report_error(error: &anyhow::Error, json: bool) {
    let hint = hint(error);
    match &hint {
        Some(hint) => eprintln!("error: {error:#}; {hint}"),
        None => eprintln!("error: {error:#}"),
    }
    if json {
        let mut object = serde_json::json!({ "message": format!("{error:#}") });
        if let Some(hint) = hint {
            object["hint"] = hint.into();
        }
        println!("{}", serde_json::json!({ "error": object }));
    }
}
