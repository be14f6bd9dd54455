//! A workload's output as `text/plain`, the way `kubectl logs` gives it: all of it or
//! its last lines, and with `follow` what is written after, until the workload ends.
//! Jobs and InferenceService replicas answer through here.

use std::future::Future;
use std::time::Duration;

use actix_web::{web, HttpResponse, HttpResponseBuilder};

use crate::scheduler::WorkloadLog;

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
    let mut existing = Vec::new();
    let mut offset = 0u64;
    if let Some(log) = &log {
        for file in &log.files {
            if let Ok(bytes) = tokio::fs::read(file).await {
                offset = bytes.len() as u64;
                existing.extend_from_slice(&bytes);
            }
        }
    }
    let initial = match tail {
        Some(n) => last_lines(&existing, n).to_vec(),
        None => existing,
    };
    builder.content_type("text/plain; charset=utf-8");
    if !follow {
        return builder.body(initial);
    }
    let first =
        futures_util::stream::once(async move { Ok::<_, actix_web::Error>(web::Bytes::from(initial)) });
    let refresh = std::rc::Rc::new(refresh);
    // Read what the workload appends until it has ended and nothing is left.
    let rest = futures_util::stream::unfold((offset, false), move |(offset, done)| {
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
                    use tokio::io::{AsyncReadExt, AsyncSeekExt};
                    if let Ok(mut file) = tokio::fs::File::open(current).await {
                        let _ = file.seek(std::io::SeekFrom::Start(offset)).await;
                        let mut chunk = Vec::with_capacity((len - offset) as usize);
                        let _ = file.take(len - offset).read_to_end(&mut chunk).await;
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
    builder.streaming(futures_util::StreamExt::chain(first, rest))
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
    use super::last_lines;

    #[test]
    fn last_lines_counts_from_the_end() {
        assert_eq!(last_lines(b"a\nb\nc\n", 2), b"b\nc\n");
        assert_eq!(last_lines(b"a\nb\nc", 1), b"c");
        assert_eq!(last_lines(b"a\nb\n", 5), b"a\nb\n");
        assert_eq!(last_lines(b"a\n", 0), b"");
    }
}
