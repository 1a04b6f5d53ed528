//! An upload as a sequential write stream: one PUT when the file fits in a
//! part, else a multipart upload whose parts go up in the background, at
//! most [`IN_FLIGHT`] at a time, so an upload holds at most
//! `(IN_FLIGHT + 1) × part size` of memory whatever the file's size. The
//! object exists only after [`Upload::finish`]; an upload dropped before
//! that aborts its multipart upload.

use std::sync::Arc;

use tokio::sync::Semaphore;
use tokio::task::JoinHandle;

use super::bucket::{Bucket, StoreError};
use crate::config::sftp::DEFAULT_PART_SIZE;

/// Parts uploading at once, per upload.
pub const IN_FLIGHT: usize = 4;
/// S3's and OSS's limits.
const MAX_PARTS: u64 = 10_000;
const MAX_PART: u64 = 5 << 30;

/// The size of part `n` (1-based). With the file's size known (SCP says
/// it), one size that fits the file in 10 000 parts; otherwise (SFTP)
/// 8 MiB doubling every 1 000 parts, so 10 000 parts hold about 7.8 TiB.
pub fn part_size(n: u32, size: Option<u64>) -> usize {
    let base = DEFAULT_PART_SIZE as u64;
    let s = match size {
        Some(total) => base.max(total.div_ceil(MAX_PARTS).next_multiple_of(1 << 20)),
        None => base << ((n.saturating_sub(1) / 1000).min(20)),
    };
    s.min(MAX_PART) as usize
}

/// Why a write was not taken.
#[derive(Debug)]
pub enum WriteError {
    /// Not at the end of what was written: object storage cannot do it.
    OutOfOrder(String),
    /// The store failed a part (this one or an earlier one).
    Store(StoreError),
}

impl std::fmt::Display for WriteError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            WriteError::OutOfOrder(m) => f.write_str(m),
            WriteError::Store(e) => write!(f, "storing a part failed: {e}"),
        }
    }
}

type PartTask = JoinHandle<Result<(u32, String), StoreError>>;

/// One file being written.
pub struct Upload {
    bucket: Arc<Bucket>,
    key: String,
    size: Option<u64>,
    buf: Vec<u8>,
    written: u64,
    upload_id: Option<String>,
    next_part: u32,
    parts: Vec<PartTask>,
    limit: Arc<Semaphore>,
    failed: Arc<std::sync::Mutex<Option<String>>>,
}

impl Upload {
    /// Starts writing `key`; `size`, when the client announced it, picks
    /// the part size.
    pub fn new(bucket: Arc<Bucket>, key: String, size: Option<u64>) -> Upload {
        Upload {
            bucket,
            key,
            size,
            buf: Vec::new(),
            written: 0,
            upload_id: None,
            next_part: 1,
            parts: Vec::new(),
            limit: Arc::new(Semaphore::new(IN_FLIGHT)),
            failed: Arc::default(),
        }
    }

    /// Bytes accepted so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// The object key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Appends `data` at `offset`, which must be the end of what was
    /// written: an object is written once, front to back.
    pub async fn write(&mut self, offset: u64, data: &[u8]) -> Result<(), WriteError> {
        if offset != self.written {
            return Err(WriteError::OutOfOrder(format!(
                "ossrelay sftp: writes must be sequential (offset {offset}, expected {})",
                self.written
            )));
        }
        self.written += data.len() as u64;
        let mut data = data;
        while !data.is_empty() {
            // Fill the part buffer exactly, allocated once at its size: a
            // growing Vec would hold up to twice the part in every part
            // that is in flight.
            let size = part_size(self.next_part, self.size);
            if self.buf.capacity() < size {
                self.buf.reserve_exact(size - self.buf.len());
            }
            let take = (size - self.buf.len()).min(data.len());
            self.buf.extend_from_slice(&data[..take]);
            data = &data[take..];
            if self.buf.len() == size {
                let part = std::mem::take(&mut self.buf);
                self.send_part(part).await.map_err(WriteError::Store)?;
            }
        }
        Ok(())
    }

