//! Object storage for a job: input files named by URL (`s3://bucket/key`
//! on any S3-compatible server, or `https://…`) are downloaded by the
//! requestor, with credentials from its own environment, and then served
//! by content id like any other input (providers never see a credential);
//! verified outputs can be written to a bucket (`[output] url`).
//!
//! S3 is addressed path-style (`endpoint/bucket/key`), so any
//! S3-compatible server works; credentials, and an endpoint or region the
//! job file does not give, come from the `AWS_*` environment variables.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use futures::StreamExt;
use object_store::aws::AmazonS3Builder;
use object_store::http::HttpBuilder;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

/// Where a job's object storage is: the job file's `[storage]`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Storage {
    /// The S3 endpoint (`http://127.0.0.1:9000`); the environment's or
    /// AWS's when absent.
    pub endpoint: Option<String>,
    pub region: Option<String>,
}

/// Whether a job file's file value names an object by URL rather than a
/// local path.
pub fn is_url(value: &str) -> bool {
    ["s3://", "https://", "http://"]
        .iter()
        .any(|scheme| value.starts_with(scheme))
}

/// An S3 bucket, path-style, at the job's endpoint.
fn s3(url: &str, bucket: &str, storage: &Storage) -> Result<Arc<dyn ObjectStore>, String> {
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(bucket)
        .with_virtual_hosted_style_request(false);
    if let Some(endpoint) = &storage.endpoint {
        builder = builder
            .with_allow_http(endpoint.starts_with("http://"))
            .with_endpoint(endpoint);
    }
    if let Some(region) = &storage.region {
        builder = builder.with_region(region);
    }
    let store = builder.build().map_err(|error| format!("{url}: {error}"))?;
    Ok(Arc::new(store))
}

/// The store an object URL lives in, and its path there.
fn open(url: &str, storage: &Storage) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
    if let Some(rest) = url.strip_prefix("s3://") {
        let (bucket, key) = rest
            .split_once('/')
            .filter(|(bucket, key)| !bucket.is_empty() && !key.is_empty())
            .ok_or_else(|| format!("{url}: an S3 URL is s3://BUCKET/KEY"))?;
        let path = ObjectPath::parse(key).map_err(|error| format!("{url}: {error}"))?;
        return Ok((s3(url, bucket, storage)?, path));
    }
    let after_scheme = url
        .split_once("://")
        .map(|(_, rest)| rest)
        .ok_or_else(|| format!("{url} is not a URL"))?;
    let (host, path) = after_scheme.split_once('/').unwrap_or((after_scheme, ""));
    let origin = &url[..url.len() - after_scheme.len() + host.len()];
    let store = HttpBuilder::new()
        .with_url(origin)
        .with_client_options(
            object_store::ClientOptions::new().with_allow_http(url.starts_with("http://")),
        )
        .build()
        .map_err(|error| format!("{url}: {error}"))?;
    let path = ObjectPath::parse(path).map_err(|error| format!("{url}: {error}"))?;
    Ok((Arc::new(store), path))
}

fn runtime() -> Result<tokio::runtime::Runtime, String> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("failed to start a runtime for object storage: {error}"))
}

/// Downloads the object at `url` into a new file in `dir`, streaming it
/// (at most `bytes_max` bytes): the file's path.
pub fn download(
    url: &str,
    storage: &Storage,
    dir: &Path,
    bytes_max: u64,
) -> Result<PathBuf, String> {
    let (store, path) = open(url, storage)?;
    std::fs::create_dir_all(dir)
        .map_err(|error| format!("failed to create {}: {error}", dir.display()))?;
    let name = idlegrid_types::ContentId::of(url.as_bytes()).to_string();
    let target = dir.join(name.trim_start_matches("b3:"));
    let mut file = std::io::BufWriter::new(
        std::fs::File::create(&target)
            .map_err(|error| format!("failed to create {}: {error}", target.display()))?,
    );
    runtime()?.block_on(async {
        let got = store
            .get(&path)
            .await
            .map_err(|error| format!("failed to read {url}: {error}"))?;
        if got.meta.size > bytes_max {
            return Err(format!(
                "{url} is {} bytes, above the limit of {bytes_max}",
                got.meta.size
            ));
        }
        let mut stream = got.into_stream();
        let mut written = 0u64;
        while let Some(piece) = stream.next().await {
            let piece = piece.map_err(|error| format!("failed to read {url}: {error}"))?;
            written += piece.len() as u64;
            if written > bytes_max {
                return Err(format!("{url} is above the limit of {bytes_max} bytes"));
            }
            file.write_all(&piece)
                .map_err(|error| format!("failed to write {}: {error}", target.display()))?;
        }
        file.flush()
            .map_err(|error| format!("failed to write {}: {error}", target.display()))
    })?;
    Ok(target)
}

