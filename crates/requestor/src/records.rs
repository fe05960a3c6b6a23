//! The records of a job's decided tasks, kept on disk as they are decided
//! so that the requestor's memory does not grow with the job: each record
//! is appended to an unnamed temporary file as a line of JSON, and a second
//! one holds, at each task's index, where its newest record lies. A task
//! checked again loses its place until it is decided anew. `results.json`
//! lists them by task index from there.

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::report::TaskRecord;

/// Bytes of each task's place: the record's offset (plus one; 0 means
/// none) and length.
const SLOT_BYTES: u64 = 12;
/// Longest record line: a record names at most a few providers.
const RECORD_BYTES_MAX: u32 = 1 << 20;

#[derive(Debug)]
pub struct TaskRecords {
    /// The lines, appended.
    lines: File,
    /// End of `lines`.
    end: u64,
    /// One slot per task index (a sparse file: tasks not decided take no
    /// room).
    slots: File,
    task_count: u64,
    /// Energy of the records in place, added up.
    energy_millijoules: u64,
    line: Vec<u8>,
}

impl TaskRecords {
    /// Empty records for a job of `task_count` tasks, in unnamed files
    /// under `dir` (gone when closed, whatever happens to the process).
    pub fn new(dir: &Path, task_count: u64) -> io::Result<Self> {
        let lines = tempfile::tempfile_in(dir)?;
        let slots = tempfile::tempfile_in(dir)?;
        slots.set_len(task_count.saturating_mul(SLOT_BYTES))?;
        Ok(Self {
            lines,
            end: 0,
            slots,
            task_count,
            energy_millijoules: 0,
            line: Vec::new(),
        })
    }

    /// Keeps `record` as its task's, in place of any before.
    pub fn put(&mut self, record: &TaskRecord) -> io::Result<()> {
        self.check_index(record.index)?;
        self.forget(record.index)?;
        self.line.clear();
        serde_json::to_writer(&mut self.line, record)?;
        let length = u32::try_from(self.line.len())
            .ok()
            .filter(|length| *length <= RECORD_BYTES_MAX)
            .ok_or_else(|| io::Error::other("a task's record is too long"))?;
        self.lines.write_all_at(&self.line, self.end)?;
        let mut slot = [0u8; SLOT_BYTES as usize];
        slot[..8].copy_from_slice(&(self.end + 1).to_le_bytes());
        slot[8..].copy_from_slice(&length.to_le_bytes());
        self.slots.write_all_at(&slot, record.index * SLOT_BYTES)?;
        self.end += u64::from(length);
        self.energy_millijoules = self
            .energy_millijoules
            .saturating_add(record.energy_millijoules.unwrap_or(0));
        Ok(())
    }

    /// The task is open again: it has no record until decided anew. Gives
    /// where its output lay in a packed file (offset, length), if it did.
    pub fn reopened(&mut self, task: u64) -> io::Result<Option<(u64, u64)>> {
        self.check_index(task)?;
        self.forget(task)
    }

    /// Energy of the accepted records, added up (advisory).
    pub fn energy_millijoules(&self) -> u64 {
        self.energy_millijoules
    }

    fn check_index(&self, task: u64) -> io::Result<()> {
        if task < self.task_count {
            Ok(())
        } else {
            Err(io::Error::other(format!(
                "task {task} is past the job's {} tasks",
                self.task_count
            )))
        }
    }

    /// Clears a task's slot, taking its record's energy out of the total;
    /// gives where its output lay in a packed file.
    fn forget(&mut self, task: u64) -> io::Result<Option<(u64, u64)>> {
        let mut slot = [0u8; SLOT_BYTES as usize];
        self.slots.read_exact_at(&mut slot, task * SLOT_BYTES)?;
        let Some(old) = self.read(&slot)? else {
            return Ok(None);
        };
        self.energy_millijoules = self
            .energy_millijoules
            .saturating_sub(old.energy_millijoules.unwrap_or(0));
        self.slots
            .write_all_at(&[0u8; SLOT_BYTES as usize], task * SLOT_BYTES)?;
        Ok(old.offset.zip(old.length))
    }

    /// The record a slot points at, if any.
    fn read(&self, slot: &[u8; SLOT_BYTES as usize]) -> io::Result<Option<Replaced>> {
        let Some(line) = self.line_at(slot)? else {
            return Ok(None);
        };
        Ok(Some(serde_json::from_slice(&line)?))
    }

    fn line_at(&self, slot: &[u8; SLOT_BYTES as usize]) -> io::Result<Option<Vec<u8>>> {
        let offset = u64::from_le_bytes(slot[..8].try_into().expect("8 bytes"));
        let length = u32::from_le_bytes(slot[8..].try_into().expect("4 bytes"));
        if offset == 0 {
            return Ok(None);
        }
        if length > RECORD_BYTES_MAX || offset - 1 + u64::from(length) > self.end {
            return Err(io::Error::other("a task's record lies outside the records"));
        }
        let mut line = vec![0u8; length as usize];
        self.lines.read_exact_at(&mut line, offset - 1)?;
        Ok(Some(line))
    }

