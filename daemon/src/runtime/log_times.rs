//! When each byte of a workload's log was written: a side file next to the log
//! (`output.times` beside `output.log`, `output.times.1` beside `output.log.1`) of
//! fixed 16-byte records `(offset: u64 LE, unix time: i64 LE nanoseconds)`, one per
//! write the shim relays, at most one per millisecond. A byte at offset `o` was
//! written at the time of the last record whose offset is `<= o` (to the millisecond).
//! This gives `kubectl logs --timestamps` and `--since` what the kubelet takes from
//! the CRI log format, while the log itself stays the plain interleaved text every
//! other reader (Job logs, KFP task logs, serving status) reads as before.
//!
//! The shim writes a record before the bytes it describes, so a reader that sees a
//! byte also sees its record. A record cut short by a `kill -9` of the shim is
//! ignored. A log written without this file (by a shim of an earlier Hearth) has no
//! per-line times; its readers refuse what needs them.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use super::shim::{LOG, LOG_ROTATED};

/// The times of `output.log`.
pub const TIMES: &str = "output.times";
/// The times of `output.log.1`.
pub const TIMES_ROTATED: &str = "output.times.1";
const RECORD: usize = 16;
const NANOS_PER_MILLI: i64 = 1_000_000;

/// The times file of a log file (`output.log` → `output.times`); `None` for a file
/// that is not a workload log.
pub fn times_of(log: &Path) -> Option<PathBuf> {
    let name = match log.file_name()?.to_str()? {
        LOG => TIMES,
        LOG_ROTATED => TIMES_ROTATED,
        _ => return None,
    };
    Some(log.with_file_name(name))
}

/// Nanoseconds since the Unix epoch, now.
pub fn now_nanos() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_nanos()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// One chunk of a log read with per-line times (`docker logs --timestamps`, the
/// Kubernetes pod log with `timestamps=true`): `<RFC 3339 nano> <bytes>`. The time in
/// nanoseconds since the Unix epoch, and the bytes after the space; `None` and the
/// whole chunk when it carries no time.
pub fn split_timestamp(chunk: &[u8]) -> (Option<i64>, &[u8]) {
    let Some(space) = chunk.iter().position(|b| *b == b' ') else {
        return (None, chunk);
    };
    let at = std::str::from_utf8(&chunk[..space])
        .ok()
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
        .and_then(|d| d.timestamp_nanos_opt());
    match at {
        Some(at) => (Some(at), &chunk[space + 1..]),
        None => (None, chunk),
    }
}

/// The shim's side of the log: appends what the workload writes to `output.log` and
/// its times to `output.times`, and rotates both together past `max_bytes` (a rename:
/// the shim is the only writer, so nothing is copied).
pub struct LogWriter {
    dir: PathBuf,
    log: File,
    /// Opened at the first record, so a workload that prints nothing costs no file.
    times: Option<File>,
    log_len: u64,
    times_len: u64,
    last_milli: Option<i64>,
    max_bytes: u64,
}

impl LogWriter {
    pub fn open(dir: &Path, max_bytes: u64) -> std::io::Result<LogWriter> {
        let log = OpenOptions::new().create(true).append(true).open(dir.join(LOG))?;
        let log_len = log.metadata()?.len();
        Ok(LogWriter {
            dir: dir.to_path_buf(),
            log,
            times: None,
            log_len,
            times_len: 0,
            last_milli: None,
            max_bytes,
        })
    }

    /// Appends `bytes` written at `at` (ns since the epoch). Errors are the log's
    /// (a full disk): the bytes are lost, as a full disk loses them for the kubelet.
    pub fn write(&mut self, bytes: &[u8], at: i64) -> std::io::Result<()> {
        if bytes.is_empty() {
            return Ok(());
        }
        let milli = at.div_euclid(NANOS_PER_MILLI);
        if self.last_milli != Some(milli) {
            if self.times.is_none() {
                let file = OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(self.dir.join(TIMES))?;
                self.times_len = file.metadata()?.len();
                self.times = Some(file);
            }
            let mut record = [0u8; RECORD];
            record[..8].copy_from_slice(&self.log_len.to_le_bytes());
            record[8..].copy_from_slice(&at.to_le_bytes());
            if let Some(times) = &mut self.times {
                times.write_all(&record)?;
            }
            self.times_len += RECORD as u64;
            self.last_milli = Some(milli);
        }
        self.log.write_all(bytes)?;
        self.log_len += bytes.len() as u64;
        if self.max_bytes > 0 && (self.log_len > self.max_bytes || self.times_len > self.max_bytes) {
            self.rotate()?;
        }
        Ok(())
    }

    fn rotate(&mut self) -> std::io::Result<()> {
        let times = self.dir.join(TIMES);
        let rotated_times = self.dir.join(TIMES_ROTATED);
        if self.times.take().is_some() {
            std::fs::rename(&times, &rotated_times)?;
        } else {
            let _ = std::fs::remove_file(&rotated_times);
        }
        std::fs::rename(self.dir.join(LOG), self.dir.join(LOG_ROTATED))?;
        self.log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join(LOG))?;
        self.log_len = 0;
        self.times_len = 0;
        self.last_milli = None;
        Ok(())
    }
}