/// Where verified outputs go: objects under a prefix.
#[derive(Debug)]
pub struct OutputTarget {
    store: Arc<dyn ObjectStore>,
    prefix: ObjectPath,
    url: String,
    /// Writes run on it: a target is used from a thread of its own, never
    /// from inside an async task.
    runtime: tokio::runtime::Runtime,
}

impl OutputTarget {
    /// Whether `url` is a target outputs can be written to (nothing is
    /// written, and nothing is asked of the server).
    pub fn check(url: &str, storage: &Storage) -> Result<(), String> {
        Self::store(url, storage).map(|_| ())
    }

    fn store(url: &str, storage: &Storage) -> Result<(Arc<dyn ObjectStore>, ObjectPath), String> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| format!("{url}: outputs are written to s3://BUCKET/PREFIX"))?;
        // The prefix may be empty: `s3://bucket` or `s3://bucket/`.
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        if bucket.is_empty() {
            return Err(format!("{url}: an S3 URL is s3://BUCKET/PREFIX"));
        }
        let prefix = ObjectPath::parse(prefix.trim_end_matches('/'))
            .map_err(|error| format!("{url}: {error}"))?;
        Ok((s3(url, bucket, storage)?, prefix))
    }

    /// The target for `url` (`s3://BUCKET/PREFIX`); nothing is written yet.
    /// Not from inside an async task: it holds a runtime of its own.
    pub fn open(url: &str, storage: &Storage) -> Result<Self, String> {
        let (store, prefix) = Self::store(url, storage)?;
        Ok(Self {
            store,
            prefix,
            url: url.to_owned(),
            runtime: runtime()?,
        })
    }

    fn path(&self, name: &str) -> ObjectPath {
        let mut path = self.prefix.clone();
        for part in name.split('/') {
            path = path.join(part);
        }
        path
    }

    /// Writes `bytes` as `NAME` under the prefix (`name` relative, with
    /// `/` between its parts).
    pub fn put(&self, name: &str, bytes: Vec<u8>) -> Result<(), String> {
        self.runtime
            .block_on(self.store.put(&self.path(name), PutPayload::from(bytes)))
            .map(|_| ())
            .map_err(|error| format!("failed to write {name} to {}: {error}", self.url))
    }

    /// Writes the file at `file` as `NAME` under the prefix, read a piece
    /// at a time (in parts, when large): never held whole in memory.
    pub fn put_file(&self, name: &str, file: &Path) -> Result<(), String> {
        use std::io::Read;
        use tokio::io::AsyncWrite;
        const PIECE_BYTES: usize = 8 << 20;
        let fail = |error: &dyn std::fmt::Display| {
            format!("failed to write {name} to {}: {error}", self.url)
        };
        let mut source = std::fs::File::open(file)
            .map_err(|error| format!("failed to read {}: {error}", file.display()))?;
        self.runtime.block_on(async {
            let mut writer =
                object_store::buffered::BufWriter::new(Arc::clone(&self.store), self.path(name));
            loop {
                let mut piece = vec![0u8; PIECE_BYTES];
                let mut filled = 0;
                while filled < piece.len() {
                    match source.read(&mut piece[filled..]) {
                        Ok(0) => break,
                        Ok(read) => filled += read,
                        Err(error) if error.kind() == std::io::ErrorKind::Interrupted => {}
                        Err(error) => {
                            let _ = writer.abort().await;
                            return Err(format!("failed to read {}: {error}", file.display()));
                        }
                    }
                }
                if filled == 0 {
                    break;
                }
                piece.truncate(filled);
                if let Err(error) = writer.put(piece.into()).await {
                    let _ = writer.abort().await;
                    return Err(fail(&error));
                }
            }
            std::future::poll_fn(|context| std::pin::Pin::new(&mut writer).poll_shutdown(context))
                .await
                .map_err(|error| fail(&error))
        })
    }
}
