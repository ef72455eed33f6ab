//! smtpctl(8): control the running smtpd (`smtpd::smtpctl`), and
//! `encrypt`, which needs no daemon. Called as `mailq`: `show queue`;
//! as `sendmail` (or `send-mail`): enqueue a message; as `newaliases`
//! and `makemap`: check tables.

#![forbid(unsafe_code)]

use smtpd::smtpctl::{self, parse};
use std::io::{BufRead, Write};

fn main() {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    // The name it was called by picks the program, as OpenSMTPD's.
    let name = std::env::args().next().unwrap_or_default();
    match name.rsplit('/').next() {
        Some("mailq") => args = vec!["show".into(), "queue".into()],
        Some("sendmail" | "send-mail") => {
            // -bi anywhere: newaliases, as OpenSMTPD's sendmail_compat.
            if args.iter().any(|a| a.starts_with("-bi")) {
                std::process::exit(smtpctl::makemap::newaliases(&args));
            }
            std::process::exit(smtpctl::sendmail::main(&args))
        }
        Some("newaliases") => std::process::exit(smtpctl::makemap::newaliases(&args)),
        Some("makemap") => std::process::exit(smtpctl::makemap::makemap(&args)),
        _ => {}
    }
    // encrypt takes the rest of the line as one password, as before.
    if args.first().map(String::as_str) == Some("encrypt") {
        std::process::exit(encrypt(&args[1..]));
    }
    match parse::parse(&args) {
        Ok(cmd) => std::process::exit(smtpctl::run(&cmd)),
        Err(text) => {
            eprint!("{text}");
            // OpenSMTPD's cmd_run() returns -1 for these.
            std::process::exit(255)
        }
    }
}

/// `smtpctl encrypt [string]`: the bcrypt hash of `string`, or of each
/// line of standard input, one per line, for a credentials table.
fn encrypt(args: &[String]) -> i32 {
    let mut out = std::io::stdout().lock();
    let mut one = |password: &[u8]| match smtpd::lka::auth::encrypt(password) {
        Ok(h) => writeln!(out, "{h}").is_ok(),
        Err(e) => {
            eprintln!("smtpctl: encrypt: {e}");
            false
        }
    };
    if !args.is_empty() {
        return if one(args.join(" ").as_bytes()) { 0 } else { 1 };
    }
    for line in std::io::stdin().lock().split(b'\n') {
        let Ok(mut line) = line else {
            eprintln!("smtpctl: encrypt: cannot read standard input");
            return 1;
        };
        if line.last() == Some(&b'\r') {
            line.pop();
        }
        if !one(&line) {
            return 1;
        }
    }
    0
}
