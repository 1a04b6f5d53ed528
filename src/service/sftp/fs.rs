//! The SFTP subsystem (protocol version 3) over a bucket: each request
//! becomes object operations, and each answer is what a filesystem would
//! say, or an honest refusal where object storage differs.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Instant;

use russh_sftp::protocol::{
    Attrs, Data, File, FileAttributes, Handle, Name, OpenFlags, Status, StatusCode, Version,
};
use russh_sftp::server::StatusReply;

use super::account::{Account, Refusal};
use super::bucket::Meta;
use super::download::Download;
use super::paths::Place;
use super::upload::{Upload, WriteError};

const DIR_MODE: u32 = 0o040_755;
const FILE_MODE: u32 = 0o100_644;

fn attrs(mode: u32, size: u64, mtime: u32) -> FileAttributes {
    let mut a = FileAttributes::empty();
    a.size = Some(size);
    a.uid = Some(0);
    a.gid = Some(0);
    a.permissions = Some(mode);
    a.atime = Some(mtime);
    a.mtime = Some(mtime);
    a
}

fn dir_attrs() -> FileAttributes {
    attrs(DIR_MODE, 0, 0)
}

fn file_attrs(m: Meta) -> FileAttributes {
    attrs(FILE_MODE, m.size, m.mtime)
}

/// OSS's CopyObject takes objects up to 1 GB (S3's up to 5 GiB): larger
/// ones are copied as a multipart upload of ranges (UploadPartCopy).
const COPY_OBJECT_LIMIT: u64 = 1_000_000_000;
/// The range each UploadPartCopy takes: under both stores' 5 GB part limit.
const COPY_PART: u64 = 500_000_000;

/// Copies `src` (`size` bytes) to `dst` in ranges, and returns how many;
/// aborts on failure.
async fn copy_in_parts(
    bucket: &super::bucket::Bucket,
    src: &str,
    dst: &str,
    size: u64,
) -> Result<usize, super::bucket::StoreError> {
    let part = COPY_PART.max(size.div_ceil(10_000));
    let id = bucket.create_multipart(dst).await?;
    let mut parts = Vec::new();
    let mut start = 0;
    while start < size {
        let end = (start + part).min(size) - 1;
        let n = parts.len() as u32 + 1;
        match bucket
            .upload_part_copy(dst, &id, n, src, (start, end))
            .await
        {
            Ok(etag) => parts.push((n, etag)),
            Err(e) => {
                let _ = bucket.abort(dst, &id).await;
                return Err(e);
            }
        }
        start = end + 1;
    }
    if let Err(e) = bucket.complete(dst, &id, &parts).await {
        let _ = bucket.abort(dst, &id).await;
        return Err(e);
    }
    Ok(parts.len())
}

impl From<Refusal> for StatusReply {
    fn from(r: Refusal) -> StatusReply {
        let code = match &r {
            Refusal::Denied(_) => StatusCode::PermissionDenied,
            Refusal::Missing(_) => StatusCode::NoSuchFile,
            Refusal::Unsupported(_) => StatusCode::OpUnsupported,
            Refusal::Failed(_) => StatusCode::Failure,
        };
        code.with_message(r.message().to_string())
    }
}

enum Open {
    Write(Box<Upload>, Instant),
    Read(Download, Instant),
    Dir(Option<Vec<File>>),
}

/// One SFTP session.
pub struct Fs {
    account: Arc<Account>,
    handles: HashMap<String, Open>,
    next: u64,
}

fn ok(id: u32) -> Status {
    Status {
        id,
        status_code: StatusCode::Ok,
        error_message: "Ok".into(),
        language_tag: "en-US".into(),
    }
}

impl Fs {
    /// A session for `account`.
    pub fn new(account: Arc<Account>) -> Fs {
        Fs {
            account,
            handles: HashMap::new(),
            next: 0,
        }
    }

    fn handle(&mut self, open: Open) -> String {
        self.next += 1;
        let h = self.next.to_string();
        self.handles.insert(h.clone(), open);
        h
    }

