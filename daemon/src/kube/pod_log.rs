//! `pods/{name}/log` with the `PodLogOptions` that look at each line: `timestamps`,
//! `sinceSeconds`/`sinceTime` and `limitBytes`, as the kubelet applies them
//! (`pkg/kubelet/kuberuntime/logs`): `tailLines` picks where to start, lines older
//! than the since time are skipped, each line is prefixed with its time in
//! RFC3339Nano and a space, and the output stops after `limitBytes` bytes (a line may
//! be cut). A line's time is when its first byte was written
//! ([`crate::runtime::log_times`]). Requests without these options take the plain
//! byte path of [`crate::http::logs`].

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use futures_util::stream;

use crate::http::errors::ApiError;
use crate::runtime::log_times::LineTimes;
use crate::scheduler::WorkloadLog;

/// How much of a log one read takes.
const CHUNK: u64 = 64 * 1024;
/// How often a follower looks for more output.
const POLL: Duration = Duration::from_millis(100);

/// What to do to each line.
#[derive(Debug, Clone, Default)]
pub struct LineOptions {
    pub timestamps: bool,
    /// Lines written before this (ns since the epoch) are left out.
    pub since: Option<i64>,
    pub limit_bytes: Option<u64>,
    pub tail_lines: Option<usize>,
    pub follow: bool,
    /// The parameter that needs per-line times, to name in a refusal.
    pub needs_times: Option<&'static str>,
}

/// Go's `time.RFC3339Nano` in UTC, as the kubelet prints it: trailing zeros of the
/// fraction dropped, no fraction when it is zero.
pub fn rfc3339_nano(nanos: i64) -> String {
    let secs = nanos.div_euclid(1_000_000_000);
    let frac = nanos.rem_euclid(1_000_000_000);
    let Some(at) = chrono::DateTime::from_timestamp(secs, 0) else {
        return "1970-01-01T00:00:00Z".into();
    };
    let base = at.format("%Y-%m-%dT%H:%M:%S");
    if frac == 0 {
        return format!("{base}Z");
    }
    let digits = format!("{frac:09}");
    format!("{base}.{}Z", digits.trim_end_matches('0'))
}

/// Where reading is, across the log's files (oldest first, the last one live).
struct Cursor {
    files: Vec<PathBuf>,
    times: Vec<Option<LineTimes>>,
    file: usize,
    offset: u64,
    /// Where the current file ends for this pass: its length, the live file's as
    /// first seen (or as last seen while following).
    end: u64,
    /// The live file's length as last seen.
    end_of_live: u64,
    /// The workload has ended: what the live file holds now is all there is.
    finished: bool,
    /// Bytes up to the first newline are the rest of a line that began too early.
    skip_partial: bool,
    /// The start of a line not yet ended, and where it began.
    pending: Vec<u8>,
    pending_start: u64,
    /// Output made outside a read (the last line of a file rotated while followed).
    ready: Vec<u8>,
    remaining: Option<u64>,
    options: LineOptions,
}

impl Cursor {
    fn out_of_room(&self) -> bool {
        self.remaining == Some(0)
    }

    fn emit(&mut self, line: &[u8], start: u64, out: &mut Vec<u8>) {
        if self.out_of_room() {
            return;
        }
        let times = self.times.get(self.file).and_then(Option::as_ref);
        let at = times.and_then(|t| t.at(start));
        if let Some(since) = self.options.since {
            if at.is_none_or(|at| at < since) {
                return;
            }
        }
        let mut text = Vec::with_capacity(line.len() + 32);
        if self.options.timestamps {
            text.extend_from_slice(rfc3339_nano(at.unwrap_or(0)).as_bytes());
            text.push(b' ');
        }
        text.extend_from_slice(line);
        if let Some(remaining) = &mut self.remaining {
            let take = usize::try_from(*remaining).unwrap_or(usize::MAX).min(text.len());
            text.truncate(take);
            *remaining -= take as u64;
        }
        out.extend_from_slice(&text);
    }

    fn flush(&mut self, out: &mut Vec<u8>) {
        if !self.pending.is_empty() {
            let line = std::mem::take(&mut self.pending);
            self.emit(&line, self.pending_start, out);
        }
    }

    /// Splits `chunk`, read at `base`, into lines.
    fn take(&mut self, mut chunk: &[u8], mut base: u64, out: &mut Vec<u8>) {
        if self.skip_partial {
            match memchr::memchr(b'\n', chunk) {
                Some(i) => {
                    self.skip_partial = false;
                    chunk = &chunk[i + 1..];
                    base += i as u64 + 1;
                }
                None => return,
            }
        }
        while let Some(i) = memchr::memchr(b'\n', chunk) {
            let (line, rest) = chunk.split_at(i + 1);
            if self.pending.is_empty() {
                self.emit(line, base, out);
            } else {
                let mut whole = std::mem::take(&mut self.pending);
                whole.extend_from_slice(line);
                self.emit(&whole, self.pending_start, out);
            }
            base += line.len() as u64;
            chunk = rest;
        }
        if !chunk.is_empty() {
            if self.pending.is_empty() {
                self.pending_start = base;
            }
            self.pending.extend_from_slice(chunk);
        }
    }

