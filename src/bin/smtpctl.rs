//! smtpctl(8). The control protocol and its commands come with the smtpctl
//! issue; until then this says so rather than pretending.

#![forbid(unsafe_code)]

fn main() {
    eprintln!("smtpctl: the control interface is not implemented yet");
    std::process::exit(1);
}
