//! The config parser is total: any bytes give a config or errors.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = smtpd::config::parse("fuzz.conf", data);
});
