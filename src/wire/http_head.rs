//! Strict HTTP/1.x head parsing for the gateway. The head is only read,
//! never rewritten: the gateway forwards the client's bytes as they came,
//! so signatures over headers survive. Anything ambiguous about where a
//! message ends (the request-smuggling cases) is refused.

/// The largest head accepted, request or response.
pub const MAX_HEAD: usize = 64 * 1024;

/// How a message body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    /// No body.
    None,
    /// Exactly this many bytes.
    Length(u64),
    /// Transfer-Encoding: chunked.
    Chunked,
    /// Until the connection closes (responses only).
    UntilClose,
}

/// What the gateway needs from a request head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    /// The method, as sent.
    pub method: String,
    /// The request target, as sent.
    pub target: String,
    /// The path part of the target (without query), origin-form.
    pub path: String,
    /// The Host header (or the absolute-form authority), lower-cased,
    /// without the port.
    pub host: String,
    /// Body framing.
    pub framing: Framing,
    /// HTTP/1.0 without keep-alive, or `Connection: close`.
    pub close: bool,
    /// The headers the endpoint policy reads.
    pub signals: Signals,
}

/// The request headers that say who signed a request and which other
/// resources it names. Each is refused when sent twice: an upstream might
/// read the other copy than the policy did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Signals {
    /// `Authorization`.
    pub authorization: Option<String>,
    /// `x-oss-copy-source` or `x-amz-copy-source` (only one may be sent).
    pub copy_source: Option<String>,
    /// `x-oss-symlink-target`.
    pub symlink_target: Option<String>,
    /// `Content-Type: multipart/form-data` (a PostObject form upload).
    pub form_upload: bool,
    /// `x-oss-tagging` or `x-amz-tagging`: the write also sets tags.
    pub tagging: bool,
}

/// What the gateway needs from a response head.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Body framing.
    pub framing: Framing,
    /// The server will close after this response.
    pub close: bool,
}

/// Whether a request target's path has a `.` or `..` segment, raw or
/// percent-encoded (`%2e`, and `%2f` or `\\` as separators). Object keys are
/// literal, but a server that normalises paths would resolve such a
/// segment, and a path-style request would then name another bucket than
/// the one its first segment shows (and the policy checked).
pub fn has_dot_segment(target: &str) -> bool {
    let path = target.split('?').next().unwrap_or("");
    if !path.contains('.') && !path.contains('%') {
        // The common case costs one scan and no allocation.
        return false;
    }
    let decoded = percent_decode(path.as_bytes());
    decoded
        .split(|&b| b == b'/' || b == b'\\')
        .any(|segment| segment == b"." || segment == b"..")
}

/// `%XX` escapes decoded; anything malformed is kept as it is.
pub fn percent_decode(raw: &[u8]) -> Vec<u8> {
    let hex = |b: u8| (b as char).to_digit(16).map(|d| d as u8);
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(hi), Some(lo)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                out.push(hi << 4 | lo);
                i += 3;
                continue;
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

/// Offset just past `\r\n\r\n`, if the head is complete. Only the first
/// `MAX_HEAD` bytes are searched: a longer head is never complete.
pub fn head_end(buf: &[u8]) -> Option<usize> {
    let window = &buf[..buf.len().min(MAX_HEAD)];
    window
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|p| p + 4)
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

struct Fields<'a> {
    lines: Vec<&'a [u8]>,
}

/// Splits a head into its start line and header lines, refusing bare LF,
/// obs-fold, bad field names and control bytes.
fn split(head: &[u8]) -> Result<(&[u8], Fields<'_>), &'static str> {
    if !head.ends_with(b"\r\n\r\n") {
        return Err("incomplete head");
    }
    // Every line ends in LF; the last one is the empty line.
    let body = &head[..head.len() - 2];
    let mut lines = body.split(|&b| b == b'\n');
    lines.next_back();
    let start = crlf_line(lines.next().ok_or("empty head")?)?;
    let mut fields = Vec::new();
    for l in lines {
        let l = crlf_line(l)?;
        if l.first().is_some_and(|b| *b == b' ' || *b == b'\t') {
            return Err("obsolete line folding (obs-fold)");
        }
        let colon = l
            .iter()
            .position(|&b| b == b':')
            .ok_or("header line without ':'")?;
        if colon == 0 || !l[..colon].iter().all(|&b| is_tchar(b)) {
            return Err("invalid header name");
        }
        if l[colon + 1..]
            .iter()
            .any(|&b| (b < 0x20 && b != b'\t') || b == 0x7f)
        {
            return Err("control character in a header value");
        }
        fields.push(l);
    }
    Ok((start, Fields { lines: fields }))
}

/// A line (LF already split off) without its CR, which must be there and
/// be its only CR.
fn crlf_line(line: &[u8]) -> Result<&[u8], &'static str> {
    let line = line.strip_suffix(b"\r").ok_or("bare LF line ending")?;
    if line.contains(&b'\r') {
        return Err("stray CR in the head");
    }
    Ok(line)
}

