//! The on-disk cache of compiled modules, keyed by module content id and the
//! engine settings that produced the machine code.

use std::hash::{Hash, Hasher};
use std::io::Write;
use std::path::{Path, PathBuf};

use idlegrid_types::ContentId;
use wasmtime::{Engine, Module};

use crate::error::SetupError;

/// Changes whenever the sandbox's compile profile changes in a way wasmtime's
/// own compatibility hash would not see.
const PROFILE_VERSION: &str = "idlegrid-deterministic-v6-counted-loops";
const CHECKSUM_BYTES: usize = 32;

pub(crate) struct DiskCache {
    dir: PathBuf,
    engine_tag: String,
}

impl DiskCache {
    /// `profile` names how the sandbox rewrites modules before compiling.
    pub fn open(dir: &Path, engine: &Engine, profile: &str) -> Result<Self, SetupError> {
        std::fs::create_dir_all(dir).map_err(|source| SetupError::CacheDir {
            path: dir.to_path_buf(),
            source,
        })?;
        // SipHash with fixed keys: stable across processes of the same build,
        // which is all a local cache key needs.
        let mut hasher = std::hash::DefaultHasher::new();
        engine.precompile_compatibility_hash().hash(&mut hasher);
        PROFILE_VERSION.hash(&mut hasher);
        profile.hash(&mut hasher);
        Ok(Self {
            dir: dir.to_path_buf(),
            engine_tag: format!("{:016x}", hasher.finish()),
        })
    }

    fn path(&self, cid: &ContentId) -> PathBuf {
        let hex_id = hex::encode(cid.as_bytes());
        self.dir.join(format!("{hex_id}-{}.cwasm", self.engine_tag))
    }

    /// The cached compilation of `cid`, if present and intact. A damaged entry
    /// is removed so the next call recompiles.
    pub fn load(&self, engine: &Engine, cid: &ContentId) -> Option<Module> {
        let path = self.path(cid);
        let stored = std::fs::read(&path).ok()?;
        let intact = stored.len() > CHECKSUM_BYTES && {
            let (checksum, artifact) = stored.split_at(CHECKSUM_BYTES);
            blake3::hash(artifact).as_bytes() == checksum
        };
        if !intact {
            tracing::warn!(path = %path.display(), "removing damaged compiled-module cache entry");
            let _ = std::fs::remove_file(&path);
            return None;
        }
        let artifact = &stored[CHECKSUM_BYTES..];
        #[expect(
            unsafe_code,
            reason = "the artifact was written by Module::serialize of this engine \
                      configuration into our own cache directory, and its checksum matches"
        )]
        // SAFETY: see the reason above; wasmtime also checks the artifact's
        // header against the engine before using it.
        let module = unsafe { Module::deserialize(engine, artifact) };
        match module {
            Ok(module) => Some(module),
            Err(error) => {
                tracing::warn!(path = %path.display(), %error, "ignoring unusable cache entry");
                let _ = std::fs::remove_file(&path);
                None
            }
        }
    }

    /// Saves a compiled module. Failing to cache is logged, not fatal.
    pub fn store(&self, cid: &ContentId, module: &Module) {
        let path = self.path(cid);
        let result = module
            .serialize()
            .map_err(|error| std::io::Error::other(error.to_string()))
            .and_then(|artifact| {
                let mut temporary = tempfile::NamedTempFile::new_in(&self.dir)?;
                temporary.write_all(blake3::hash(&artifact).as_bytes())?;
                temporary.write_all(&artifact)?;
                temporary.as_file().sync_all()?;
                temporary.persist(&path).map_err(|error| error.error)?;
                Ok(())
            });
        if let Err(error) = result {
            tracing::warn!(path = %path.display(), %error, "failed to cache compiled module");
        }
    }
}
