//! How the commands that talk to a node (`wallet`, `status`, `jobs`) fail:
//! a snake_case code for scripts, a message for people, what to do about
//! it, and an exit status.

use std::process::ExitCode;

use idlegrid_api::client::ApiError;
use idlegrid_node::KeyError;
use serde_json::{Map, Value, json};

use crate::resolve;

/// The node refused the request, or the ledger would not do it.
pub const EXIT_REFUSED: u8 = 1;
/// (clap's) the command line was wrong.
pub const _EXIT_USAGE: u8 = 2;
/// The command could not finish: the node is unreachable or answered
/// nonsense, the key file is unusable, or a wait timed out.
pub const EXIT_FAILED: u8 = 3;

/// Why a command failed.
#[derive(Debug)]
pub struct Failure {
    /// The node or the ledger said no (exit 1), rather than the command
    /// failing to ask (exit 3).
    refused: bool,
    code: String,
    message: String,
    hint: Option<String>,
    /// More fields for the `--json` object, beside `error`.
    details: Map<String, Value>,
}

impl Failure {
    /// The node or the ledger said no.
    pub fn refused(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            refused: true,
            code: code.into(),
            message: message.into(),
            hint: None,
            details: Map::new(),
        }
    }

    /// The command could not finish.
    pub fn failed(code: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            refused: false,
            ..Self::refused(code, message)
        }
    }

    pub fn with_hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// Adds `key` to the `--json` object (beside `error`).
    pub fn with_detail(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_owned(), value.into());
        self
    }

    /// A key file that could not be used.
    pub fn key(error: &KeyError) -> Self {
        let failure = Self::failed("key_file", error.to_string());
        match resolve::key_hint(error) {
            Some(hint) => failure.with_hint(hint),
            None => failure,
        }
    }

    /// Prints the failure (one line on stderr; with `json`, also one object
    /// on stdout) and gives the exit status.
    pub fn report(self, json: bool) -> ExitCode {
        let mut line = if self.refused {
            format!("error: {}: {}", self.code, self.message)
        } else {
            format!("error: {}", self.message)
        };
        if let Some(hint) = &self.hint {
            line.push_str("; ");
            line.push_str(hint);
        }
        eprintln!("{line}");
        let exit = if self.refused {
            EXIT_REFUSED
        } else {
            EXIT_FAILED
        };
        if json {
            let mut error = json!({ "code": self.code, "message": self.message });
            if let Some(hint) = self.hint {
                error["hint"] = hint.into();
            }
            let mut object = self.details;
            object.insert("error".to_owned(), error);
            println!("{}", Value::Object(object));
        }
        ExitCode::from(exit)
    }
}

impl From<ApiError> for Failure {
    fn from(error: ApiError) -> Self {
        let hint = resolve::api_hint(&error);
        let failure = match error {
            ApiError::Refused { code, message } => Self::refused(code, message),
            other => Self::failed(other.code().to_owned(), other.to_string()),
        };
        match hint {
            Some(hint) => failure.with_hint(hint),
            None => failure,
        }
    }
}