/// `v` without leading and trailing spaces and tabs (HTTP's OWS).
fn trim_ows(v: &[u8]) -> &[u8] {
    let ows = |b: &u8| *b == b' ' || *b == b'\t';
    let start = v.iter().position(|b| !ows(b)).unwrap_or(v.len());
    let end = v.iter().rposition(|b| !ows(b)).map_or(start, |i| i + 1);
    &v[start..end]
}

/// The comma-separated elements of header values, each trimmed.
fn elements<'v>(values: impl Iterator<Item = &'v [u8]>) -> impl Iterator<Item = &'v [u8]> {
    values.flat_map(|v| v.split(|&b| b == b',').map(trim_ows))
}

impl<'a> Fields<'a> {
    /// Every value of `name` (case-insensitive), trimmed, in order. The
    /// parser runs per request and per response, so nothing is allocated.
    fn values<'s>(&'s self, name: &'s str) -> impl Iterator<Item = &'a [u8]> + 's {
        self.lines.iter().filter_map(move |l| {
            let colon = l.iter().position(|&b| b == b':')?;
            l[..colon]
                .eq_ignore_ascii_case(name.as_bytes())
                .then(|| trim_ows(&l[colon + 1..]))
        })
    }

    /// Whether the Connection header lists `token` (case-insensitive).
    fn connection_has(&self, token: &str) -> bool {
        elements(self.values("connection")).any(|t| t.eq_ignore_ascii_case(token.as_bytes()))
    }

    /// The body framing from Content-Length and Transfer-Encoding.
    fn framing(&self) -> Result<Option<Framing>, &'static str> {
        let has_te = self.values("transfer-encoding").next().is_some();
        let has_cl = self.values("content-length").next().is_some();
        if has_te && has_cl {
            return Err("both Content-Length and Transfer-Encoding");
        }
        if has_te {
            let mut codings = elements(self.values("transfer-encoding"));
            return match (codings.next(), codings.next()) {
                (Some(only), None) if only.eq_ignore_ascii_case(b"chunked") => {
                    Ok(Some(Framing::Chunked))
                }
                _ => Err("unsupported Transfer-Encoding (only a single \"chunked\")"),
            };
        }
        let mut length = None;
        for v in elements(self.values("content-length")) {
            if v.is_empty() || !v.iter().all(|b| b.is_ascii_digit()) || v.len() > 19 {
                return Err("invalid Content-Length");
            }
            let n: u64 = std::str::from_utf8(v)
                .ok()
                .and_then(|d| d.parse().ok())
                .ok_or("invalid Content-Length")?;
            match length {
                Some(prev) if prev != n => return Err("differing Content-Length values"),
                _ => length = Some(n),
            }
        }
        Ok(length.map(Framing::Length))
    }

    /// Whether the connection closes after this message.
    fn closes(&self, minor: u8) -> bool {
        self.connection_has("close") || (minor == 0 && !self.connection_has("keep-alive"))
    }
}

fn version(v: &[u8]) -> Result<u8, &'static str> {
    match v {
        b"HTTP/1.1" => Ok(1),
        b"HTTP/1.0" => Ok(0),
        _ => Err("not HTTP/1.0 or HTTP/1.1"),
    }
}

/// Strips the port from a Host value and lower-cases it; checks it is a
/// plausible host.
fn host_only(value: &str) -> Result<String, &'static str> {
    let v = value.trim();
    let host = if let Some(rest) = v.strip_prefix('[') {
        rest.split_once(']')
            .map(|(h, _)| h)
            .ok_or("bad IPv6 Host")?
    } else {
        match v.rsplit_once(':') {
            Some((h, p)) if p.bytes().all(|b| b.is_ascii_digit()) => h,
            _ => v,
        }
    };
    if host.is_empty()
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._:".contains(&b))
    {
        return Err("invalid Host");
    }
    Ok(host.trim_end_matches('.').to_ascii_lowercase())
}

