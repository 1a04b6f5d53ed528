//! stone's stream rewriting, as settings: relaying a stream over an HTTP
//! request (`<host>:<port>/http <sport> <request>` on one end,
//! `<sport>/http` on the other) and inserting a header into HTTP requests
//! (`/proxy`, `/mproxy`). The stream adapters that apply them are in
//! `pump::rewrite`.

use std::net::SocketAddr;

/// What a stone rewrites on its streams.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Rewrite {
    /// `/http` on the destination: send this request first, and drop the
    /// upstream's response head.
    pub http_request: Option<Template>,
    /// `/http` on the sport: drop the client's request head and answer
    /// `HTTP/1.0 200 OK` before relaying.
    pub http_accept: bool,
    /// `/proxy` and `/mproxy`: insert this header line after the request
    /// line.
    pub header: Option<Template>,
    /// `/mproxy`: insert it into every request, not just the first.
    pub header_every: bool,
}

/// One piece of an expanded request or header.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Piece {
    Text(Vec<u8>),
    /// `\a`: the client's address.
    ClientIp,
    /// `\A`: the client's address and port.
    ClientAddr,
    /// `\d`: the address the client connected to.
    DestIp,
    /// `\D`: that address and port.
    DestAddr,
}

/// A request or header with stone's `\` escapes, parsed once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Piece>);

impl Template {
    /// Parses stone's escapes: `\n \r \t \\ \a \A \d \D`. The escapes that
    /// need unix-domain clients, ident or certificate regexes are refused.
    pub fn parse(text: &str) -> Result<Template, String> {
        let mut pieces = Vec::new();
        let mut lit = Vec::new();
        let mut chars = text.chars();
        while let Some(c) = chars.next() {
            if c != '\\' {
                let mut b = [0u8; 4];
                lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                continue;
            }
            let special = match chars.next() {
                None => {
                    lit.push(b'\\');
                    break;
                }
                Some('n') => {
                    lit.push(b'\n');
                    continue;
                }
                Some('r') => {
                    lit.push(b'\r');
                    continue;
                }
                Some('t') => {
                    lit.push(b'\t');
                    continue;
                }
                Some('a') => Piece::ClientIp,
                Some('A') => Piece::ClientAddr,
                Some('d') => Piece::DestIp,
                Some('D') => Piece::DestAddr,
                Some(e @ ('u' | 'U' | 'g' | 'G' | '0'..='9' | '?')) => {
                    return Err(format!(
                        "{text:?}: the \\{e} escape needs unix-domain clients, ident or SSL certificate regexes, which ossrelay does not implement"
                    ))
                }
                Some(other) => {
                    let mut b = [0u8; 4];
                    lit.extend_from_slice(other.encode_utf8(&mut b).as_bytes());
                    continue;
                }
            };
            if !lit.is_empty() {
                pieces.push(Piece::Text(std::mem::take(&mut lit)));
            }
            pieces.push(special);
        }
        if !lit.is_empty() {
            pieces.push(Piece::Text(lit));
        }
        Ok(Template(pieces))
    }

    /// The bytes for one connection.
    pub fn expand(&self, client: SocketAddr, local: Option<SocketAddr>) -> Vec<u8> {
        let mut out = Vec::new();
        for p in &self.0 {
            match p {
                Piece::Text(t) => out.extend_from_slice(t),
                Piece::ClientIp => out.extend_from_slice(client.ip().to_string().as_bytes()),
                Piece::ClientAddr => out.extend_from_slice(client.to_string().as_bytes()),
                Piece::DestIp => {
                    if let Some(l) = local {
                        out.extend_from_slice(l.ip().to_string().as_bytes())
                    }
                }
                Piece::DestAddr => {
                    if let Some(l) = local {
                        out.extend_from_slice(l.to_string().as_bytes())
                    }
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_expand_like_stone() {
        let t =
            Template::parse(r"POST http://outer:8023/\a/\A/x\ty\\z HTTP/1.0\nHost: h\q\").unwrap();
        let client: SocketAddr = "10.0.0.9:4000".parse().unwrap();
        assert_eq!(
            t.expand(client, None),
            b"POST http://outer:8023/10.0.0.9/10.0.0.9:4000/x\ty\\z HTTP/1.0\nHost: hq\\".to_vec()
        );
        assert!(Template::parse(r"x \U").unwrap_err().contains("\\U"));
    }
}
