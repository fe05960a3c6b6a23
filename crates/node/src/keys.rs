//! Key files: one ed25519 secret seed in hex, with the account it belongs
//! to in a comment line. Written only by their owner (mode 0600), never
//! overwritten.

use std::io::Write as _;
use std::path::Path;

use idlegrid_types::Keypair;

/// Why a key file could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("failed to read key file {path}: {source}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("key file {path} already exists; not overwriting a key")]
    Exists { path: String },
    #[error("failed to write key file {path}: {source}")]
    Write {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the operating system gave no randomness for a new key: {0}")]
    Random(String),
    #[error("key file {path} does not hold a 64-hex-digit secret seed")]
    Malformed { path: String },
}

/// A new key from the operating system's random source.
pub fn generate() -> Result<Keypair, KeyError> {
    let mut seed = [0u8; 32];
    getrandom::fill(&mut seed).map_err(|error| KeyError::Random(error.to_string()))?;
    Ok(Keypair::from_seed(seed))
}

/// Writes `key` to a new file at `path`.
pub fn write_key(path: &Path, key: &Keypair) -> Result<(), KeyError> {
    let shown = path.display().to_string();
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        std::fs::create_dir_all(parent).map_err(|source| KeyError::Write {
            path: shown.clone(),
            source,
        })?;
    }
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path).map_err(|source| {
        if source.kind() == std::io::ErrorKind::AlreadyExists {
            KeyError::Exists {
                path: shown.clone(),
            }
        } else {
            KeyError::Write {
                path: shown.clone(),
                source,
            }
        }
    })?;
    let text = format!(
        "# idlegrid secret key of {}\n{}\n",
        key.account_id(),
        hex::encode(key.seed())
    );
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(|source| KeyError::Write {
            path: shown,
            source,
        })
}

/// Reads the key at `path`.
pub fn read_key(path: &Path) -> Result<Keypair, KeyError> {
    let shown = path.display().to_string();
    let text = std::fs::read_to_string(path).map_err(|source| KeyError::Read {
        path: shown.clone(),
        source,
    })?;
    let line = text
        .lines()
        .map(str::trim)
        .find(|line| !line.is_empty() && !line.starts_with('#'))
        .unwrap_or_default();
    let mut seed = [0u8; 32];
    hex::decode_to_slice(line, &mut seed).map_err(|_| KeyError::Malformed { path: shown })?;
    Ok(Keypair::from_seed(seed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_round_trips_and_is_never_overwritten() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("keys/me.key");
        let key = Keypair::from_seed([9; 32]);
        write_key(&path, &key).expect("written");
        assert_eq!(read_key(&path).expect("read").seed(), key.seed());
        assert!(matches!(
            write_key(&path, &Keypair::from_seed([1; 32])),
            Err(KeyError::Exists { .. })
        ));
        std::fs::write(dir.path().join("bad.key"), "not hex\n").expect("write");
        assert!(matches!(
            read_key(&dir.path().join("bad.key")),
            Err(KeyError::Malformed { .. })
        ));
    }
}