/// The one value of header `name`, if sent; `Err(twice)` if sent twice.
fn single(
    fields: &Fields<'_>,
    name: &str,
    twice: &'static str,
) -> Result<Option<String>, &'static str> {
    let mut v = fields.values(name);
    match (v.next(), v.next()) {
        (None, _) => Ok(None),
        (Some(one), None) => Ok(Some(String::from_utf8_lossy(one).trim().to_string())),
        _ => Err(twice),
    }
}

fn signals(fields: &Fields<'_>) -> Result<Signals, &'static str> {
    let oss_copy = single(
        fields,
        "x-oss-copy-source",
        "duplicate x-oss-copy-source header",
    )?;
    let amz_copy = single(
        fields,
        "x-amz-copy-source",
        "duplicate x-amz-copy-source header",
    )?;
    let copy_source = match (oss_copy, amz_copy) {
        (Some(_), Some(_)) => return Err("both x-oss-copy-source and x-amz-copy-source"),
        (a, b) => a.or(b),
    };
    Ok(Signals {
        authorization: single(fields, "authorization", "duplicate Authorization header")?,
        copy_source,
        symlink_target: single(
            fields,
            "x-oss-symlink-target",
            "duplicate x-oss-symlink-target header",
        )?,
        form_upload: fields
            .values("content-type")
            .any(|v| v.len() >= 19 && v[..19].eq_ignore_ascii_case(b"multipart/form-data")),
        tagging: fields.values("x-oss-tagging").next().is_some()
            || fields.values("x-amz-tagging").next().is_some(),
    })
}

/// Removes every `Connection: close` line from the request head in
/// `buf[..end]` and returns how many bytes went. The gateway does this
/// when it keeps upstream connections for reuse: `Connection` is
/// hop-by-hop, signed by no OSS or S3 signature, and the client's wish to
/// close is honoured on the client side. Other Connection values stay.
pub fn strip_connection_close(buf: &mut Vec<u8>, end: usize) -> usize {
    let Some(first) = buf[..end].windows(2).position(|w| w == b"\r\n") else {
        return 0;
    };
    let mut at = first + 2;
    let mut end = end;
    let mut removed = 0;
    while let Some(len) = buf[at..end].windows(2).position(|w| w == b"\r\n") {
        if len == 0 {
            break;
        }
        let line = &buf[at..at + len];
        let close = line
            .split(|&b| b == b':')
            .next()
            .is_some_and(|n| n.eq_ignore_ascii_case(b"connection"))
            && line
                .splitn(2, |&b| b == b':')
                .nth(1)
                .is_some_and(|v| v.trim_ascii().eq_ignore_ascii_case(b"close"));
        if close {
            buf.drain(at..at + len + 2);
            end -= len + 2;
            removed += len + 2;
        } else {
            at += len + 2;
        }
    }
    removed
}

/// Parses a complete request head (ending in the empty line).
pub fn parse_request(head: &[u8]) -> Result<Request, &'static str> {
    let (start, fields) = split(head)?;
    let mut parts = start.split(|&b| b == b' ');
    let (Some(method), Some(target), Some(ver), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err("malformed request line");
    };
    if method.is_empty() || !method.iter().all(|&b| is_tchar(b)) {
        return Err("invalid method");
    }
    if target.is_empty() || target.iter().any(|&b| b <= 0x20 || b == 0x7f) {
        return Err("invalid request target");
    }
    let minor = version(ver)?;
    let method = String::from_utf8_lossy(method).into_owned();
    let target = String::from_utf8_lossy(target).into_owned();
    let mut hosts = fields.values("host");
    let host = match (hosts.next(), hosts.next()) {
        (Some(h), None) => host_only(&String::from_utf8_lossy(h))?,
        (None, _) => return Err("missing Host header"),
        _ => return Err("duplicate Host header"),
    };
    let path_and_query = if let Some(rest) = target
        .strip_prefix("http://")
        .or_else(|| target.strip_prefix("https://"))
    {
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i..]),
            None => (rest, "/"),
        };
        if host_only(authority)? != host {
            return Err("absolute-form target disagrees with Host");
        }
        path.to_string()
    } else if target.starts_with('/') {
        target.clone()
    } else if method == "OPTIONS" && target == "*" {
        "*".to_string()
    } else {
        return Err("unsupported request target form");
    };
    let path = path_and_query
        .split_once('?')
        .map_or(path_and_query.clone(), |(p, _)| p.to_string());
    let framing = fields.framing()?.unwrap_or(Framing::None);
    let close = fields.closes(minor);
    let signals = signals(&fields)?;
    Ok(Request {
        method,
        target,
        path,
        host,
        framing,
        close,
        signals,
    })
}

