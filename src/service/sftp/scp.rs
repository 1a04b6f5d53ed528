//! Legacy SCP (`scp -t` to receive, `scp -f` to send), the protocol that
//! `scp -O` and older OpenSSH clients run over an exec channel. A file's
//! final acknowledgement is sent only after its object is stored, so the
//! client's exit status means what it says.

use std::sync::Arc;
use std::time::Instant;

use tokio::io::{AsyncBufReadExt, AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, BufReader};

use super::account::{Account, Refusal};
use super::download::Download;
use super::paths::Place;
use super::upload::Upload;

/// What the exec request asked for.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    /// `scp -t PATH`: receive files into PATH.
    Sink {
        /// Where.
        target: String,
        /// `-d`: the target must be a directory.
        dir: bool,
    },
    /// `scp -f PATH`: send PATH.
    Source {
        /// What.
        path: String,
    },
}

/// Parses an exec command line; `Err` names why it is refused.
pub fn parse(line: &str) -> Result<Command, String> {
    let mut words = line.split_whitespace();
    if words.next() != Some("scp") {
        return Err(format!(
            "{line:?}: this server runs only sftp and scp, no shell or other commands"
        ));
    }
    let (mut sink, mut source, mut dir) = (false, false, false);
    let mut rest: Vec<&str> = Vec::new();
    let mut options = true;
    for w in words {
        if options && w == "--" {
            options = false;
        } else if options && w.starts_with('-') && w.len() > 1 {
            for c in w[1..].chars() {
                match c {
                    't' => sink = true,
                    'f' => source = true,
                    'd' => dir = true,
                    // Recursion, times, verbosity: handled by the protocol.
                    'r' | 'p' | 'v' | 'q' => {}
                    other => return Err(format!("scp option -{other} is not supported")),
                }
            }
        } else {
            rest.push(w);
        }
    }
    let path = unquote(&rest.join(" "));
    if path.is_empty() {
        return Err("scp: no path".into());
    }
    match (sink, source) {
        (true, false) => Ok(Command::Sink { target: path, dir }),
        (false, true) => Ok(Command::Source { path }),
        _ => Err("scp: exactly one of -t and -f".into()),
    }
}

/// OpenSSH quotes remote paths for the shell: `'a b'`, `'it'\''s'`.
fn unquote(s: &str) -> String {
    let mut out = String::new();
    let mut chars = s.chars();
    let mut quoted = false;
    while let Some(c) = chars.next() {
        match c {
            '\'' => quoted = !quoted,
            '\\' if !quoted => {
                if let Some(n) = chars.next() {
                    out.push(n);
                }
            }
            c => out.push(c),
        }
    }
    out
}

/// Sends a warning the client prints and counts as an error, and goes on.
async fn warn<W: AsyncWrite + Unpin>(w: &mut W, msg: &str) -> std::io::Result<()> {
    let line = format!("\x01scp: {}\n", msg.replace('\n', " "));
    w.write_all(line.as_bytes()).await?;
    w.flush().await
}

async fn ack<W: AsyncWrite + Unpin>(w: &mut W) -> std::io::Result<()> {
    w.write_all(&[0]).await?;
    w.flush().await
}

/// Reads the client's one-byte answer: 0, or a warning/fatal line.
async fn answer<R: AsyncRead + Unpin>(r: &mut BufReader<R>) -> Result<(), String> {
    let mut b = [0u8; 1];
    r.read_exact(&mut b).await.map_err(|e| e.to_string())?;
    if b[0] == 0 {
        return Ok(());
    }
    let mut line = Vec::new();
    r.read_until(b'\n', &mut line)
        .await
        .map_err(|e| e.to_string())?;
    Err(String::from_utf8_lossy(&line).trim().to_string())
}

/// Runs `cmd` over the channel `io`; returns the exit status.
pub async fn run<S: AsyncRead + AsyncWrite + Unpin>(
    account: Arc<Account>,
    cmd: Command,
    io: S,
) -> u32 {
    let (r, mut w) = tokio::io::split(io);
    let mut r = BufReader::new(r);
    let result = match cmd {
        Command::Sink { target, dir } => sink(&account, &target, dir, &mut r, &mut w).await,
        Command::Source { path } => source(&account, &path, &mut r, &mut w).await,
    };
    let _ = w.flush().await;
    match result {
        Ok(0) => 0,
        Ok(_) => 1,
        Err(e) => {
            tracing::warn!(relay = %account.relay, "sftp user={} client={}: scp ended: {e}", account.user.name, account.peer);
            1
        }
    }
}

