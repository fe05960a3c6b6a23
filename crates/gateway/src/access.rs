//! Who may use a gateway's job service, and how much: open to anyone, or
//! API keys from a file, each with its own limits (jobs at once, tasks per
//! job, bytes uploaded per hour). A request without a known key does
//! nothing and gets `401`; a limit reached gets `429` with `Retry-After`
//! (or `413` for a job with more tasks than its key may submit, which no
//! wait would change).
//!
//! The key file is TOML:
//!
//! ```toml
//! [[key]]
//! name = "alice"
//! token = "a long random string"
//! jobs_at_once = 2                    # default 4
//! tasks_per_job = 10000               # default 100000
//! upload_bytes_per_hour = 1073741824  # default 1 GiB
//! ```

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use axum::http::{HeaderMap, header};
use serde::Deserialize;

use crate::refusal::Refusal;

/// Jobs one caller may have unsigned, opening or running at once, by default.
pub const JOBS_AT_ONCE_DEFAULT: u32 = 4;
/// Tasks one job may have, by default.
pub const TASKS_PER_JOB_DEFAULT: u64 = 100_000;
/// Bytes one caller may upload in an hour, by default.
pub const UPLOAD_BYTES_PER_HOUR_DEFAULT: u64 = 1 << 30;
/// Shortest token accepted in a key file.
pub const TOKEN_CHARS_MIN: usize = 16;
/// Most keys in a key file.
pub const KEYS_MAX: usize = 10_000;
/// Largest key file read, bytes.
const KEY_FILE_BYTES_MAX: u64 = 4 << 20;
/// The window uploads are counted over.
const UPLOAD_WINDOW: Duration = Duration::from_secs(3600);
/// Uploads remembered per caller at most (older ones are merged).
const UPLOADS_REMEMBERED_MAX: usize = 4_096;
/// What `Retry-After` says when a caller has as many jobs as it may: about
/// how often a job's state is worth asking for.
pub const JOB_SLOT_RETRY_SECS: u64 = 5;

/// One caller's limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    pub jobs_at_once: u32,
    pub tasks_per_job: u64,
    pub upload_bytes_per_hour: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            jobs_at_once: JOBS_AT_ONCE_DEFAULT,
            tasks_per_job: TASKS_PER_JOB_DEFAULT,
            upload_bytes_per_hour: UPLOAD_BYTES_PER_HOUR_DEFAULT,
        }
    }
}

/// Who made a request: a key's name (empty on an open gateway) and its
/// limits.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub limits: Limits,
}

