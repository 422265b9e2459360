//! The `headers` policy value templates (`${client.id}` and friends):
//! parsing and rendering never panic, and text without placeholders
//! renders as itself.
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::net::{IpAddr, Ipv6Addr};
use tollgate::fuzzing::render_header_template;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // `${env.NAME}` reads the environment: the fuzzer may name any variable.
    let ip = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    for client in [Some("hr-portal"), None] {
        let rendered = render_header_template(text, client, "req-1", ip);
        if let Ok(Some(value)) = &rendered {
            if !text.contains("${") {
                assert_eq!(value.as_bytes(), text.as_bytes());
            }
            if text.contains("${client.id}") {
                assert!(client.is_some(), "an anonymous call rendered {value:?}");
            }
        }
    }
});
