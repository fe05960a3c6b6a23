//! A job given over HTTP as JSON, made a job file: the places where a job
//! file names a file name a blob here (by content id, or by an http(s)
//! URL the gateway fetches), and everything else is checked by
//! `JobFile::parse`, exactly as for `idlegrid submit`.

use idlegrid_requestor::JobFile;
use idlegrid_types::ContentId;
use serde_json::Value;

use crate::blobs::{BLOB_BYTES_MAX, BlobPin, BlobStore};
use crate::refusal::Refusal;

/// The bytes at `url`: at most [`BLOB_BYTES_MAX`], or `400 url_unreachable`.
pub(crate) fn fetch_url(http: &ureq::Agent, url: &str) -> Result<Vec<u8>, Refusal> {
    let failed = |why: String| Refusal::bad_request("url_unreachable", format!("{url}: {why}"));
    let response = http
        .get(url)
        .call()
        .map_err(|error| failed(error.to_string()))?;
    if !response.status().is_success() {
        return Err(failed(format!("answered {}", response.status())));
    }
    response
        .into_body()
        .with_config()
        .limit(BLOB_BYTES_MAX as u64)
        .read_to_vec()
        .map_err(|error| {
            failed(format!(
                "{error} (at most {BLOB_BYTES_MAX} bytes are taken)"
            ))
        })
}

/// The places in a job file that name files: here, blobs by content id
/// (`*`: every element of an array; `{}`: every value of a table).
const FILE_FIELDS: [&[&str]; 9] = [
    &["module"],
    &["tasks", "stdin_file"],
    &["tasks", "manifest"],
    &["task", "*", "stdin_file"],
    &["gpu", "kernel"],
    &["gpu", "binding", "*", "file"],
    &["files", "{}"],
    &["tasks", "files", "{}"],
    &["task", "*", "files", "{}"],
];

/// Checks a job given as JSON exactly as a job file: its blobs named by
/// content id (or fetched from a URL with `fetch`, and stored) become the
/// store's files, each pinned until the pins given with the job are
/// dropped, and the rest is the job file's own checks.
pub(crate) fn job_file(
    blobs: &BlobStore,
    mut job: serde_json::Map<String, Value>,
    fetch: &dyn Fn(&str) -> Result<Vec<u8>, Refusal>,
) -> Result<(JobFile, Vec<BlobPin>), Refusal> {
    let mut pins = Vec::new();
    // Object storage would be reached with the gateway's own credentials,
    // for whoever asks: a client reads its results over HTTP instead.
    for key in ["output", "storage"] {
        if job.contains_key(key) {
            return Err(invalid(format!(
                "`{key}`: a gateway does not reach object storage for its clients; \
                 read the outputs from GET /v1/jobs/{{job}}/results"
            )));
        }
    }
    // A folder here would be one of the gateway's, not the client's.
    if job
        .get("tasks")
        .and_then(|tasks| tasks.get("dir"))
        .is_some()
    {
        return Err(invalid(
            "`tasks.dir`: over HTTP a job's tasks are a range or a manifest (an uploaded blob \
             of lines), not a folder"
                .to_owned(),
        ));
    }
    for path in FILE_FIELDS {
        let mut found = Vec::new();
        collect(&mut job, path, &mut found);
        for value in found {
            let Value::String(name) = value else {
                return Err(invalid(format!(
                    "`{}` names a blob by content id (`b3:…`) or an http(s) URL",
                    path.join(".")
                )));
            };
            if name.starts_with("http://") || name.starts_with("https://") {
                let bytes = fetch(name)?;
                let (cid, _) = blobs.put(&bytes)?;
                pins.push(blobs.pin(&cid).ok_or_else(|| {
                    Refusal::internal(format!("{cid} was let go as soon as it was stored"))
                })?);
                *name = hex::encode(cid.as_bytes());
                continue;
            }
            let cid: ContentId = name.parse().map_err(|_| {
                invalid(format!(
                    "`{}` is {name:?}: over HTTP a file is an uploaded blob's content id (`b3:…`) or an http(s) URL",
                    path.join(".")
                ))
            })?;
            let Some(pin) = blobs.pin(&cid) else {
                return Err(Refusal::bad_request(
                    "unknown_blob",
                    format!("{cid} was not uploaded here (PUT /v1/blobs), or was since let go"),
                ));
            };
            pins.push(pin);
            *name = hex::encode(cid.as_bytes());
        }
    }
    let table: toml::Table = serde_json::from_value(Value::Object(job))
        .map_err(|error| invalid(format!("the job's fields do not fit a job file: {error}")))?;
    let text = toml::to_string(&table)
        .map_err(|error| invalid(format!("the job's fields do not fit a job file: {error}")))?;
    let job_file = JobFile::parse(&text, &blobs.dir().join("job.toml")).map_err(|error| {
        invalid(match error.problem() {
            Some(problem) => problem.to_string(),
            None => error.to_string(),
        })
    })?;
    Ok((job_file, pins))
}

