//! Parser, checker and printer tests. The property test generates random
//! configs (as values), prints them, parses the text and wants the same
//! value back.

use super::ast::*;
use super::parser::Parser;
use super::print::print;
use super::{parse, ConfigError};

fn parse_only(text: &str) -> Result<Config, Vec<ConfigError>> {
    let mut p = Parser::new(&[]);
    p.file("t.conf", text.as_bytes());
    let (cfg, errors) = p.finish();
    if errors.is_empty() {
        Ok(cfg)
    } else {
        Err(errors)
    }
}

fn errors(text: &str) -> Vec<String> {
    match parse("t.conf", text.as_bytes(), &[]) {
        Ok(_) => vec![],
        Err(e) => e.iter().map(|e| e.to_string()).collect(),
    }
}

const EXAMPLE: &str = r#"
# The first example of smtpd.conf(5), with a smarthost.
table secrets { bob = "username:password" }
table aliases { root = "bob", postmaster = "root" }
listen on lo
action "local_mail" mbox alias <aliases>
action "outbound" relay host smtp+tls://bob@smtp.example.com \
        auth <secrets>
match from local for local action "local_mail"
match from local for any action "outbound"
"#;

#[test]
fn parses_the_manual_example() {
    let cfg = parse("t.conf", EXAMPLE.as_bytes(), &[]).unwrap().config;
    assert_eq!(cfg.tables.len(), 2);
    assert_eq!(cfg.listens[0].on, ListenOn::Name("lo".into()));
    let Method::Relay(r) = &cfg.actions[1].method else {
        panic!()
    };
    assert_eq!(
        r.host,
        Some(TableRef::Inline(vec![
            "smtp+tls://bob@smtp.example.com".into()
        ]))
    );
    assert_eq!(r.auth, Some(TableRef::Named("secrets".into())));
    assert_eq!(
        cfg.matches[1].criteria,
        vec![
            (false, Criterion::From(From::Local)),
            (false, Criterion::For(For::Any))
        ]
    );
    assert_eq!(cfg.actions[1].pos.line, 7);
}

#[test]
fn macros_and_defines() {
    let text =
        "p = \"2525\"\nlisten on 127.0.0.1 port $p\naction a mbox\nmatch for local action a\n";
    let cfg = parse("t.conf", text.as_bytes(), &[]).unwrap().config;
    assert_eq!(cfg.listens[0].opts.port, Some(2525));
    let over = [("p".to_string(), "26".to_string())];
    let cfg = parse("t.conf", text.as_bytes(), &over).unwrap().config;
    assert_eq!(cfg.listens[0].opts.port, Some(26), "-D wins over the file");
}

#[test]
fn errors_name_the_line_and_go_on() {
    let e = errors("listen on lo port 0\naction a bogus\nmatch for any action nope\naction b mbox\nmatch for local action b\n");
    assert_eq!(
        e,
        vec![
            "t.conf:1: invalid port: 0",
            "t.conf:2: syntax error: unexpected `bogus`",
            "t.conf:3: no such dispatcher: nope"
        ]
    );
}

#[test]
fn keywords_are_not_names() {
    assert_eq!(
        errors("action local mbox\nmatch for local action local\n")[0],
        "t.conf:1: syntax error: unexpected `local`"
    );
    assert!(errors("action \"local\" mbox\nmatch for local action \"local\"\n").is_empty());
}

#[test]
fn semantic_checks() {
    assert!(errors("listen on lo\n").contains(&"t.conf: no rules, nothing to do".to_string()));
    let e = errors("listen on lo tls\naction a mbox\nmatch for local action a\n");
    assert!(e[0].contains("need a pki"), "{e:?}");
    let e = errors("listen on lo pki nope tls\naction a mbox\nmatch for local action a\n");
    assert!(
        e.iter().any(|l| l.contains("pki name not found: nope")),
        "{e:?}"
    );
    let e = errors("action r relay host \"gopher://x\"\nmatch for any action r\n");
    assert!(e[0].contains("invalid relay url"), "{e:?}");
    let e = errors("match for any action x\n");
    assert_eq!(e[0], "t.conf:1: no such dispatcher: x");
    let e = errors("table t { a }\ntable t { b }\naction a mbox\nmatch for local action a\n");
    assert_eq!(e, vec!["t.conf:2: table \"t\" already defined"]);
}

