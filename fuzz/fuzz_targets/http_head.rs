//! The gateway's request/response head parser and chunked scanner: no
//! panics, and nothing ambiguous about framing is ever accepted.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ossrelay::wire::http_head::{self as head, Chunked, Framing};

fuzz_target!(|data: &[u8]| {
    if let Some(end) = head::head_end(data) {
        if let Ok(req) = head::parse_request(&data[..end]) {
            let text = String::from_utf8_lossy(&data[..end]).to_ascii_lowercase();
            // Both framings at once is the classic smuggling shape.
            assert!(!(text.contains("\ncontent-length:") && text.contains("\ntransfer-encoding:")));
            assert!(!req.host.is_empty());
            if req.framing == Framing::Chunked {
                let mut c = Chunked::default();
                if let Ok((used, _)) = c.scan(&data[end..]) {
                    assert!(used <= data.len() - end);
                }
            }
        }
        let _ = head::parse_response(&data[..end], data.first() == Some(&b'H'));
    }
    let mut c = Chunked::default();
    let mid = data.len() / 2;
    if let Ok((a, done)) = c.scan(&data[..mid]) {
        assert!(a <= mid);
        if !done {
            let _ = c.scan(&data[mid..]);
        }
    }
});