/// Parses a complete response head; `head_request` tells whether the
/// request was HEAD (no body then).
pub fn parse_response(head: &[u8], head_request: bool) -> Result<Response, &'static str> {
    let (start, fields) = split(head)?;
    let mut parts = start.splitn(3, |&b| b == b' ');
    let minor = version(parts.next().unwrap_or_default())?;
    let code = parts.next().ok_or("malformed status line")?;
    if code.len() != 3 || !code.iter().all(|b| b.is_ascii_digit()) {
        return Err("malformed status code");
    }
    let status: u16 = String::from_utf8_lossy(code)
        .parse()
        .map_err(|_| "malformed status code")?;
    let close = fields.closes(minor);
    let declared = fields.framing()?;
    let framing = if head_request || (100..200).contains(&status) || status == 204 || status == 304
    {
        Framing::None
    } else {
        declared.unwrap_or(Framing::UntilClose)
    };
    Ok(Response {
        status,
        framing,
        close: close || framing == Framing::UntilClose,
    })
}

/// Incremental chunked-body scanner: it finds where the body ends and
/// checks the framing, without changing the bytes.
#[derive(Debug, Default)]
pub struct Chunked {
    state: ChunkState,
    line: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq)]
enum ChunkState {
    #[default]
    Size,
    Data(u64),
    DataEnd,
    Trailers,
    Done,
}

impl Chunked {
    /// Scans `data`; returns how many bytes belong to the body (all of
    /// `data` unless the body ends inside it) and whether it ended.
    pub fn scan(&mut self, data: &[u8]) -> Result<(usize, bool), &'static str> {
        let mut i = 0;
        while i < data.len() {
            match &mut self.state {
                ChunkState::Done => break,
                ChunkState::Data(left) => {
                    let take = (*left).min((data.len() - i) as u64) as usize;
                    *left -= take as u64;
                    i += take;
                    if *left == 0 {
                        self.state = ChunkState::DataEnd;
                    }
                }
                _ => {
                    let b = data[i];
                    i += 1;
                    if b != b'\n' {
                        if self.line.len() > 4096 {
                            return Err("chunk line too long");
                        }
                        self.line.push(b);
                        continue;
                    }
                    let line = std::mem::take(&mut self.line);
                    let line = line.strip_suffix(b"\r").ok_or("bare LF in chunked body")?;
                    self.state = match self.state {
                        ChunkState::Size => {
                            let size = line.split(|&b| b == b';').next().unwrap_or_default();
                            if size.is_empty()
                                || size.len() > 15
                                || !size.iter().all(u8::is_ascii_hexdigit)
                            {
                                return Err("bad chunk size");
                            }
                            let n = u64::from_str_radix(&String::from_utf8_lossy(size), 16)
                                .map_err(|_| "bad chunk size")?;
                            if n == 0 {
                                ChunkState::Trailers
                            } else {
                                ChunkState::Data(n)
                            }
                        }
                        ChunkState::DataEnd if line.is_empty() => ChunkState::Size,
                        ChunkState::DataEnd => return Err("chunk data longer than its size"),
                        ChunkState::Trailers if line.is_empty() => ChunkState::Done,
                        ChunkState::Trailers => ChunkState::Trailers,
                        _ => return Err("chunked framing error"),
                    };
                }
            }
        }
        Ok((i, self.state == ChunkState::Done))
    }
}

#[cfg(test)]
mod strip_tests {
    use super::*;

