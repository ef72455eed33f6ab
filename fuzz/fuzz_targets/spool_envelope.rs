//! Every envelope file read back from the spool goes through
//! `Envelope::decode` (A4: spool files are untrusted input): no input may
//! panic or allocate without bound, and what it accepts must encode back
//! to an envelope that decodes the same. An odd first byte takes the rest
//! as a payload and frames it with a right checksum, so the fuzzer reaches
//! the payload decoder and the field checks.
#![no_main]

use libfuzzer_sys::fuzz_target;
use smtpd::spool::envelope::{frame, MAX_PAYLOAD};
use smtpd::spool::Envelope;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else { return };
    let file = if mode & 1 == 1 && rest.len() <= MAX_PAYLOAD {
        frame(rest)
    } else {
        data.to_vec()
    };
    if let Ok(e) = Envelope::decode(&file) {
        let again = e.encode().expect("a decoded envelope encodes");
        assert_eq!(Envelope::decode(&again).as_ref(), Ok(&e));
    }
});
