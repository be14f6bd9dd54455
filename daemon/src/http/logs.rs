//! A workload's output as `text/plain`, the way `kubectl logs` gives it: all of it or
//! its last lines, and with `follow` what is written after, until the workload ends.
//! Jobs and InferenceService replicas answer through here.

use std::future::Future;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Path, PathBuf};
use std::time::Duration;

use actix_web::{web, HttpResponse, HttpResponseBuilder};
use futures_util::stream::{self, LocalBoxStream, StreamExt};

use crate::scheduler::WorkloadLog;

/// How much of a log one read takes; the answer streams in pieces of this size.
const CHUNK: u64 = 64 * 1024;

type Chunks = LocalBoxStream<'static, Result<web::Bytes, actix_web::Error>>;

/// `refresh` looks the log up again while following: `None` ends the answer (the
/// owner is gone), `Some(None)` means no workload yet.
pub async fn respond<F, Fut>(
    mut builder: HttpResponseBuilder,
    log: Option<WorkloadLog>,
    tail: Option<usize>,
    follow: bool,
    refresh: F,
) -> HttpResponse
where
    F: Fn() -> Fut + 'static,
    Fut: Future<Output = Option<Option<WorkloadLog>>> + 'static,
{
    let files = log.map(|l| l.files).unwrap_or_default();
    // What is in the live file now is the answer; following goes on from there.
    let offset = match files.last() {
        Some(live) => tokio::fs::metadata(live).await.map(|m| m.len()).unwrap_or(0),
        None => 0,
    };
    let initial: Chunks = match tail {
        Some(n) => {
            let tail = tokio::task::spawn_blocking(move || read_tail(&files, offset, n))
                .await
                .unwrap_or_default();
            stream::once(async move { Ok(web::Bytes::from(tail)) }).boxed_local()
        }
        None => whole(files, offset),
    };
    builder.content_type("text/plain; charset=utf-8");
    if !follow {
        return builder.streaming(initial);
    }
    let refresh = std::rc::Rc::new(refresh);
    // Read what the workload appends until it has ended and nothing is left.
    let rest = stream::unfold((offset, false), move |(offset, done)| {
        let refresh = std::rc::Rc::clone(&refresh);
        async move {
            if done {
                return None;
            }
            let mut offset = offset;
            loop {
                let log = match refresh().await {
                    Some(Some(log)) => log,
                    Some(None) => {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                    None => return None,
                };
                let finished = log.finished;
                let Some(current) = log.files.last() else {
                    if finished {
                        return None;
                    }
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                };
                let len = tokio::fs::metadata(current).await.map(|m| m.len()).unwrap_or(0);
                if len < offset {
                    // Rotated underneath us: the live file starts again from zero.
                    offset = 0;
                }
                if len > offset {
                    if let Some(chunk) = read_at(current, offset, (len - offset).min(CHUNK)).await {
                        let next = offset + chunk.len() as u64;
                        return Some((Ok(web::Bytes::from(chunk)), (next, false)));
                    }
                }
                if finished {
                    return None;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    });
    builder.streaming(initial.chain(rest))
}

/// Up to `len` bytes of `path` from `offset`; `None` when it cannot be read.
async fn read_at(path: &Path, offset: u64, len: u64) -> Option<Vec<u8>> {
    use tokio::io::{AsyncReadExt, AsyncSeekExt};
    let mut file = tokio::fs::File::open(path).await.ok()?;
    file.seek(SeekFrom::Start(offset)).await.ok()?;
    let mut chunk = Vec::with_capacity(len as usize);
    file.take(len).read_to_end(&mut chunk).await.ok()?;
    Some(chunk)
}

/// All of `files` in order, the live (last) one up to `live_len`, a chunk at a time.
fn whole(files: Vec<PathBuf>, live_len: u64) -> Chunks {
    let count = files.len();
    let parts = files.into_iter().enumerate().map(move |(i, path)| {
        let limit = (i + 1 == count).then_some(live_len);
        stream::unfold(0u64, move |offset| {
            let path = path.clone();
            async move {
                let end = match limit {
                    Some(end) => end,
                    None => tokio::fs::metadata(&path).await.map(|m| m.len()).ok()?,
                };
                if offset >= end {
                    return None;
                }
                let chunk = read_at(&path, offset, (end - offset).min(CHUNK)).await?;
                if chunk.is_empty() {
                    return None;
                }
                let next = offset + chunk.len() as u64;
                Some((Ok(web::Bytes::from(chunk)), next))
            }
        })
    });
    stream::iter(parts).flatten().boxed_local()
}

/// Where the last `n` lines of `files` taken as one text (the live, last, one up to
/// `live_len`) begin: (file index, byte offset). Read backwards from the end a chunk at
/// a time, so only as much of the log as the lines take is read. Fewer lines than `n`:
/// the start of the first file; `n == 0`: the end. Blocking.
pub(crate) fn tail_start(files: &[PathBuf], live_len: u64, n: usize) -> (usize, u64) {
    let end_position = (files.len().saturating_sub(1), live_len);
    if n == 0 {
        return end_position;
    }
    // The newline that ends the very last line starts no line after it.
    let mut last_byte_seen = false;
    let mut newlines = 0usize;
    for (i, path) in files.iter().enumerate().rev() {
        let Ok(mut file) = std::fs::File::open(path) else {
            continue;
        };
        let mut end = if i + 1 == files.len() {
            live_len
        } else {
            file.metadata().map(|m| m.len()).unwrap_or(0)
        };
        while end > 0 {
            let start = end.saturating_sub(CHUNK);
            let mut piece = vec![0; usize::try_from(end - start).unwrap_or(0)];
            if file.seek(SeekFrom::Start(start)).is_err() || file.read_exact(&mut piece).is_err() {
                break;
            }
            for (j, byte) in piece.iter().enumerate().rev() {
                let first = !last_byte_seen;
                last_byte_seen = true;
                if *byte == b'\n' && !first {
                    newlines += 1;
                    if newlines == n {
                        return (i, start + j as u64 + 1);
                    }
                }
            }
            end = start;
        }
    }
    (0, 0)
}

/// The last `n` lines of `files` (the live, last, one up to `live_len`). Blocking.
fn read_tail(files: &[PathBuf], live_len: u64, n: usize) -> Vec<u8> {
    let (first, offset) = tail_start(files, live_len, n);
    let mut text = Vec::new();
    for (i, path) in files.iter().enumerate().skip(first) {
        let Ok(file) = std::fs::File::open(path) else {
            continue;
        };
        let from = if i == first { offset } else { 0 };
        let end = if i + 1 == files.len() {
            live_len
        } else {
            file.metadata().map(|m| m.len()).unwrap_or(0)
        };
        let mut file = file;
        if end <= from || file.seek(SeekFrom::Start(from)).is_err() {
            continue;
        }
        if file.take(end - from).read_to_end(&mut text).is_err() {
            break;
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{read_tail, tail_start};

    #[test]
    fn tail_start_counts_lines_from_the_end() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("output.log");
        std::fs::write(&path, "a\nb\nc\n").unwrap();
        let files = [path];
        assert_eq!(read_tail(&files, 6, 2), b"b\nc\n");
        assert_eq!(read_tail(&files, 5, 1), b"c");
        assert_eq!(read_tail(&files, 4, 5), b"a\nb\n");
        assert_eq!(read_tail(&files, 2, 0), b"");
        assert_eq!(tail_start(&files, 6, 1), (0, 4));
        assert_eq!(tail_start(&files, 6, 2), (0, 2));
        assert_eq!(tail_start(&files, 6, 9), (0, 0));
        assert_eq!(tail_start(&files, 5, 1), (0, 4));
    }

    #[test]
    fn the_tail_is_read_from_the_end_across_the_rotated_file() {
        let dir = tempfile::tempdir().unwrap();
        let (old, live) = (dir.path().join("output.log.1"), dir.path().join("output.log"));
        let long: String = (0..20_000).map(|i| format!("old {i}\n")).collect();
        std::fs::write(&old, &long).unwrap();
        std::fs::write(&live, "new 1\nnew 2\npartial").unwrap();
        let files = [old.clone(), live.clone()];
        let len = std::fs::metadata(&live).unwrap().len();
        assert_eq!(read_tail(&files, len, 1), b"partial");
        assert_eq!(read_tail(&files, len, 3), b"new 1\nnew 2\npartial");
        assert_eq!(
            read_tail(&files, len, 5),
            b"old 19998\nold 19999\nnew 1\nnew 2\npartial"
        );
        assert_eq!(read_tail(&files, len, 0), b"");
        // Bytes appended after `len` are not part of the answer.
        assert_eq!(read_tail(&files, 12, 2), b"new 1\nnew 2\n");
        let all = read_tail(&files, len, usize::MAX);
        assert_eq!(all, [long.as_bytes(), b"new 1\nnew 2\npartial"].concat());
    }
}