    /// Reads one chunk of what is known to be there. `None` when nothing is left up to
    /// the live file's `end`.
    fn step(&mut self) -> Option<Vec<u8>> {
        if !self.ready.is_empty() {
            return Some(std::mem::take(&mut self.ready));
        }
        let mut out = Vec::new();
        loop {
            if self.out_of_room() || self.file >= self.files.len() {
                return None;
            }
            let live = self.file + 1 == self.files.len();
            if self.offset >= self.end {
                if live {
                    return None;
                }
                // A rotated file ends its last line.
                self.flush(&mut out);
                self.file += 1;
                self.offset = 0;
                self.end = if self.file + 1 == self.files.len() {
                    self.end_of_live
                } else {
                    file_len(&self.files[self.file])
                };
                if !out.is_empty() {
                    return Some(out);
                }
                continue;
            }
            let len = (self.end - self.offset).min(CHUNK);
            let chunk = read_at(&self.files[self.file], self.offset, len)?;
            if chunk.is_empty() {
                // Shorter than it was: treat as ended.
                self.end = self.offset;
                continue;
            }
            let base = self.offset;
            self.offset += chunk.len() as u64;
            self.take(&chunk, base, &mut out);
            return Some(out);
        }
    }
}

fn file_len(path: &PathBuf) -> u64 {
    std::fs::metadata(path).map(|m| m.len()).unwrap_or(0)
}

fn read_at(path: &PathBuf, offset: u64, len: u64) -> Option<Vec<u8>> {
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::Start(offset)).ok()?;
    let mut chunk = Vec::with_capacity(usize::try_from(len).unwrap_or(0));
    file.take(len).read_to_end(&mut chunk).ok()?;
    Some(chunk)
}

/// The position of the first line written at or after `since`, and whether it sits
/// inside an older line (to be skipped up to its end).
fn since_start(
    files: &[PathBuf],
    times: &[Option<LineTimes>],
    live_len: u64,
    since: i64,
) -> (usize, u64, bool) {
    for (i, path) in files.iter().enumerate() {
        let Some(Some(t)) = times.get(i) else { continue };
        let Some(offset) = t.first_offset_since(since) else {
            continue;
        };
        let inside = offset > 0 && read_at(path, offset - 1, 1).is_some_and(|b| b.first() != Some(&b'\n'));
        return (i, offset, inside);
    }
    (files.len().saturating_sub(1), live_len, false)
}

/// The answer to a log request with line options: the lines of `log` as they are now,
/// and with `follow`, those written after, until the workload ends. Refuses
/// `timestamps` and the since options on a log written without times.
pub async fn respond<F, Fut>(
    log: WorkloadLog,
    options: LineOptions,
    refresh: F,
) -> Result<HttpResponse, ApiError>
where
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = Option<Option<WorkloadLog>>> + 'static,
{
    let files = log.files;
    let prepared = tokio::task::spawn_blocking(move || prepare(files, options))
        .await
        .map_err(|e| ApiError::Internal(format!("reading the log: {e}")))??;
    let refresh = Rc::new(refresh);
    let body = stream::unfold(Some(prepared), move |state| {
        let refresh = Rc::clone(&refresh);
        async move {
            let mut cursor = state?;
            loop {
                let (back, out) = tokio::task::spawn_blocking(move || {
                    let out = cursor.step();
                    (cursor, out)
                })
                .await
                .ok()?;
                cursor = back;
                match out {
                    Some(out) if out.is_empty() => continue,
                    Some(out) => {
                        return Some((Ok::<_, actix_web::Error>(web::Bytes::from(out)), Some(cursor)))
                    }
                    None => {}
                }
                if cursor.out_of_room() {
                    return None;
                }
                if !cursor.options.follow || cursor.finished {
                    let mut out = Vec::new();
                    cursor.flush(&mut out);
                    return (!out.is_empty()).then(|| (Ok(web::Bytes::from(out)), None));
                }
                // Following: look again; `finished` first, so the length read after it
                // is final once the workload has ended.
                match refresh().await {
                    None => cursor.finished = true,
                    Some(None) => tokio::time::sleep(POLL).await,
                    Some(Some(log)) => {
                        cursor.finished = log.finished;
                        let Some(live) = log.files.last().cloned() else {
                            if !cursor.finished {
                                tokio::time::sleep(POLL).await;
                            }
                            continue;
                        };
                        cursor = tokio::task::spawn_blocking(move || {
                            cursor.follow_live(live);
                            cursor
                        })
                        .await
                        .ok()?;
                        if cursor.offset >= cursor.end && !cursor.finished {
                            tokio::time::sleep(POLL).await;
                        }
                    }
                }
            }
        }
    });
    Ok(HttpResponse::Ok()
        .content_type("text/plain; charset=utf-8")
        .streaming(body))
}