#[test]
fn warnings_for_unused_actions_and_open_relays() {
    let l = parse(
        "t.conf",
        b"action a mbox\naction r relay\nmatch from any for any action r\n",
        &[],
    )
    .unwrap();
    let w: Vec<String> = l.warnings.iter().map(|w| w.to_string()).collect();
    assert!(w.iter().any(|w| w.contains("\"a\" is not used")), "{w:?}");
    assert!(w.iter().any(|w| w.contains("open relay")), "{w:?}");
    let l = parse(
        "t.conf",
        b"action r relay\nmatch from any auth for any action r\n",
        &[],
    )
    .unwrap();
    assert!(!l.warnings.iter().any(|w| w.message.contains("open relay")));
}

#[test]
fn include_loops_and_depth_are_errors() {
    let dir = std::env::temp_dir().join(format!("smtpd-include-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let a = dir.join("a.conf");
    let b = dir.join("b.conf");
    std::fs::write(&a, format!("include \"{}\"\n", b.display())).unwrap();
    std::fs::write(&b, format!("include \"{}\"\n", a.display())).unwrap();
    let e = super::load(a.to_str().unwrap(), &[]).unwrap_err();
    assert!(
        e.iter().any(|e| e.message.contains("include loop")),
        "{e:?}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn filters_and_chains() {
    let text = r#"
filter f1 phase connect match !rdns disconnect "550 no rDNS"
filter f2 phase mail-from match mail-from regex { ".*@spam\.example" } reject "550 go away"
filter f3 proc-exec "filter-rspamd" user _rspamd
filter c chain { f1, f2, f3 }
listen on lo filter c
action a mbox
match for local action a
"#;
    let cfg = parse("t.conf", text.as_bytes(), &[]).unwrap().config;
    assert_eq!(cfg.filters.len(), 4);
    assert!(errors(
        "filter f phase connect match helo { x } bypass\naction a mbox\nmatch for local action a\n"
    )[0]
    .contains("not available at phase"));
    assert!(errors("filter f phase connect match rdns reject \"hello\"\naction a mbox\nmatch for local action a\n")[0].contains("invalid reject message"));
    assert!(
        errors("filter c chain { nope }\naction a mbox\nmatch for local action a\n")[0]
            .contains("no filter exist")
    );
}

/// A small deterministic generator (xorshift), so failures reproduce.
struct Gen(u64);

impl Gen {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
    fn flip(&mut self) -> bool {
        self.next() & 1 == 1
    }
    /// Strings that stress quoting: blanks, keywords, '#', '$', braces,
    /// quotes, commas and '='.
    fn string(&mut self) -> String {
        const PARTS: &[&str] = &[
            "a", "mx", "local", "# x", "$y", "{z}", "q\"q", "a,b", "k=v", " ", "tls", "ü", "1", "-",
        ];
        let n = 1 + self.below(3);
        (0..n).map(|_| PARTS[self.below(PARTS.len())]).collect()
    }
    fn table_ref(&mut self, tables: &[String]) -> TableRef {
        if !tables.is_empty() && self.flip() {
            TableRef::Named(tables[self.below(tables.len())].clone())
        } else {
            TableRef::Inline((0..1 + self.below(3)).map(|_| self.string()).collect())
        }
    }
    fn pattern(&mut self, tables: &[String]) -> Pattern {
        Pattern {
            regex: self.flip(),
            table: self.table_ref(tables),
        }
    }
}

fn generate(g: &mut Gen) -> Config {
    let mut c = Config::default();
    let ntables = g.below(4);
    for i in 0..ntables {
        let source = match g.below(3) {
            0 => TableSource::Backend {
                backend: "file".into(),
                path: format!("/etc/mail/t{i}"),
            },
            1 => TableSource::List((0..1 + g.below(3)).map(|_| g.string()).collect()),
            _ => TableSource::Map(
                (0..1 + g.below(3))
                    .map(|_| (g.string(), g.string()))
                    .collect(),
            ),
        };
        c.tables.push(Table {
            pos: Pos::default(),
            name: format!("t{i}"),
            source,
        });
    }
    // Criteria take list tables; alias and auth take mappings (file
    // tables may be either).
    let named = |want_map: bool| -> Vec<String> {
        c.tables
            .iter()
            .filter(|t| match t.source {
                TableSource::Map(_) => want_map,
                TableSource::List(_) => !want_map,
                TableSource::Backend { .. } => true,
            })
            .map(|t| t.name.clone())
            .collect()
    };
    let tables = named(false);
    let maps = named(true);
    if g.flip() {
        c.pkis.push(Pki {
            name: "mx.example".into(),
            cert: Some(g.string()),
            key: Some(g.string()),
            ..Pki::default()
        });
    }
    if g.flip() {
        c.settings.queue_ttl = std::time::Duration::from_secs(3600 * (1 + g.below(100) as u64));
        c.settings.max_message_size = 1 + g.below(1 << 30) as u64;
        c.settings
            .limits
            .push(("smtp".into(), "max-rcpt".into(), 10));
        c.settings.max_rcpt = 10;
    }
    if g.flip() {
        c.procs.push(Proc {
            pos: Pos::default(),
            name: "p".into(),
            command: g.string(),
            opts: ProcOpts {
                user: Some(g.string()),
                group: None,
                chroot: None,
            },
        });
        c.filters.push(Filter {
            pos: Pos::default(),
            name: "fp".into(),
            kind: FilterKind::Proc("p".into()),
        });
    }
    if g.flip() {
        let cond = match g.below(3) {
            0 => FilterCond::Fcrdns,
            1 => FilterCond::Rdns(if g.flip() {
                Some(g.pattern(&tables))
            } else {
                None
            }),
            _ => FilterCond::Src(g.pattern(&tables)),
        };
        let verdict = if g.flip() {
            FilterVerdict::Reject("550 no".into())
        } else {
            FilterVerdict::Bypass
        };
        c.filters.push(Filter {
            pos: Pos::default(),
            name: "fb".into(),
            kind: FilterKind::Builtin {
                phase: Phase::Connect,
                negate: g.flip(),
                cond,
                verdict,
            },
        });
    }
    for i in 0..1 + g.below(3) {
        let on = match g.below(3) {
            0 => ListenOn::Addr(format!("127.0.0.{i}").parse().unwrap()),
            1 => ListenOn::Name(g.string()),
            _ if !c.listens.iter().any(|l| l.on == ListenOn::Socket) => ListenOn::Socket,
            _ => ListenOn::Addr("::1".parse().unwrap()),
        };
        let mut opts = ListenOpts::default();
        if on != ListenOn::Socket {
            opts.port = Some(1 + g.below(65535) as u16);
            if !c.pkis.is_empty() && g.flip() {
                opts.tls = Some(if g.flip() {
                    TlsMode::Smtps { verify: g.flip() }
                } else {
                    TlsMode::Require { verify: g.flip() }
                });
                opts.pki = vec!["mx.example".into()];
            }
            if g.flip() {
                opts.auth = Some((AuthMode::Optional, Some(g.table_ref(&tables))));
            }
            opts.hostname = if g.flip() { Some(g.string()) } else { None };
            opts.received_auth = g.flip();
        }
        opts.tag = if g.flip() { Some("tag".into()) } else { None };
        opts.mask_src = g.flip();
        if let Some(f) = c.filters.first() {
            opts.filter = Some(FilterRef::Named(f.name.clone()));
        }
        c.listens.push(Listen {
            pos: Pos::default(),
            on,
            opts,
        });
    }
    for i in 0..1 + g.below(4) {
        let method = match g.below(5) {
            0 => Method::Mbox,
            1 => Method::Maildir {
                path: if g.flip() { Some(g.string()) } else { None },
                junk: g.flip(),
            },
            2 => Method::Lmtp {
                dest: g.string(),
                rcpt_to: g.flip(),
            },
            3 => Method::Mda(g.string()),
            _ => Method::Relay(Box::new(RelayOpts {
                host: Some(TableRef::Inline(vec![
                    "smtp+tls://label@relay.example:587".into()
                ])),
                auth: Some(g.table_ref(&maps)),
                helo: Some(g.string()),
                tls: if g.flip() { Some(g.flip()) } else { None },
                ..RelayOpts::default()
            })),
        };
        let mut local = LocalOpts::default();
        if !matches!(method, Method::Relay(_)) && g.flip() {
            local.alias = Some(g.table_ref(&maps));
        }
        let ttl = if g.flip() {
            Some(std::time::Duration::from_secs(
                60 * (1 + g.below(1000) as u64),
            ))
        } else {
            None
        };
        c.actions.push(Action {
            pos: Pos::default(),
            name: format!("a{i}"),
            method,
            local,
            ttl,
        });
    }
    for _ in 0..1 + g.below(5) {
        let mut criteria = Vec::new();
        if g.flip() {
            let f = match g.below(4) {
                0 => From::Any,
                1 => From::Src(g.pattern(&tables)),
                2 => From::Auth(if g.flip() {
                    Some(g.pattern(&tables))
                } else {
                    None
                }),
                _ => From::Rdns(None),
            };
            criteria.push((g.flip(), Criterion::From(f)));
        }
        if g.flip() {
            criteria.push((
                g.flip(),
                Criterion::For(if g.flip() {
                    For::Any
                } else {
                    For::Domain(g.pattern(&tables))
                }),
            ));
        }
        if g.flip() {
            criteria.push((g.flip(), Criterion::MailFrom(g.pattern(&tables))));
        }
        if g.flip() {
            criteria.push((false, Criterion::Tls));
        }
        let decision = if g.below(4) == 0 {
            Decision::Reject
        } else {
            Decision::Action(c.actions[g.below(c.actions.len())].name.clone())
        };
        c.matches.push(Match {
            pos: Pos::default(),
            criteria,
            decision,
        });
    }
    c
}

fn strip_positions(c: &mut Config) {
    let p = Pos::default();
    c.tables.iter_mut().for_each(|x| x.pos = p.clone());
    c.pkis.iter_mut().for_each(|x| {
        x.pos = p.clone();
        x.key_line = 0;
    });
    c.cas.iter_mut().for_each(|x| x.pos = p.clone());
    c.listens.iter_mut().for_each(|x| x.pos = p.clone());
    c.actions.iter_mut().for_each(|x| x.pos = p.clone());
    c.matches.iter_mut().for_each(|x| x.pos = p.clone());
    c.filters.iter_mut().for_each(|x| x.pos = p.clone());
    c.procs.iter_mut().for_each(|x| x.pos = p.clone());
    c.wrappers.iter_mut().for_each(|x| x.pos = p.clone());
}

#[test]
fn printed_configs_parse_back_to_the_same_value() {
    let mut g = Gen(0x5eed_1234_abcd_0001);
    for i in 0..2000 {
        let cfg = generate(&mut g);
        let text = print(&cfg);
        let mut back = parse_only(&text).unwrap_or_else(|e| panic!("case {i}: {e:?}\n{text}"));
        strip_positions(&mut back);
        assert_eq!(back, cfg, "case {i}:\n{text}");
        // And printing is stable.
        assert_eq!(print(&back), text);
    }
}

#[test]
fn the_manual_example_round_trips() {
    let mut cfg = parse("t.conf", EXAMPLE.as_bytes(), &[]).unwrap().config;
    strip_positions(&mut cfg);
    let mut back = parse_only(&print(&cfg)).unwrap();
    strip_positions(&mut back);
    assert_eq!(back, cfg);
}