    /// Uploads one full part in the background, waiting while
    /// [`IN_FLIGHT`] are already going.
    async fn send_part(&mut self, part: Vec<u8>) -> Result<(), StoreError> {
        // A part that failed already dooms the upload: say so now rather
        // than at close.
        if let Some(why) = self.failed.lock().ok().and_then(|f| f.clone()) {
            return Err(StoreError::Failed(why));
        }
        let id = match &self.upload_id {
            Some(id) => id.clone(),
            None => {
                let id = self.bucket.create_multipart(&self.key).await?;
                self.upload_id = Some(id.clone());
                id
            }
        };
        let permit = self
            .limit
            .clone()
            .acquire_owned()
            .await
            .map_err(|e| StoreError::Failed(e.to_string()))?;
        let n = self.next_part;
        self.next_part += 1;
        let bucket = self.bucket.clone();
        let key = self.key.clone();
        let failed = self.failed.clone();
        self.parts.push(tokio::spawn(async move {
            let _permit = permit;
            match bucket.upload_part(&key, &id, n, part.into()).await {
                Ok(etag) => Ok((n, etag)),
                Err(e) => {
                    if let Ok(mut f) = failed.lock() {
                        f.get_or_insert_with(|| format!("part {n}: {e}"));
                    }
                    Err(e)
                }
            }
        }));
        Ok(())
    }

    /// Stores what was written as the object: the last part and the
    /// completion, or a single PUT. Returns only when the object exists.
    pub async fn finish(&mut self) -> Result<(), StoreError> {
        let result = self.complete().await;
        if result.is_err() {
            self.abort();
        }
        result
    }

    async fn complete(&mut self) -> Result<(), StoreError> {
        let rest = std::mem::take(&mut self.buf);
        if self.upload_id.is_none() {
            return self.bucket.put(&self.key, rest.into()).await;
        }
        if !rest.is_empty() {
            self.send_part(rest).await?;
        }
        let mut done = Vec::with_capacity(self.parts.len());
        for p in self.parts.drain(..) {
            done.push(
                p.await
                    .map_err(|e| StoreError::Failed(format!("part task: {e}")))??,
            );
        }
        done.sort_by_key(|(n, _)| *n);
        let id = self.upload_id.clone().unwrap_or_default();
        self.bucket.complete(&self.key, &id, &done).await?;
        self.upload_id = None;
        Ok(())
    }

    /// Abandons the upload: stops its parts and aborts it at the store.
    pub fn abort(&mut self) {
        for p in self.parts.drain(..) {
            p.abort();
        }
        if let Some(id) = self.upload_id.take() {
            let bucket = self.bucket.clone();
            let key = self.key.clone();
            tokio::spawn(async move {
                match bucket.abort(&key, &id).await {
                    Ok(()) => tracing::info!(
                        "sftp: aborted the multipart upload of {}/{key}",
                        bucket.name
                    ),
                    Err(e) => tracing::warn!(
                        "sftp: aborting the multipart upload {id} of {}/{key} failed: {e}",
                        bucket.name
                    ),
                }
            });
        }
    }
}

impl Drop for Upload {
    fn drop(&mut self) {
        // A session that ends without closing the file (killed client,
        // dropped connection) leaves no object and no upload behind.
        if self.upload_id.is_some() || !self.parts.is_empty() {
            self.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parts_grow_so_ten_thousand_hold_the_file() {
        const MIB: usize = 1 << 20;
        assert_eq!(part_size(1, None), 8 * MIB);
        assert_eq!(part_size(1000, None), 8 * MIB);
        assert_eq!(part_size(1001, None), 16 * MIB);
        let total: u64 = (1..=10_000).map(|n| part_size(n, None) as u64).sum();
        // 1 000 parts each of 8, 16, … 4 096 MiB: 7.8 TiB.
        assert!(total > 7 << 40, "{total}");
        // 1 TiB announced: 10 000 parts of 105 MiB.
        let tib = 1u64 << 40;
        let s = part_size(1, Some(tib)) as u64;
        assert!(s * 10_000 >= tib && s < 128 << 20, "{s}");
        // OSS's maximum object (48.8 TiB) fits too, within 5 GiB parts.
        let max = 48_800u64 << 30;
        let s = part_size(1, Some(max)) as u64;
        assert!(s * 10_000 >= max && s <= 5 << 30, "{s}");
        assert_eq!(part_size(1, Some(1 << 20)), 8 * MIB);
    }
}