    #[test]
    fn only_connection_close_lines_go() {
        let head = b"GET /k HTTP/1.1\r\nHost: b.oss.test\r\nconnection:  Close \r\nX-A: connection: close\r\nConnection: TE\r\n\r\nBODY";
        let mut buf = head.to_vec();
        let end = head_end(&buf).unwrap();
        let n = strip_connection_close(&mut buf, end);
        assert_eq!(n, "connection:  Close \r\n".len());
        assert_eq!(
            buf,
            b"GET /k HTTP/1.1\r\nHost: b.oss.test\r\nX-A: connection: close\r\nConnection: TE\r\n\r\nBODY".to_vec()
        );
        let req = parse_request(&buf[..end - n]).unwrap();
        assert!(!req.close);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn dot_segments_are_found_raw_and_encoded() {
        use super::has_dot_segment as dots;
        for bad in [
            "/aws-alibaba-oss/../attacker/x.txt",
            "/aws-alibaba-oss/%2e%2e/attacker/planted.txt",
            "/b/%2E./x",
            "/b/..%2fattacker/x",
            "/b/..%5Cattacker",
            "/b/./k",
            "/..",
            "/b/k/..?acl",
        ] {
            assert!(dots(bad), "{bad}");
        }
        for good in [
            "/b/a..b",
            "/b/...",
            "/b/k?x=/../",
            "/",
            "/b/%2e%2e.txt",
            "/b/.hidden",
        ] {
            assert!(!dots(good), "{good}");
        }
    }

    use super::*;

    fn req(s: &str) -> Result<Request, &'static str> {
        parse_request(s.as_bytes())
    }

    #[test]
    fn requests_parse_and_smuggling_shapes_are_refused() {
        let r = req("PUT /b/k?x=1 HTTP/1.1\r\nHost: B.Oss.Test:80\r\nContent-Length: 5\r\n\r\n")
            .unwrap();
        assert_eq!(
            (r.host.as_str(), r.path.as_str(), r.framing),
            ("b.oss.test", "/b/k", Framing::Length(5))
        );
        assert!(!r.close);
        assert!(req("GET / HTTP/1.0\r\nHost: a\r\n\r\n").unwrap().close);
        let bad = [
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n", "both"),
            ("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", "differing"),
            ("GET / HTTP/1.1\r\nHost: a\r\nX: a\r\n  folded\r\n\r\n", "obs-fold"),
            ("GET / HTTP/1.1\r\nX: a\r\n\r\n", "missing Host"),
            ("GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", "duplicate Host"),
            ("GET http://evil/ HTTP/1.1\r\nHost: a\r\n\r\n", "disagrees"),
            ("POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n", "Transfer-Encoding"),
            ("\x16\x03\x01\x02\x00\r\n\r\n", "request line"),
            ("GET / HTTP/1.1\nHost: a\r\n\r\n", "bare LF"),
            ("GET / HTTP/2.0\r\nHost: a\r\n\r\n", "HTTP/1"),
        ];
        for (text, why) in bad {
            let e = req(text).unwrap_err();
            assert!(e.contains(why), "{text:?}: {e}");
        }
    }

    #[test]
    fn responses_frame_their_bodies() {
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", false).unwrap();
        assert_eq!(
            (r.status, r.framing, r.close),
            (200, Framing::Length(3), false)
        );
        let r = parse_response(b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\n", true).unwrap();
        assert_eq!(r.framing, Framing::None);
        let r = parse_response(b"HTTP/1.1 100 Continue\r\n\r\n", false).unwrap();
        assert_eq!(r.framing, Framing::None);
        let r = parse_response(b"HTTP/1.0 200 OK\r\n\r\n", false).unwrap();
        assert_eq!((r.framing, r.close), (Framing::UntilClose, true));
    }

    #[test]
    fn chunked_bodies_end_exactly_and_bad_sizes_fail() {
        let body = b"4\r\nWiki\r\n5;ext=1\r\npedia\r\n0\r\nTrailer: x\r\n\r\nGET /next";
        let mut c = Chunked::default();
        let (n, done) = c.scan(&body[..10]).unwrap();
        assert_eq!((n, done), (10, false));
        let (m, done) = c.scan(&body[10..]).unwrap();
        assert!(done);
        assert_eq!(&body[10 + m..], b"GET /next");
        assert!(Chunked::default().scan(b"zz\r\n").is_err());
        assert!(Chunked::default().scan(b"2\r\nabc\r\n").is_err());
    }
}