    /// Writes every task's record that is in place, by task index, as the
    /// elements of a JSON array (one a line, each after `indent`, without
    /// the brackets). Gives how many were written.
    pub fn write_list(&self, out: &mut impl Write, indent: &str) -> io::Result<u64> {
        let mut slots = BufReader::with_capacity(1 << 20, &self.slots);
        let mut written = 0u64;
        let mut slot = [0u8; SLOT_BYTES as usize];
        for _ in 0..self.task_count {
            slots.read_exact(&mut slot)?;
            let Some(line) = self.line_at(&slot)? else {
                continue;
            };
            if written > 0 {
                out.write_all(b",\n")?;
            }
            out.write_all(indent.as_bytes())?;
            out.write_all(&line)?;
            written += 1;
        }
        Ok(written)
    }

    /// Writes `report` (a JSON object, pretty) with `"tasks"`, the records
    /// in task order, as its last member, into `path` (through a file
    /// beside it, renamed when whole).
    pub fn write_results(&self, report: &impl serde::Serialize, path: &Path) -> io::Result<()> {
        let head = serde_json::to_vec_pretty(report)?;
        let head = head
            .strip_suffix(b"\n}")
            .ok_or_else(|| io::Error::other("a report is a JSON object"))?;
        let partial = path.with_extension("json.partial");
        let mut out = BufWriter::with_capacity(1 << 20, File::create(&partial)?);
        out.write_all(head)?;
        out.write_all(if head.ends_with(b"{") { b"\n" } else { b",\n" })?;
        out.write_all(b"  \"tasks\": [\n")?;
        let written = self.write_list(&mut out, "    ")?;
        out.write_all(if written > 0 {
            b"\n  ]\n}\n"
        } else {
            b"  ]\n}\n"
        })?;
        out.into_inner()
            .map_err(io::IntoInnerError::into_error)?
            .sync_all()?;
        std::fs::rename(&partial, path)
    }
}

/// What is read back from a record being replaced.
#[derive(serde::Deserialize)]
struct Replaced {
    energy_millijoules: Option<u64>,
    offset: Option<u64>,
    length: Option<u64>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(index: u64, status: &'static str, energy: u64) -> TaskRecord {
        TaskRecord {
            index,
            status,
            exit_code: Some(0),
            output: Some(format!("b3:{index}")),
            error: None,
            fuel: Some(index * 10),
            energy_millijoules: Some(energy),
            file: Some(format!("tasks/{index:06}.out")),
            offset: None,
            length: None,
            providers: Vec::new(),
            verified: "quorum",
            rechecked: false,
        }
    }

    #[derive(serde::Serialize)]
    struct Head {
        job: &'static str,
        accepted: u64,
    }

    #[test]
    fn records_come_out_by_task_index_the_newest_of_each_and_none_for_a_task_reopened() {
        let dir = tempfile::tempdir().expect("dir");
        let mut records = TaskRecords::new(dir.path(), 10).expect("records");
        for index in [3, 0, 7, 1, 9] {
            records.put(&record(index, "accepted", 5)).expect("put");
        }
        // Task 7 is checked again and decided anew; task 1 is reopened and
        // never decided again.
        assert_eq!(records.reopened(7).expect("reopened"), None);
        let mut again = record(7, "accepted", 2);
        again.rechecked = true;
        records.put(&again).expect("put");
        records.reopened(1).expect("reopened");
        assert_eq!(records.energy_millijoules(), 5 + 5 + 2 + 5);
        assert!(
            records.put(&record(10, "accepted", 1)).is_err(),
            "past the job"
        );

        let path = dir.path().join("results.json");
        let head = Head {
            job: "j",
            accepted: 4,
        };
        records.write_results(&head, &path).expect("written");
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(results["job"], "j");
        assert_eq!(results["accepted"], 4);
        let tasks = results["tasks"].as_array().expect("tasks");
        let indexes: Vec<u64> = tasks
            .iter()
            .map(|task| task["index"].as_u64().unwrap())
            .collect();
        assert_eq!(indexes, [0, 3, 7, 9]);
        assert_eq!(tasks[2]["rechecked"], true);
        assert_eq!(tasks[2]["energy_millijoules"], 2);
        assert!(!dir.path().join("results.json.partial").exists());
    }

    #[test]
    fn a_job_with_no_record_writes_an_empty_list() {
        let dir = tempfile::tempdir().expect("dir");
        let records = TaskRecords::new(dir.path(), 3).expect("records");
        let path = dir.path().join("results.json");
        records
            .write_results(
                &Head {
                    job: "j",
                    accepted: 0,
                },
                &path,
            )
            .expect("written");
        let results: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(&path).expect("read")).expect("json");
        assert_eq!(results["tasks"], serde_json::json!([]));
    }
}
