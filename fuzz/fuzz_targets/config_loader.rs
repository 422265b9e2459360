//! The config loader and compiler on arbitrary YAML: never a panic, and
//! every error points into the text (1-based line and column within it).
#![no_main]

use libfuzzer_sys::fuzz_target;
use std::path::Path;
use std::sync::OnceLock;
use tollgate::gateway::{Deps, Gateway};

/// Built once: the upstream client reads the system roots, too slow per run.
fn deps() -> &'static Deps {
    static DEPS: OnceLock<Deps> = OnceLock::new();
    DEPS.get_or_init(|| {
        let loaded =
            tollgate::config::load_str(Path::new("fuzz.yaml"), "version: 1\nlisten: 127.0.0.1:0\n")
                .expect("minimal config");
        Deps::for_config(&loaded, tollgate::clock::SystemClock::shared()).expect("deps")
    })
}

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    // Files a config names are read at load or compile: keep the fuzzer
    // away from the filesystem (a `/dev/zero` key file is not a finding).
    if text.contains("include") || text.contains("file") {
        return;
    }
    let file = Path::new("/nonexistent/fuzz.yaml");
    let check = |errors: &[tollgate::config::ConfigError]| {
        assert!(!errors.is_empty());
        let lines = text.split('\n').count();
        for e in errors {
            assert!(e.line >= 1 && e.column >= 1, "{e}");
            assert!(e.line <= lines, "{e} (the text has {lines} lines)");
            assert!(!e.message.is_empty(), "{e}");
        }
    };
    match tollgate::config::load_str(file, text) {
        Err(errors) => check(&errors),
        Ok(loaded) => {
            if let Err(errors) = Gateway::compile(loaded, deps()) {
                check(&errors);
            }
        }
    }
});