    /// What `path` is: a directory (the mount and above, a prefix with
    /// objects under it, or a `dir/` marker) or an object.
    async fn stat_path(&self, path: &str) -> Result<FileAttributes, Refusal> {
        let a = &self.account;
        match a.locate(path) {
            (abs, Place::Outside) => Err(Refusal::Missing(format!("{abs}: no such file"))),
            (_, Place::Above { .. }) | (_, Place::Inside { root: true, .. }) => Ok(dir_attrs()),
            (abs, Place::Inside { key, .. }) => {
                // As an object it needs oss:GetObject; as a directory, a
                // listing (so `keys = ["incoming/*"]` with ListObjects
                // allowed lets clients `cd incoming`).
                let head = match a.allow("oss:GetObject", &key) {
                    Ok(()) => match a.bucket.head(&key).await {
                        Ok(m) => return Ok(file_attrs(m)),
                        Err(e) => Err(Refusal::from(e)),
                    },
                    Err(denied) => Err(denied),
                };
                if let Err(denied) = a.allow("oss:ListObjects", &key) {
                    return Err(head.err().unwrap_or(denied));
                }
                // Not an object: a directory if anything is under it. (A
                // filesystem-backed store may fail the HEAD of a directory
                // with a 500 rather than a 404, so look either way.)
                let l = a.bucket.list(&format!("{key}/"), Some(1)).await?;
                match head {
                    _ if !l.objects.is_empty() || !l.prefixes.is_empty() => Ok(dir_attrs()),
                    Err(Refusal::Missing(_)) => Err(Refusal::Missing(format!(
                        "{abs}: no such file or directory"
                    ))),
                    Err(other) => Err(other),
                    Ok(()) => Err(Refusal::Missing(format!(
                        "{abs}: no such file or directory"
                    ))),
                }
            }
        }
    }

    async fn list_dir(&self, path: &str) -> Result<Vec<File>, Refusal> {
        let a = &self.account;
        let (abs, place) = a.locate(path);
        let key = match place {
            Place::Outside => return Err(Refusal::Missing(format!("{abs}: no such directory"))),
            Place::Above { next } => return Ok(vec![File::new(next, dir_attrs())]),
            Place::Inside { key, .. } => key,
        };
        a.allow("oss:ListObjects", &key)?;
        let prefix = if key.is_empty() {
            String::new()
        } else {
            format!("{key}/")
        };
        let l = a.bucket.list(&prefix, None).await?;
        let mut files = vec![File::new(".", dir_attrs()), File::new("..", dir_attrs())];
        for p in &l.prefixes {
            let name = p[prefix.len()..].trim_end_matches('/');
            if !name.is_empty() {
                files.push(File::new(name, dir_attrs()));
            }
        }
        for (k, m) in &l.objects {
            let name = &k[prefix.len()..];
            // The directory's own marker (`dir/`) is not an entry.
            if !name.is_empty() {
                files.push(File::new(name, file_attrs(*m)));
            }
        }
        if files.len() == 2 && !prefix.is_empty() && !l.objects.iter().any(|(k, _)| *k == prefix) {
            // Nothing under it and no marker: is it a file, or nothing?
            return match a.bucket.head(&key).await {
                Ok(_) => Err(Refusal::Failed(format!("{abs} is not a directory"))),
                Err(_) => Err(Refusal::Missing(format!("{abs}: no such directory"))),
            };
        }
        Ok(files)
    }

    async fn remove_object(&self, path: &str) -> Result<String, Refusal> {
        let a = &self.account;
        let key = a.object_key(path)?;
        a.allow("oss:DeleteObject", &key)?;
        a.bucket.head(&key).await?;
        a.bucket.delete(&key).await?;
        Ok(key)
    }

    async fn make_dir(&self, path: &str) -> Result<String, Refusal> {
        let a = &self.account;
        let key = a.object_key(path)?;
        a.allow("oss:PutObject", &format!("{key}/"))?;
        if a.bucket.head(&key).await.is_ok() {
            return Err(Refusal::Failed(format!("{key} exists as a file")));
        }
        a.bucket.put(&format!("{key}/"), Default::default()).await?;
        Ok(key)
    }

    async fn remove_dir(&self, path: &str) -> Result<String, Refusal> {
        let a = &self.account;
        let key = a.object_key(path)?;
        let marker = format!("{key}/");
        a.allow("oss:DeleteObject", &marker)?;
        let l = a.bucket.list(&marker, Some(2)).await?;
        if !l.prefixes.is_empty() || l.objects.iter().any(|(k, _)| *k != marker) {
            return Err(Refusal::Failed(format!("{key}: directory not empty")));
        }
        if l.objects.is_empty() {
            // No marker in the listing: on OSS the directory does not
            // exist; a filesystem-backed store keeps empty directories out
            // of listings, and fails their HEAD with a 500.
            if let Err(super::bucket::StoreError::NotFound) = a.bucket.head(&marker).await {
                return Err(Refusal::Missing(format!("{key}: no such directory")));
            }
        }
        a.bucket.delete(&marker).await?;
        Ok(key)
    }