/// Who may use the job service.
#[derive(Debug, Clone, Default)]
pub enum Access {
    /// Anyone, under the default limits (all callers count as one).
    #[default]
    Open,
    /// Holders of these keys (by token), each under its own limits.
    Keys(HashMap<String, Caller>),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KeyFile {
    #[serde(default)]
    key: Vec<RawKey>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKey {
    name: String,
    token: String,
    jobs_at_once: Option<u32>,
    tasks_per_job: Option<u64>,
    upload_bytes_per_hour: Option<u64>,
}

impl Access {
    /// Reads a key file (see the module's documentation).
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let file = std::fs::File::open(path)
            .with_context(|| format!("failed to read the key file {}", path.display()))?;
        let mut text = String::new();
        std::io::Read::read_to_string(
            &mut std::io::Read::take(file, KEY_FILE_BYTES_MAX + 1),
            &mut text,
        )
        .with_context(|| format!("failed to read the key file {}", path.display()))?;
        if text.len() as u64 > KEY_FILE_BYTES_MAX {
            bail!(
                "the key file {} is above {KEY_FILE_BYTES_MAX} bytes",
                path.display()
            );
        }
        Self::parse(&text).with_context(|| format!("in the key file {}", path.display()))
    }

    /// Checks a key file's text.
    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let file: KeyFile = toml::from_str(text).map_err(|error| anyhow::anyhow!("{error}"))?;
        if file.key.is_empty() {
            bail!("no [[key]] entries: a keyed gateway needs at least one key");
        }
        if file.key.len() > KEYS_MAX {
            bail!("{} keys, above the limit of {KEYS_MAX}", file.key.len());
        }
        let mut keys = HashMap::new();
        let mut names = std::collections::HashSet::new();
        for raw in file.key {
            if raw.name.is_empty() {
                bail!("a key has an empty name");
            }
            if raw.token.chars().count() < TOKEN_CHARS_MIN
                || raw.token.contains(char::is_whitespace)
            {
                bail!(
                    "key {:?}: a token is at least {TOKEN_CHARS_MIN} characters, without spaces",
                    raw.name
                );
            }
            if !names.insert(raw.name.clone()) {
                bail!("two keys are named {:?}", raw.name);
            }
            let default = Limits::default();
            let limits = Limits {
                jobs_at_once: raw.jobs_at_once.unwrap_or(default.jobs_at_once),
                tasks_per_job: raw.tasks_per_job.unwrap_or(default.tasks_per_job),
                upload_bytes_per_hour: raw
                    .upload_bytes_per_hour
                    .unwrap_or(default.upload_bytes_per_hour),
            };
            let caller = Caller {
                name: raw.name.clone(),
                limits,
            };
            if keys.insert(raw.token, caller).is_some() {
                bail!("key {:?} has the same token as another key", raw.name);
            }
        }
        Ok(Access::Keys(keys))
    }

