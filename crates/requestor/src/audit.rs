//! The market's audit trail of a job (tasks accepted on providers' word,
//! read back only when one of them is caught lying) kept out of memory:
//! records go to an unnamed temporary file once a few MiB pile up, so a
//! job of millions of tasks holds none of them.

use std::fs::File;
use std::io::{BufReader, BufWriter, Read, Seek, SeekFrom, Write};

use idlegrid_market::{AUDIT_RECORD_BYTES_MAX, AuditLog};

/// Bytes of records held in memory before they are written out.
const BUFFER_BYTES: usize = 4 << 20;

/// Length-prefixed records, in memory until [`BUFFER_BYTES`], then in an
/// unnamed temporary file (gone when closed, whatever happens to the
/// process).
#[derive(Debug, Default)]
pub struct FileAuditLog {
    /// Records not written out yet.
    buffer: Vec<u8>,
    file: Option<BufWriter<File>>,
    /// The file could not be made or written: records stay in memory
    /// rather than being lost.
    in_memory_only: bool,
}

impl FileAuditLog {
    pub fn boxed() -> Box<dyn AuditLog> {
        Box::new(Self::default())
    }

    fn spill(&mut self) {
        if self.file.is_none() {
            match tempfile::tempfile() {
                Ok(file) => self.file = Some(BufWriter::with_capacity(1 << 20, file)),
                Err(error) => {
                    tracing::warn!(%error, "the audit trail stays in memory");
                    self.in_memory_only = true;
                    return;
                }
            }
        }
        let Some(file) = &mut self.file else {
            return;
        };
        if let Err(error) = file.write_all(&self.buffer) {
            // What part was written is read back with the rest.
            tracing::warn!(%error, "the audit trail stays in memory");
            self.in_memory_only = true;
            return;
        }
        self.buffer.clear();
    }
}

impl AuditLog for FileAuditLog {
    fn append(&mut self, record: &[u8]) {
        let Ok(length) = u32::try_from(record.len()) else {
            return;
        };
        self.buffer.extend_from_slice(&length.to_le_bytes());
        self.buffer.extend_from_slice(record);
        if self.buffer.len() >= BUFFER_BYTES && !self.in_memory_only {
            self.spill();
        }
    }

    fn for_each(&mut self, each: &mut dyn FnMut(&[u8])) {
        let mut record = Vec::new();
        if let Some(file) = &mut self.file
            && file.flush().is_ok()
        {
            let mut reader = file.get_ref();
            if reader.seek(SeekFrom::Start(0)).is_ok() {
                let mut reader = BufReader::with_capacity(1 << 20, reader);
                while read_record(&mut reader, &mut record) {
                    each(&record);
                }
            }
            // Appends go on at the end.
            if let Err(error) = file.get_ref().seek(SeekFrom::End(0)) {
                tracing::warn!(%error, "the audit trail stays in memory");
                self.in_memory_only = true;
            }
        }
        let mut memory = self.buffer.as_slice();
        while read_record(&mut memory, &mut record) {
            each(&record);
        }
    }
}

/// Reads one length-prefixed record into `record`; false at the end (or
/// at damage).
fn read_record(reader: &mut impl Read, record: &mut Vec<u8>) -> bool {
    let mut length = [0u8; 4];
    if reader.read_exact(&mut length).is_err() {
        return false;
    }
    let length = u32::from_le_bytes(length) as usize;
    if length > AUDIT_RECORD_BYTES_MAX {
        return false;
    }
    record.resize(length, 0);
    reader.read_exact(record).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_written_out_come_back_in_order_with_those_in_memory() {
        let mut log = FileAuditLog::default();
        let record = |index: u64| {
            let mut bytes = index.to_le_bytes().to_vec();
            bytes.resize(8 + (index % 200) as usize, 7);
            bytes
        };
        // Enough records to pass the buffer several times over.
        let count = 3 * BUFFER_BYTES as u64 / 100;
        for index in 0..count {
            log.append(&record(index));
        }
        assert!(log.file.is_some(), "records went to a file");
        assert!(log.buffer.len() < BUFFER_BYTES, "memory stays bounded");
        let mut read = Vec::new();
        log.for_each(&mut |bytes| read.push(bytes.to_vec()));
        assert_eq!(read.len() as u64, count);
        assert!(
            read.iter()
                .enumerate()
                .all(|(index, bytes)| *bytes == record(index as u64))
        );
        // Reading does not disturb appending.
        log.append(b"last");
        let mut last = None;
        let mut seen = 0;
        log.for_each(&mut |bytes| {
            seen += 1;
            last = Some(bytes.to_vec());
        });
        assert_eq!(seen, count + 1);
        assert_eq!(last.as_deref(), Some(&b"last"[..]));
    }
}