/// Receives files: `C` (a file), `D`/`E` (into and out of a directory),
/// `T` (times, ignored). Returns the number of files refused.
async fn sink<R, W>(
    a: &Account,
    target: &str,
    want_dir: bool,
    r: &mut BufReader<R>,
    w: &mut W,
) -> std::io::Result<u32>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let (abs, place) = a.locate(target);
    let target_is_dir = match &place {
        Place::Outside => {
            warn(
                w,
                &format!("{abs}: Permission denied (outside {})", a.cfg.mount),
            )
            .await?;
            return Ok(1);
        }
        Place::Above { .. } | Place::Inside { root: true, .. } => true,
        Place::Inside { key, .. } => {
            // A prefix with objects under it, or a `dir/` marker.
            match a.bucket.list(&format!("{key}/"), Some(1)).await {
                Ok(l) => !l.objects.is_empty() || !l.prefixes.is_empty(),
                Err(_) => false,
            }
        }
    };
    if want_dir && !target_is_dir {
        warn(w, &format!("{abs}: Not a directory")).await?;
        return Ok(1);
    }
    ack(w).await?;
    let mut dirs: Vec<String> = Vec::new();
    let mut refused = 0;
    loop {
        let mut line = Vec::new();
        if r.read_until(b'\n', &mut line).await? == 0 {
            return Ok(refused);
        }
        let text = String::from_utf8_lossy(&line)
            .trim_end_matches('\n')
            .to_string();
        let Some(kind) = text.chars().next() else {
            return Ok(refused);
        };
        match kind {
            'T' => ack(w).await?,
            'D' => {
                let name = text.splitn(3, ' ').nth(2).unwrap_or_default().to_string();
                if name.is_empty() || name.contains('/') || name == ".." {
                    warn(w, &format!("bad directory name {name:?}")).await?;
                    return Ok(refused + 1);
                }
                dirs.push(name);
                ack(w).await?;
            }
            'E' => {
                dirs.pop();
                ack(w).await?;
            }
            'C' => {
                let mut parts = text[1..].splitn(3, ' ');
                let _mode = parts.next();
                let size = parts.next().and_then(|s| s.parse::<u64>().ok());
                let name = parts.next().unwrap_or_default();
                let Some(size) = size else {
                    warn(w, &format!("bad file line {text:?}")).await?;
                    return Ok(refused + 1);
                };
                if name.is_empty() || name.contains('/') || name == ".." {
                    warn(w, &format!("bad file name {name:?}")).await?;
                    return Ok(refused + 1);
                }
                let path = if target_is_dir || !dirs.is_empty() {
                    let mut p = abs.clone();
                    for d in &dirs {
                        p = format!("{p}/{d}");
                    }
                    format!("{p}/{name}")
                } else {
                    abs.clone()
                };
                if !receive(a, &path, size, r, w).await? {
                    refused += 1;
                }
            }
            '\x01' | '\x02' => {
                tracing::warn!(relay = %a.relay, "sftp user={} client={}: scp client said {:?}", a.user.name, a.peer, text[1..].trim());
                if kind == '\x02' {
                    return Ok(refused + 1);
                }
            }
            _ => {
                warn(w, &format!("unexpected scp line {text:?}")).await?;
                return Ok(refused + 1);
            }
        }
    }
}

/// The object key of `path` if the user may do `action` on it; otherwise
/// records operation `op` as refused, tells the client why, and `None`.
async fn permitted<W: AsyncWrite + Unpin>(
    a: &Account,
    op: &str,
    action: &'static str,
    path: &str,
    started: Instant,
    w: &mut W,
) -> std::io::Result<Option<String>> {
    match a
        .object_key(path)
        .and_then(|k| a.allow(action, &k).map(|_| k))
    {
        Ok(k) => Ok(Some(k)),
        Err(refusal) => {
            a.record(op, path, 0, started, Err(&refusal));
            let msg = format!("{path}: Permission denied ({})", refusal.message());
            warn(w, &msg).await?;
            Ok(None)
        }
    }
}

