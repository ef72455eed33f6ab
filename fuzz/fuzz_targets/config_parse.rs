//! The lexer and parser are total: any bytes give a config or errors, and
//! whatever parses can be printed. (The checker is left out: it stats
//! files and resolves names, which is not what a fuzzer should exercise.)
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::config::{parser::Parser, print::print};

fuzz_target!(|data: &[u8]| {
    let mut p = Parser::new(&[]);
    p.file("fuzz.conf", data);
    let (cfg, errors) = p.finish();
    if errors.is_empty() {
        let _ = print(&cfg);
    }
});
