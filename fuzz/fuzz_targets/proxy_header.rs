//! PROXY protocol v1/v2 header parsing: no panics, and a parsed header
//! never claims more bytes than were given.
#![no_main]

use libfuzzer_sys::fuzz_target;
use ossrelay::wire::proxy_protocol::{parse, Parsed, Version};

fuzz_target!(|data: &[u8]| {
    for v in [Version::V1, Version::V2] {
        match parse(data, v) {
            Ok(Some(Parsed::Proxied(len, _))) | Ok(Some(Parsed::Local(len))) => {
                assert!(len <= data.len())
            }
            _ => {}
        }
    }
});
