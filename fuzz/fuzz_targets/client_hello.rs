//! The SNI passthrough's ClientHello reading: no panics on any bytes, and
//! a name, when found, is lower-case.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(Some(Some(name))) = ossrelay::wire::client_hello::server_name(data) {
        assert_eq!(name, name.to_ascii_lowercase());
    }
});