impl Cursor {
    /// Moves on to the live file `live` as it is now: more of the same file, or,
    /// when it was rotated underneath, the new one from its start.
    fn follow_live(&mut self, live: PathBuf) {
        let len = file_len(&live);
        let same = self.files.last() == Some(&live) && self.file + 1 == self.files.len();
        if !same || len < self.offset {
            let mut out = std::mem::take(&mut self.ready);
            self.flush(&mut out);
            self.ready = out;
            self.files = vec![live.clone()];
            self.times = vec![None];
            self.file = 0;
            self.offset = 0;
        }
        if let Some(Some(times)) = self.times.get_mut(self.file) {
            let _ = times.refresh();
        } else {
            self.times[self.file] = LineTimes::of(&live).ok().flatten();
        }
        self.end = len;
        self.end_of_live = len;
    }
}

fn prepare(files: Vec<PathBuf>, options: LineOptions) -> Result<Cursor, ApiError> {
    let live_len = files.last().map(file_len).unwrap_or(0);
    let mut times = Vec::with_capacity(files.len());
    for path in &files {
        let t = LineTimes::of(path)
            .map_err(|e| ApiError::Internal(format!("reading {}: {e}", path.display())))?;
        if t.is_none() && file_len(path) > 0 {
            if let Some(feature) = options.needs_times {
                return Err(ApiError::Unsupported {
                    feature: feature.into(),
                    detail: "this pod's log was written by an earlier Hearth, which kept no per-line times"
                        .into(),
                });
            }
        }
        times.push(t);
    }
    let mut start = (0usize, 0u64, false);
    if let Some(n) = options.tail_lines {
        let (file, offset) = crate::http::logs::tail_start(&files, live_len, n);
        start = (file, offset, false);
    }
    if let Some(since) = options.since {
        let at = since_start(&files, &times, live_len, since);
        if (at.0, at.1) > (start.0, start.1) {
            start = at;
        }
    }
    let (file, offset, skip_partial) = start;
    let end = if file + 1 >= files.len() {
        live_len
    } else {
        files.get(file).map(file_len).unwrap_or(0)
    };
    Ok(Cursor {
        files,
        times,
        file,
        offset,
        end,
        end_of_live: live_len,
        skip_partial,
        pending: Vec::new(),
        pending_start: 0,
        ready: Vec::new(),
        remaining: options.limit_bytes,
        finished: false,
        options,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::log_times::LogWriter;

    #[test]
    fn rfc3339_nano_drops_trailing_zeros_as_go_does() {
        assert_eq!(rfc3339_nano(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339_nano(1_500_000_000), "1970-01-01T00:00:01.5Z");
        assert_eq!(rfc3339_nano(1_000_000_123), "1970-01-01T00:00:01.000000123Z");
    }

    fn read_all(cursor: &mut Cursor) -> String {
        let mut out = Vec::new();
        while let Some(piece) = cursor.step() {
            out.extend(piece);
        }
        cursor.flush(&mut out);
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn since_tail_timestamps_and_limit_apply_per_line() {
        let dir = tempfile::tempdir().unwrap();
        let mut writer = LogWriter::open(dir.path(), 0).unwrap();
        let s = 1_000_000_000i64;
        writer.write(b"a1\na", 10 * s).unwrap();
        writer.write(b"2\nb1\n", 20 * s).unwrap();
        writer.write(b"c1\nc2", 30 * s).unwrap();
        let files = vec![dir.path().join("output.log")];
        let run = |options: LineOptions| read_all(&mut prepare(files.clone(), options).unwrap());
        assert_eq!(run(LineOptions::default()), "a1\na2\nb1\nc1\nc2");
        // `a2` began before 20 s: it is left out, though it ended after.
        let since = LineOptions {
            since: Some(20 * s),
            ..LineOptions::default()
        };
        assert_eq!(run(since), "b1\nc1\nc2");
        let stamped = LineOptions {
            timestamps: true,
            tail_lines: Some(2),
            ..LineOptions::default()
        };
        assert_eq!(run(stamped), "1970-01-01T00:00:30Z c1\n1970-01-01T00:00:30Z c2");
        let limited = LineOptions {
            limit_bytes: Some(7),
            ..LineOptions::default()
        };
        assert_eq!(run(limited), "a1\na2\nb");
        let late = LineOptions {
            since: Some(31 * s),
            ..LineOptions::default()
        };
        assert_eq!(run(late), "");
    }
}
