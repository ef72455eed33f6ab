//! smtpctl(8). The control protocol and most commands come with the
//! smtpctl issue; until then each says so rather than pretending. What
//! needs no daemon is here already: `smtpctl encrypt`.

#![forbid(unsafe_code)]

use std::io::{BufRead, Write};

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.first().map(String::as_str) {
        Some("encrypt") => std::process::exit(encrypt(&args[1..])),
        Some(cmd) => {
            eprintln!("smtpctl: {cmd}: the control interface is not implemented yet");
            std::process::exit(1)
        }
        None => {
            eprintln!("usage: smtpctl command [argument ...]");
            std::process::exit(1)
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