    async fn rename_object(&self, from: &str, to: &str) -> Result<(String, u64), Refusal> {
        let a = &self.account;
        let src = a.object_key(from)?;
        let dst = a.object_key(to)?;
        a.allow("oss:GetObject", &src)?;
        a.allow("oss:PutObject", &dst)?;
        a.allow("oss:DeleteObject", &src)?;
        let meta = match a.bucket.head(&src).await {
            Ok(m) => m,
            Err(super::bucket::StoreError::NotFound) => {
                return Err(Refusal::Unsupported(format!(
                    "{src}: no such object (directories cannot be renamed: they are key prefixes)"
                )))
            }
            Err(e) => return Err(e.into()),
        };
        let how = if meta.size > COPY_OBJECT_LIMIT {
            let n = copy_in_parts(&a.bucket, &src, &dst, meta.size).await?;
            format!(" ({n} ranges by UploadPartCopy)")
        } else {
            a.bucket.copy(&src, &dst).await?;
            String::new()
        };
        a.bucket.delete(&src).await?;
        Ok((format!("{src} -> {dst}{how}"), meta.size))
    }

    /// Runs `op` and writes its access record.
    fn done<T>(
        &self,
        op: &str,
        key: &str,
        bytes: u64,
        started: Instant,
        r: Result<T, Refusal>,
    ) -> Result<T, StatusReply> {
        self.account
            .record(op, key, bytes, started, r.as_ref().map(|_| ()));
        r.map_err(StatusReply::from)
    }
}

impl russh_sftp::server::Handler for Fs {
    type Error = StatusReply;

    fn unimplemented(&self) -> Self::Error {
        StatusCode::OpUnsupported.with_message("ossrelay sftp: not supported on object storage")
    }

    async fn init(
        &mut self,
        _version: u32,
        _extensions: HashMap<String, String>,
    ) -> Result<Version, Self::Error> {
        Ok(Version::new())
    }

    async fn realpath(&mut self, id: u32, path: String) -> Result<Name, Self::Error> {
        let (abs, _) = self.account.locate(&path);
        Ok(Name {
            id,
            files: vec![File::new(abs, dir_attrs())],
        })
    }

