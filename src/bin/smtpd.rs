//! smtpd(8): the parent, or with `-x ROLE` one of its roles.

#![forbid(unsafe_code)]

use smtpd::parent::{self, Opts};
use smtpd::proc::Role;
use smtpd::prologue::{self, ChildOpts};

const USAGE: &str = "usage: smtpd [-dFhnv] [-D macro=value] [-f file] [-P system] [-T trace]";
const DEFAULT_CONFIG: &str = "/etc/mail/smtpd.conf";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let mut opts = Opts {
        config: DEFAULT_CONFIG.into(),
        argv0: args.first().cloned().unwrap_or_default(),
        ..Opts::default()
    };
    let mut role: Option<Role> = None;
    let mut delivery = false;
    let mut i = 1;
    while i < args.len() {
        let arg = &args[i];
        i += 1;
        let Some(flags) = arg.strip_prefix('-').filter(|f| !f.is_empty()) else {
            usage()
        };
        for (pos, c) in flags.char_indices() {
            match c {
                'd' => opts.debug = true,
                'F' => opts.foreground = true,
                'n' => opts.check_only = true,
                'v' => opts.verbose = true,
                'h' => usage(),
                'D' | 'f' | 'P' | 'T' | 'x' => {
                    // getopt(3): the value is the rest of this word or the next word.
                    let rest = &flags[pos + 1..];
                    let value = if !rest.is_empty() {
                        rest.to_string()
                    } else if i < args.len() {
                        i += 1;
                        args[i - 1].clone()
                    } else {
                        usage()
                    };
                    match c {
                        'f' => opts.config = value,
                        'x' if value == Role::Delivery.name() => delivery = true,
                        'x' => {
                            role = Some(Role::child_from_name(&value).unwrap_or_else(|| usage()))
                        }
                        'D' => match value.split_once('=') {
                            Some((k, v)) if !k.is_empty() => {
                                opts.defines.push((k.to_string(), v.to_string()))
                            }
                            _ => {
                                eprintln!("smtpd: could not parse macro definition {value}");
                                std::process::exit(1)
                            }
                        },
                        'P' => match value.as_str() {
                            "mda" => opts.pause_mda = true,
                            "mta" => opts.pause_mta = true,
                            "smtp" => opts.pause_smtp = true,
                            _ => {
                                eprintln!("smtpd: invalid system specified: {value}");
                                std::process::exit(1)
                            }
                        },
                        _ => {} // -T trace: accepted; tracing is not implemented, -v logs more.
                    }
                    break;
                }
                _ => usage(),
            }
        }
    }
    if delivery {
        smtpd::delivery::runner::run(opts.debug, opts.verbose);
    }
    if let Some(role) = role {
        prologue::run(
            role,
            ChildOpts {
                debug: opts.debug,
                verbose: opts.verbose,
            },
        );
    }
    std::process::exit(parent::run(opts));
}

fn usage() -> ! {
    eprintln!("{USAGE}");
    std::process::exit(1)
}