    /// Who sent `headers`: `401` without a known `Authorization: Bearer`
    /// token on a keyed gateway.
    pub fn caller(&self, headers: &HeaderMap) -> Result<Caller, Refusal> {
        let keys = match self {
            Access::Open => {
                return Ok(Caller {
                    name: String::new(),
                    limits: Limits::default(),
                });
            }
            Access::Keys(keys) => keys,
        };
        let token = headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| value.strip_prefix("Bearer "))
            .map(str::trim);
        let Some(token) = token else {
            return Err(Refusal::unauthorized(
                "this gateway takes jobs from API keys: send `Authorization: Bearer <token>`",
            ));
        };
        // Every known token is compared in full, so the time taken does
        // not say how much of a guess was right.
        let mut found = None;
        for (known, caller) in keys {
            if constant_time_eq(known.as_bytes(), token.as_bytes()) {
                found = Some(caller);
            }
        }
        found
            .cloned()
            .ok_or_else(|| Refusal::unauthorized("the API key is not one this gateway knows"))
    }

    pub fn is_open(&self) -> bool {
        matches!(self, Access::Open)
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    if a.len() != b.len() {
        return false;
    }
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Bytes each caller uploaded in the last hour.
#[derive(Debug, Default)]
pub struct Uploads {
    by_caller: Mutex<HashMap<String, VecDeque<(Instant, u64)>>>,
}

impl Uploads {
    /// Counts `bytes` more for `caller` at `now`, or refuses with when it
    /// may upload them.
    pub fn take(&self, caller: &Caller, bytes: u64, now: Instant) -> Result<(), Refusal> {
        let limit = caller.limits.upload_bytes_per_hour;
        if bytes > limit {
            return Err(Refusal::too_large(
                "upload_too_large",
                format!("{bytes} bytes is more than this key may upload in an hour ({limit})"),
            ));
        }
        let mut by_caller = self
            .by_caller
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let uploads = by_caller.entry(caller.name.clone()).or_default();
        while uploads
            .front()
            .is_some_and(|(at, _)| now.duration_since(*at) >= UPLOAD_WINDOW)
        {
            uploads.pop_front();
        }
        let used: u64 = uploads.iter().map(|(_, size)| size).sum();
        if used.saturating_add(bytes) > limit {
            // Wait until enough of the window's uploads have aged out.
            let mut freed = used;
            let mut wait = UPLOAD_WINDOW;
            for (at, size) in uploads.iter() {
                freed -= size;
                if freed.saturating_add(bytes) <= limit {
                    wait = UPLOAD_WINDOW.saturating_sub(now.duration_since(*at));
                    break;
                }
            }
            return Err(Refusal::quota(
                format!(
                    "this key uploaded {used} bytes in the last hour; {bytes} more would pass its limit of {limit}"
                ),
                wait.as_secs().max(1),
            ));
        }
        if uploads.len() >= UPLOADS_REMEMBERED_MAX
            && let Some((_, size)) = uploads.pop_front()
            && let Some(next) = uploads.front_mut()
        {
            // The oldest two become one, at the later time: counted longer,
            // never less.
            next.1 += size;
        }
        uploads.push_back((now, bytes));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(token: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(
            header::AUTHORIZATION,
            format!("Bearer {token}").parse().expect("header"),
        );
        headers
    }

    #[test]
    fn key_files_are_checked_and_callers_found_by_token() {
        let access = Access::parse(
            "[[key]]\nname = \"alice\"\ntoken = \"alice-token-0123456789\"\njobs_at_once = 1\n\
             [[key]]\nname = \"bob\"\ntoken = \"bob-token-0123456789ab\"\n",
        )
        .expect("parses");
        let alice = access
            .caller(&headers("alice-token-0123456789"))
            .expect("alice");
        assert_eq!(alice.name, "alice");
        assert_eq!(alice.limits.jobs_at_once, 1);
        assert_eq!(alice.limits.tasks_per_job, TASKS_PER_JOB_DEFAULT);
        let refused = access
            .caller(&headers("alice-token-012345678X"))
            .expect_err("a wrong token");
        assert_eq!(
            (refused.status.as_u16(), refused.code),
            (401, "unauthorized")
        );
        let refused = access.caller(&HeaderMap::new()).expect_err("no token");
        assert_eq!(refused.status.as_u16(), 401);

        for (text, problem) in [
            ("", "at least one key"),
            ("[[key]]\nname = \"a\"\ntoken = \"short\"\n", "at least 16"),
            (
                "[[key]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n[[key]]\nname = \"a\"\ntoken = \"0123456789abcdeg\"\n",
                "two keys",
            ),
            (
                "[[key]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\n[[key]]\nname = \"b\"\ntoken = \"0123456789abcdef\"\n",
                "same token",
            ),
            (
                "[[key]]\nname = \"a\"\ntoken = \"0123456789abcdef\"\nspeed = 3\n",
                "unknown field",
            ),
        ] {
            let error = Access::parse(text).expect_err(text);
            assert!(format!("{error:#}").contains(problem), "{text}: {error:#}");
        }
    }

    #[test]
    fn uploads_are_limited_per_hour_and_say_when_to_retry() {
        let caller = Caller {
            name: "alice".to_owned(),
            limits: Limits {
                upload_bytes_per_hour: 1_000,
                ..Limits::default()
            },
        };
        let uploads = Uploads::default();
        let start = Instant::now();
        uploads.take(&caller, 600, start).expect("within");
        let later = start + Duration::from_secs(600);
        uploads.take(&caller, 300, later).expect("within");
        let refused = uploads
            .take(&caller, 200, later + Duration::from_secs(1))
            .expect_err("over");
        assert_eq!(refused.status.as_u16(), 429);
        // The first upload leaves the window 3,600 s after it was made.
        assert_eq!(refused.retry_after, Some(2_999));
        uploads
            .take(&caller, 200, start + UPLOAD_WINDOW)
            .expect("the first upload aged out");
        assert_eq!(
            uploads
                .take(&caller, 1_001, start + UPLOAD_WINDOW)
                .expect_err("never fits")
                .status
                .as_u16(),
            413
        );
        // Another caller has its own window.
        let bob = Caller {
            name: "bob".to_owned(),
            ..caller
        };
        uploads.take(&bob, 1_000, later).expect("bob's own");
    }
}