    async fn stat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        let attrs = self.stat_path(&path).await.map_err(StatusReply::from)?;
        Ok(Attrs { id, attrs })
    }

    async fn lstat(&mut self, id: u32, path: String) -> Result<Attrs, Self::Error> {
        self.stat(id, path).await
    }

    async fn fstat(&mut self, id: u32, handle: String) -> Result<Attrs, Self::Error> {
        let attrs = match self.handles.get(&handle) {
            Some(Open::Write(u, _)) => attrs(FILE_MODE, u.written(), 0),
            Some(Open::Read(d, _)) => attrs(FILE_MODE, d.size, 0),
            Some(Open::Dir(_)) => dir_attrs(),
            None => return Err(StatusCode::Failure.with_message("no such handle")),
        };
        Ok(Attrs { id, attrs })
    }

    async fn setstat(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        // Objects have no modes, owners or settable times; succeeding
        // keeps `scp -p` and rsync-like clients quiet.
        self.stat_path(&path).await.map_err(StatusReply::from)?;
        Ok(ok(id))
    }

    async fn fsetstat(
        &mut self,
        id: u32,
        _handle: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        Ok(ok(id))
    }

    async fn opendir(&mut self, id: u32, path: String) -> Result<Handle, Self::Error> {
        let started = Instant::now();
        let r = self.list_dir(&path).await;
        let (abs, _) = self.account.locate(&path);
        let n = r.as_ref().map_or(0, |f| f.len() as u64);
        let files = self.done("ls", &abs, n, started, r)?;
        let handle = self.handle(Open::Dir(Some(files)));
        Ok(Handle { id, handle })
    }

    async fn readdir(&mut self, id: u32, handle: String) -> Result<Name, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Dir(files)) => match files.take() {
                Some(files) => Ok(Name { id, files }),
                None => Err(StatusCode::Eof.into()),
            },
            _ => Err(StatusCode::Failure.with_message("not a directory handle")),
        }
    }

    async fn open(
        &mut self,
        id: u32,
        filename: String,
        pflags: OpenFlags,
        _attrs: FileAttributes,
    ) -> Result<Handle, Self::Error> {
        let started = Instant::now();
        let a = self.account.clone();
        let key = match a.object_key(&filename) {
            Ok(k) => k,
            Err(r) => return self.done("open", &filename, 0, started, Err(r)),
        };
        let open = if pflags.contains(OpenFlags::WRITE) {
            if pflags.contains(OpenFlags::APPEND) {
                let r = Err(Refusal::Unsupported(
                    "ossrelay sftp: objects cannot be appended to".into(),
                ));
                return self.done("put", &key, 0, started, r);
            }
            if let Err(r) = a.allow("oss:PutObject", &key) {
                return self.done("put", &key, 0, started, Err(r));
            }
            Open::Write(Box::new(Upload::new(a.bucket.clone(), key, None)), started)
        } else {
            if let Err(r) = a.allow("oss:GetObject", &key) {
                return self.done("get", &key, 0, started, Err(r));
            }
            match a.bucket.head(&key).await {
                Ok(m) => Open::Read(Download::new(a.bucket.clone(), key, m.size), started),
                Err(e) => return self.done("get", &key, 0, started, Err(e.into())),
            }
        };
        let handle = self.handle(open);
        Ok(Handle { id, handle })
    }

    async fn write(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        data: Vec<u8>,
    ) -> Result<Status, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Write(u, _)) => match u.write(offset, &data).await {
                Ok(()) => Ok(ok(id)),
                Err(why @ WriteError::OutOfOrder(_)) => {
                    Err(StatusCode::OpUnsupported.with_message(why.to_string()))
                }
                Err(why) => Err(StatusCode::Failure.with_message(why.to_string())),
            },
            _ => Err(StatusCode::Failure.with_message("not a handle open for writing")),
        }
    }

    async fn read(
        &mut self,
        id: u32,
        handle: String,
        offset: u64,
        len: u32,
    ) -> Result<Data, Self::Error> {
        match self.handles.get_mut(&handle) {
            Some(Open::Read(d, _)) => match d.read(offset, len).await {
                Ok(b) if b.is_empty() => Err(StatusCode::Eof.into()),
                Ok(b) => Ok(Data {
                    id,
                    data: b.to_vec(),
                }),
                Err(e) => Err(StatusReply::from(Refusal::from(e))),
            },
            _ => Err(StatusCode::Failure.with_message("not a handle open for reading")),
        }
    }

    async fn close(&mut self, id: u32, handle: String) -> Result<Status, Self::Error> {
        match self.handles.remove(&handle) {
            // The reply to CLOSE is the client's only word that the file
            // is stored, so it waits for the object to exist.
            Some(Open::Write(mut u, started)) => {
                let r = u.finish().await.map_err(Refusal::from);
                let (key, n) = (u.key().to_string(), u.written());
                self.done("put", &key, n, started, r).map(|_| ok(id))
            }
            Some(Open::Read(d, started)) => {
                self.account.record("get", d.key(), d.sent, started, Ok(()));
                Ok(ok(id))
            }
            Some(Open::Dir(_)) => Ok(ok(id)),
            None => Err(StatusCode::Failure.with_message("no such handle")),
        }
    }

    async fn remove(&mut self, id: u32, filename: String) -> Result<Status, Self::Error> {
        let started = Instant::now();
        let r = self.remove_object(&filename).await;
        let key = r.as_ref().map_or(filename.clone(), |k| k.clone());
        self.done("rm", &key, 0, started, r).map(|_| ok(id))
    }

    async fn mkdir(
        &mut self,
        id: u32,
        path: String,
        _attrs: FileAttributes,
    ) -> Result<Status, Self::Error> {
        let started = Instant::now();
        let r = self.make_dir(&path).await;
        let key = r.as_ref().map_or(path.clone(), |k| k.clone());
        self.done("mkdir", &key, 0, started, r).map(|_| ok(id))
    }

    async fn rmdir(&mut self, id: u32, path: String) -> Result<Status, Self::Error> {
        let started = Instant::now();
        let r = self.remove_dir(&path).await;
        let key = r.as_ref().map_or(path.clone(), |k| k.clone());
        self.done("rmdir", &key, 0, started, r).map(|_| ok(id))
    }

    async fn rename(
        &mut self,
        id: u32,
        oldpath: String,
        newpath: String,
    ) -> Result<Status, Self::Error> {
        let started = Instant::now();
        let r = self.rename_object(&oldpath, &newpath).await;
        let (what, n) = r
            .as_ref()
            .map_or((format!("{oldpath} -> {newpath}"), 0), |x| x.clone());
        self.done("rename", &what, n, started, r).map(|_| ok(id))
    }
}
