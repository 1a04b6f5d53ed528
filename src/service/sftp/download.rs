//! A download as ranged GETs of [`CHUNK`] bytes, with the next chunk
//! fetched while the client reads the current one.

use std::sync::Arc;

use bytes::Bytes;
use tokio::task::JoinHandle;

use super::bucket::{Bucket, StoreError};

/// Bytes per ranged GET.
pub const CHUNK: u64 = 8 << 20;

/// One object being read.
pub struct Download {
    bucket: Arc<Bucket>,
    key: String,
    /// The object's size when opened.
    pub size: u64,
    current: Option<(u64, Bytes)>,
    ahead: Option<(u64, JoinHandle<Result<Bytes, StoreError>>)>,
    /// Bytes handed to the client.
    pub sent: u64,
}

impl Download {
    /// Reads `key`, `size` bytes long.
    pub fn new(bucket: Arc<Bucket>, key: String, size: u64) -> Download {
        Download {
            bucket,
            key,
            size,
            current: None,
            ahead: None,
            sent: 0,
        }
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }

    fn fetch(&self, start: u64) -> JoinHandle<Result<Bytes, StoreError>> {
        let bucket = self.bucket.clone();
        let key = self.key.clone();
        let end = (start + CHUNK).min(self.size);
        tokio::spawn(async move { bucket.get_range(&key, start, end).await })
    }

    /// Up to `len` bytes at `offset`; empty at the end. May return fewer
    /// than asked at a chunk's edge: SFTP clients ask again for the rest.
    pub async fn read(&mut self, offset: u64, len: u32) -> Result<Bytes, StoreError> {
        if offset >= self.size || len == 0 {
            return Ok(Bytes::new());
        }
        let start = offset - offset % CHUNK;
        if self.current.as_ref().is_none_or(|(s, _)| *s != start) {
            let task = match self.ahead.take() {
                Some((s, t)) if s == start => t,
                other => {
                    if let Some((_, t)) = other {
                        t.abort();
                    }
                    self.fetch(start)
                }
            };
            let data = task
                .await
                .map_err(|e| StoreError::Failed(format!("ranged GET task: {e}")))??;
            self.current = Some((start, data));
        }
        let next = start + CHUNK;
        if next < self.size && self.ahead.is_none() {
            self.ahead = Some((next, self.fetch(next)));
        }
        let Some((_, data)) = &self.current else {
            return Ok(Bytes::new());
        };
        let from = (offset - start) as usize;
        let to = (from + len as usize).min(data.len());
        self.sent += (to - from) as u64;
        Ok(data.slice(from..to))
    }
}

impl Drop for Download {
    fn drop(&mut self) {
        if let Some((_, t)) = self.ahead.take() {
            t.abort();
        }
    }
}
