//! The server name in a TLS ClientHello, read with rustls's own parser (a
//! hello may arrive split across reads or span several records). Pure
//! functions over bytes, fuzzed.

/// Feeds bytes to the ClientHello reader: `Ok(None)` wants more bytes,
/// `Ok(Some(name))` is the (lower-cased) server name, if the hello had one.
pub fn step(
    acceptor: &mut rustls::server::Acceptor,
    data: &[u8],
) -> Result<Option<Option<String>>, String> {
    let mut cur = data;
    while !cur.is_empty() {
        match acceptor.read_tls(&mut cur) {
            Ok(0) => break,
            Ok(_) => {}
            Err(e) => return Err(format!("not TLS: {e}")),
        }
    }
    match acceptor.accept() {
        Ok(None) => Ok(None),
        Ok(Some(accepted)) => Ok(Some(
            accepted
                .client_hello()
                .server_name()
                .map(|s| s.to_ascii_lowercase()),
        )),
        Err((e, _)) => Err(format!("not a TLS ClientHello: {e}")),
    }
}

/// The server name in a complete ClientHello (for tests and fuzzing).
pub fn server_name(data: &[u8]) -> Result<Option<Option<String>>, String> {
    step(&mut rustls::server::Acceptor::default(), data)
}