/// Receives one file of `size` bytes into `path`; `false` if refused or
/// not stored (the client was told why).
async fn receive<R, W>(
    a: &Account,
    path: &str,
    size: u64,
    r: &mut BufReader<R>,
    w: &mut W,
) -> std::io::Result<bool>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let started = Instant::now();
    let Some(key) = permitted(a, "put", "oss:PutObject", path, started, w).await? else {
        return Ok(false);
    };
    ack(w).await?;
    let mut up = Upload::new(a.bucket.clone(), key.clone(), Some(size));
    let mut left = size;
    let mut buf = vec![0u8; 256 * 1024];
    let mut failed: Option<String> = None;
    while left > 0 {
        let n = (left as usize).min(buf.len());
        let got = r.read(&mut buf[..n]).await?;
        if got == 0 {
            // The upload is dropped here, which aborts it.
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                format!(
                    "{path}: the client stopped after {} of {size} bytes",
                    size - left
                ),
            ));
        }
        // After a failure, keep reading to stay in step with the client.
        if failed.is_none() {
            if let Err(e) = up.write(size - left, &buf[..got]).await {
                failed = Some(e.to_string());
            }
        }
        left -= got as u64;
    }
    if let Err(why) = answer(r).await {
        failed.get_or_insert(format!("the client reported {why:?}"));
    }
    let result = match failed {
        Some(why) => Err(Refusal::Failed(why)),
        None => up.finish().await.map_err(Refusal::from),
    };
    a.record("put", &key, size, started, result.as_ref().map(|_| ()));
    match result {
        Ok(()) => {
            ack(w).await?;
            Ok(true)
        }
        Err(refusal) => {
            warn(w, &format!("{path}: not stored: {}", refusal.message())).await?;
            Ok(false)
        }
    }
}

/// Sends one file.
async fn source<R, W>(
    a: &Account,
    path: &str,
    r: &mut BufReader<R>,
    w: &mut W,
) -> std::io::Result<u32>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let started = Instant::now();
    if let Err(why) = answer(r).await {
        return Err(std::io::Error::other(why));
    }
    let Some(key) = permitted(a, "get", "oss:GetObject", path, started, w).await? else {
        return Ok(1);
    };
    let meta = match a.bucket.head(&key).await {
        Ok(m) => m,
        Err(e) => {
            let refusal = Refusal::from(e);
            a.record("get", &key, 0, started, Err(&refusal));
            let what = match refusal {
                Refusal::Missing(_) => "No such file or directory".to_string(),
                other => other.message().to_string(),
            };
            warn(w, &format!("{path}: {what}")).await?;
            return Ok(1);
        }
    };
    let name = key.rsplit('/').next().unwrap_or(&key);
    w.write_all(format!("C0644 {} {name}\n", meta.size).as_bytes())
        .await?;
    w.flush().await?;
    if let Err(why) = answer(r).await {
        return Err(std::io::Error::other(why));
    }
    let mut d = Download::new(a.bucket.clone(), key.clone(), meta.size);
    let mut off = 0;
    while off < meta.size {
        match d.read(off, 1 << 20).await {
            Ok(b) if !b.is_empty() => {
                w.write_all(&b).await?;
                off += b.len() as u64;
            }
            other => {
                // The client waits for exactly `size` bytes: all it can be
                // told now is that the connection failed.
                let why = match other {
                    Err(e) => e.to_string(),
                    Ok(_) => "the object ended early".into(),
                };
                let refusal = Refusal::Failed(why.clone());
                a.record("get", &key, off, started, Err(&refusal));
                return Err(std::io::Error::other(format!("{path}: {why}")));
            }
        }
    }
    ack(w).await?;
    let r2 = answer(r).await;
    a.record("get", &key, off, started, Ok(()));
    r2.map_err(std::io::Error::other)?;
    Ok(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scp_command_lines_parse_and_others_are_refused() {
        assert_eq!(
            parse("scp -t /mnt/ossfs/").unwrap(),
            Command::Sink {
                target: "/mnt/ossfs/".into(),
                dir: false
            }
        );
        assert_eq!(
            parse("scp -v -d -t -- '/mnt/ossfs/a b'").unwrap(),
            Command::Sink {
                target: "/mnt/ossfs/a b".into(),
                dir: true
            }
        );
        assert_eq!(
            parse("scp -f /mnt/ossfs/x").unwrap(),
            Command::Source {
                path: "/mnt/ossfs/x".into()
            }
        );
        assert!(parse("bash -c id")
            .unwrap_err()
            .contains("only sftp and scp"));
        assert!(parse("scp -t -f x").is_err());
        assert!(parse("scp -t").is_err());
        assert_eq!(unquote(r"'it'\''s'"), "it's");
    }
}