/// The times of one log file, read as far as written and read further on demand.
#[derive(Debug, Clone)]
pub struct LineTimes {
    path: PathBuf,
    /// `(offset, unix ns)`, offsets increasing.
    records: Vec<(u64, i64)>,
    /// Bytes of the times file taken into `records` (whole records only).
    consumed: u64,
}

impl LineTimes {
    /// The times of `log`; `None` when it has none (a log of an earlier Hearth, or a
    /// file that is not a workload log).
    pub fn of(log: &Path) -> std::io::Result<Option<LineTimes>> {
        let Some(path) = times_of(log) else {
            return Ok(None);
        };
        if !path.exists() {
            return Ok(None);
        }
        let mut times = LineTimes {
            path,
            records: Vec::new(),
            consumed: 0,
        };
        times.refresh()?;
        Ok(Some(times))
    }

    /// Reads the records appended since the last read.
    pub fn refresh(&mut self) -> std::io::Result<()> {
        let mut file = match File::open(&self.path) {
            Ok(file) => file,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        file.seek(SeekFrom::Start(self.consumed))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)?;
        for record in bytes.chunks_exact(RECORD) {
            let mut offset = [0u8; 8];
            let mut at = [0u8; 8];
            offset.copy_from_slice(&record[..8]);
            at.copy_from_slice(&record[8..]);
            self.records
                .push((u64::from_le_bytes(offset), i64::from_le_bytes(at)));
            self.consumed += RECORD as u64;
        }
        Ok(())
    }

    /// When the byte at `offset` was written (ns since the epoch), or `None` before the
    /// first record.
    pub fn at(&self, offset: u64) -> Option<i64> {
        let after = self.records.partition_point(|(o, _)| *o <= offset);
        after.checked_sub(1).map(|i| self.records[i].1)
    }

    /// The first offset written at or after `since` (ns since the epoch), or `None`
    /// when everything recorded is older.
    pub fn first_offset_since(&self, since: i64) -> Option<u64> {
        self.records.iter().find(|(_, at)| *at >= since).map(|(o, _)| *o)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_split_from_log_chunks() {
        let (at, rest) = split_timestamp(b"2026-12-02T13:21:29.269495826Z hello\n");
        assert_eq!(rest, b"hello\n");
        assert_eq!(at, Some(1_796_217_689_269_495_826));
        let (at, rest) = split_timestamp(b"no stamp\n");
        assert!(at.is_none());
        assert_eq!(rest, b"no stamp\n");
    }

    #[test]
    fn records_map_offsets_to_the_write_that_began_there() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), 0).unwrap();
        let base = 1_700_000_000_000_000_000i64;
        writer.write(b"one\n", base).unwrap();
        // The same millisecond: no new record.
        writer.write(b"two\n", base + 10).unwrap();
        writer.write(b"three\n", base + 5 * NANOS_PER_MILLI).unwrap();
        let times = LineTimes::of(&dir.path().join(LOG)).unwrap().unwrap();
        assert_eq!(times.records, vec![(0, base), (8, base + 5 * NANOS_PER_MILLI)]);
        assert_eq!(times.at(0), Some(base));
        assert_eq!(times.at(4), Some(base));
        assert_eq!(times.at(8), Some(base + 5 * NANOS_PER_MILLI));
        assert_eq!(times.first_offset_since(base + 1), Some(8));
        assert_eq!(times.first_offset_since(base + 6 * NANOS_PER_MILLI), None);
        assert_eq!(std::fs::read(dir.path().join(LOG)).unwrap(), b"one\ntwo\nthree\n");
    }

    #[test]
    fn a_torn_record_is_ignored_and_rotation_moves_both_files() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), 20).unwrap();
        writer.write(b"0123456789abcdefghijklm\n", 1_000_000_000).unwrap();
        assert!(dir.path().join(LOG_ROTATED).exists());
        assert!(dir.path().join(TIMES_ROTATED).exists());
        assert_eq!(std::fs::metadata(dir.path().join(LOG)).unwrap().len(), 0);
        assert!(!dir.path().join(TIMES).exists());
        writer.write(b"x\n", 3_000_000_000).unwrap();
        let mut file = OpenOptions::new()
            .append(true)
            .open(dir.path().join(TIMES))
            .unwrap();
        file.write_all(&[1, 2, 3]).unwrap();
        let times = LineTimes::of(&dir.path().join(LOG)).unwrap().unwrap();
        assert_eq!(times.records, vec![(0, 3_000_000_000)]);
        let old = LineTimes::of(&dir.path().join(LOG_ROTATED)).unwrap().unwrap();
        assert_eq!(old.records, vec![(0, 1_000_000_000)]);
    }
}