pub(crate) fn invalid(message: String) -> Refusal {
    Refusal::bad_request("invalid_job", message)
}

/// The values at `path` in `value` (`*`: every element of an array).
fn collect<'a>(
    map: &'a mut serde_json::Map<String, Value>,
    path: &[&str],
    found: &mut Vec<&'a mut Value>,
) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    let Some(value) = map.get_mut(*first) else {
        return;
    };
    descend(value, rest, found);
}

fn descend<'a>(value: &'a mut Value, path: &[&str], found: &mut Vec<&'a mut Value>) {
    match path.split_first() {
        None => found.push(value),
        Some((&"*", rest)) => {
            if let Value::Array(items) = value {
                for item in items {
                    descend(item, rest, found);
                }
            }
        }
        Some((&"{}", rest)) => {
            if let Value::Object(map) = value {
                for item in map.values_mut() {
                    descend(item, rest, found);
                }
            }
        }
        Some(_) => {
            if let Value::Object(map) = value {
                collect(map, path, found);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn blobs_named_by_content_id_become_the_stores_files_and_nothing_else_does() {
        let folder = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(folder.path(), 1 << 20).expect("store");
        let module = wat::parse_str("(module (func (export \"_start\")))").expect("wat");
        let (module_cid, _) = blobs.put(&module).expect("module");
        let (input, _) = blobs.put(b"hello").expect("input");
        let job = |value: Value| match value {
            Value::Object(map) => map,
            _ => unreachable!(),
        };
        let no_urls = |url: &str| -> Result<Vec<u8>, Refusal> { panic!("fetched {url}") };
        let (file, _pins) = job_file(
            &blobs,
            job(json!({
                "module": module_cid.to_string(),
                "price_per_million_fuel": 2,
                "budget": 1000,
                "task": [{"args": ["a"], "stdin_file": input.to_string()}, {"args": ["b"], "stdin": "inline"}],
            })),
            &no_urls,
        )
        .expect("a job");
        assert_eq!(file.module_cid, module_cid);
        assert_eq!(file.task_count(), 2);
        assert_eq!(&file.task(0).expect("task 0").stdin[..], b"hello");
        assert_eq!(&file.task(1).expect("task 1").stdin[..], b"inline");

        // Input files by content id: shared, and a task's own.
        let (weights, _) = blobs.put(&[9; 5000]).expect("weights");
        let (file, _pins) = job_file(
            &blobs,
            job(json!({
                "module": module_cid.to_string(),
                "price_per_million_fuel": 2,
                "budget": 1000,
                "files": {"weights.bin": weights.to_string()},
                "task": [{"files": {"own.txt": input.to_string()}}, {}],
            })),
            &no_urls,
        )
        .expect("a job with files");
        let names = |task: u64| -> Vec<(String, ContentId)> {
            file.task(task)
                .expect("a task")
                .files
                .iter()
                .map(|file| (file.name.to_string(), file.cid))
                .collect()
        };
        assert_eq!(
            names(0),
            [
                ("own.txt".to_owned(), input),
                ("weights.bin".to_owned(), weights)
            ]
        );
        assert_eq!(names(1), [("weights.bin".to_owned(), weights)]);

        // A manifest is a blob too: its lines are the tasks.
        let (manifest, _) = blobs.put(b"red\ngreen\nblue\n").expect("manifest");
        let (file, _pins) = job_file(
            &blobs,
            job(json!({
                "module": module_cid.to_string(),
                "price_per_million_fuel": 2,
                "budget": 1000,
                "tasks": {"manifest": manifest.to_string(), "args": ["{line}"]},
            })),
            &no_urls,
        )
        .expect("a job from a manifest");
        assert_eq!(file.task_count(), 3);
        assert_eq!(file.task(2).expect("task 2").arg_strings(), ["blue"]);

        for (fields, code, says) in [
            (
                json!({"module": "../etc/passwd", "price_per_million_fuel": 1, "budget": 1, "tasks": {"end": 1}}),
                "invalid_job",
                "content id",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1, "tasks": {"manifest": "../../tasks.txt"}}),
                "invalid_job",
                "content id",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1, "tasks": {"dir": "."}}),
                "invalid_job",
                "not a folder",
            ),
            (
                json!({"module": ContentId::of(b"x").to_string(), "price_per_million_fuel": 1, "budget": 1, "tasks": {"end": 1}}),
                "unknown_blob",
                "not uploaded",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 0, "budget": 1, "tasks": {"end": 1}}),
                "invalid_job",
                "price_per_million_fuel",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1}),
                "invalid_job",
                "no tasks",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1, "tasks": {"end": 1}, "output": {"url": "s3://theirs/x"}}),
                "invalid_job",
                "object storage",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1, "files": {"w": "s3://bucket/key"}, "tasks": {"end": 1}}),
                "invalid_job",
                "content id",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1, "tasks": {"end": 1}, "colour": "red"}),
                "invalid_job",
                "colour",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1, "tasks": {"end": 1, "stdin_file": 7}}),
                "invalid_job",
                "content id",
            ),
            (
                json!({"module": module_cid.to_string(), "price_per_million_fuel": 1, "budget": 1, "tasks": {"end": 1}, "deadline_blocks": null}),
                "invalid_job",
                "job file",
            ),
        ] {
            let refused =
                job_file(&blobs, job(fields.clone()), &no_urls).expect_err(&fields.to_string());
            assert_eq!(refused.code, code, "{fields}: {}", refused.message);
            assert!(
                refused.message.contains(says),
                "{fields}: {}",
                refused.message
            );
        }
    }

    #[test]
    fn a_job_s_blobs_stay_while_it_holds_them_and_go_by_use_after() {
        let folder = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(folder.path(), 64 << 10).expect("store");
        let module = wat::parse_str("(module (func (export \"_start\")))").expect("wat");
        let (module_cid, _) = blobs.put(&module).expect("module");
        let (weights, _) = blobs.put(&[1; 20 << 10]).expect("weights");
        let Value::Object(fields) = json!({
            "module": module_cid.to_string(),
            "price_per_million_fuel": 1,
            "budget": 10,
            "files": {"weights.bin": weights.to_string()},
            "tasks": {"end": 1},
        }) else {
            unreachable!()
        };
        let no_urls = |url: &str| -> Result<Vec<u8>, Refusal> { panic!("fetched {url}") };
        let (_, pins) = job_file(&blobs, fields, &no_urls).expect("a job");
        // Uploads that would need the job's blobs' room are refused.
        let refused = blobs.put(&[2; 50 << 10]).expect_err("no room");
        assert_eq!(refused.code, "storage_full", "{}", refused.message);
        assert!(blobs.path(&weights).is_some() && blobs.path(&module_cid).is_some());
        // Once the job lets them go, newer uploads take their room.
        drop(pins);
        blobs.put(&[2; 50 << 10]).expect("room now");
        assert!(
            blobs.path(&weights).is_none(),
            "the least recently used went"
        );
    }

    /// Serves `body` with `status` to one request on loopback; its URL.
    fn serve_once(status: &'static str, body: Vec<u8>) -> String {
        use std::io::{Read, Write};
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("address");
        std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().expect("accept");
            let mut request = [0u8; 4096];
            let _ = stream.read(&mut request);
            let head = format!(
                "HTTP/1.1 {status}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                body.len()
            );
            let _ = stream.write_all(head.as_bytes());
            let _ = stream.write_all(&body);
        });
        format!("http://{address}/module.wasm")
    }

    #[test]
    fn inputs_named_by_url_are_fetched_stored_and_bounded() {
        let folder = tempfile::tempdir().expect("tempdir");
        let blobs = BlobStore::open(folder.path(), 64 << 20).expect("store");
        let http = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .new_agent();
        let fetch = |url: &str| fetch_url(&http, url);
        let module = b"module bytes from a web server".to_vec();
        let url = serve_once("200 OK", module.clone());
        let fields = json!({
            "module": url,
            "price_per_million_fuel": 1,
            "budget": 10,
            "tasks": {"end": 2},
        });
        let Value::Object(fields) = fields else {
            unreachable!()
        };
        let (file, _pins) = job_file(&blobs, fields, &fetch).expect("a job");
        assert_eq!(file.module, module);
        assert!(
            blobs.read(&ContentId::of(&module)).is_some(),
            "stored by content id"
        );

        let missing =
            fetch_url(&http, &serve_once("404 Not Found", b"no".to_vec())).expect_err("a 404");
        assert_eq!(missing.code, "url_unreachable");
        let huge = fetch_url(&http, &serve_once("200 OK", vec![0; BLOB_BYTES_MAX + 1]))
            .expect_err("too large");
        assert_eq!(huge.code, "url_unreachable");
        assert!(huge.message.contains("at most"), "{}", huge.message);
    }
}
