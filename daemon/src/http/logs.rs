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

/// The last `n` lines of `files` taken as one text (the live, last, one up to
/// `live_len`), read backwards from the end a chunk at a time: only as much of the log
/// as the lines take is read. Blocking.
fn read_tail(files: &[PathBuf], live_len: u64, n: usize) -> Vec<u8> {
    // Pieces from the end backwards; one newline more than `n` fixes where the last
    // `n` lines start, whether or not the text ends with a newline.
    let mut pieces: Vec<Vec<u8>> = Vec::new();
    let mut newlines = 0usize;
    'files: for (i, path) in files.iter().enumerate().rev() {
        let Ok(mut file) = std::fs::File::open(path) else {
            continue;
        };
        let mut end = if i + 1 == files.len() {
            live_len
        } else {
            file.metadata().map(|m| m.len()).unwrap_or(0)
        };
        while end > 0 {
            if newlines > n {
                break 'files;
            }
            let start = end.saturating_sub(CHUNK);
            let mut piece = vec![0; (end - start) as usize];
            if file.seek(SeekFrom::Start(start)).is_err() || file.read_exact(&mut piece).is_err() {
                break;
            }
            newlines += memchr::memchr_iter(b'\n', &piece).count();
            pieces.push(piece);
            end = start;
        }
    }
    let text: Vec<u8> = pieces.into_iter().rev().flatten().collect();
    last_lines(&text, n).to_vec()
}

fn last_lines(text: &[u8], n: usize) -> &[u8] {
    if n == 0 {
        return &text[text.len()..];
    }
    let trimmed = text.strip_suffix(b"\n").unwrap_or(text);
    let mut seen = 0;
    for (i, b) in trimmed.iter().enumerate().rev() {
        if *b == b'\n' {
            seen += 1;
            if seen == n {
                return &text[i + 1..];
            }
        }
    }
    text
}

#[cfg(test)]
mod tests {
    use super::{last_lines, read_tail};

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\n", 0), b"");
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
