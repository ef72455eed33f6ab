//! The lka (look-up agent) role: the match rules, tables, AUTH checks,
//! alias and `~/.forward` expansion, and the DNS routes of relayed mail
//! ([`route`], run by the [`route_workers`] threads so the loop never
//! waits for a name server). The parent reads the `file:` tables at start
//! and sends their contents in lka's view; lka runs pledged to "stdio dns
//! getpw" (OpenSMTPD's keeps rpath, inet, dns and getpw too).

#![forbid(unsafe_code)]

pub mod aliases;
pub mod auth;
pub mod dns;
pub mod expand;
pub mod forward;
pub mod policy;
pub mod resolve;
pub mod route;
pub mod route_workers;
pub mod table;

use crate::config::view::{LkaView, View};
use crate::event::{Loop, Ready};
use crate::ipc::msg::{self, Destination, LkaDispatcher, LkaQueue, LookupResult, Verdict};
use crate::proc::Role;
use crate::prologue::{self, run_service, Frame, Links, Setup, FIRST_OWN_TOKEN};
use crate::smtp::address::{self, Mailbox};
use crate::spool::{LocalAccount, LocalTarget};
use mio::Token;
use policy::{Decision, LocalHost, Ruleset};
use table::{Table, Tables};

/// What lka works from, built once from the sealed view.
pub struct Lka {
    view: &'static LkaView,
    tables: Tables,
    rules: Ruleset,
    /// Reads `~/.forward` through the parent; None in unit tests.
    forward: Option<resolve::ForwardClient>,
}

impl Lka {
    pub fn new(view: &'static LkaView) -> Result<Lka, String> {
        let mut tables = Tables::default();
        for t in &view.tables {
            let table = Table::from_read(t, &view.table_files)
                .map_err(|e| format!("table {}: {e}", t.name))?;
            tables.insert(table);
        }
        let local = LocalHost::new(&view.common.hostname, &view.local_addrs);
        let rules = Ruleset::new(&view.matches, &tables, &local, view.sub_addr_delim)
            .map_err(|e| e.to_string())?;
        Ok(Lka {
            view,
            tables,
            rules,
            forward: None,
        })
    }

    /// Where a bounce to `rcpt` goes: the rules and the expansion, as
    /// for a message from the null sender submitted locally (OpenSMTPD
    /// enqueues its bounces through a local session).
    pub fn route_bounce(&self, rcpt: &str) -> Result<Vec<Destination>, String> {
        let local = msg::SessionInfo {
            addr: None,
            listener: 0,
            rdns: None,
            helo: "localhost".into(),
            auth_user: None,
            tag: None,
            tls: false,
        };
        match self.rcpt(&local, "", rcpt) {
            Verdict::Accept { dests } => Ok(dests),
            Verdict::Reject {
                code,
                enhanced,
                text,
            } => Err(format!("{code} {enhanced} {text}")),
        }
    }

    /// The verdict for one recipient.
    pub fn rcpt(&self, session: &msg::SessionInfo, mail_from: &str, rcpt: &str) -> Verdict {
        let refuse = |text: String| Verdict::Reject {
            code: 550,
            enhanced: "5.1.3".into(),
            text,
        };
        let from: Option<Mailbox> = match address::parse_path(mail_from, true) {
            Ok(m) => m,
            Err(e) => return refuse(format!("Invalid sender: {e}")),
        };
        let to = match address::parse_path(rcpt, true) {
            Ok(Some(m)) => m,
            Ok(None) => return refuse("Invalid recipient: empty".into()),
            Err(e) => return refuse(format!("Invalid recipient: {e}")),
        };
        let to = match (&self.view.srs, &from) {
            // A bounce to an address our `srs` relays made: send it to
            // the one it stands for (OpenSMTPD's lka_session).
            (Some(srs), None) if is_srs(&to.local) => {
                let today = crate::srs::today(crate::spool::unix_now());
                match srs
                    .decode(&to.to_string(), today)
                    .map(|a| address::parse_path(&a, true))
                {
                    Some(Ok(Some(m))) => m,
                    _ => {
                        log::warn!(
                            "warn: SRS failed to decode: {}",
                            crate::log::escape(to.to_string().as_bytes())
                        );
                        to
                    }
                }
            }
            _ => to,
        };
        let s = policy::SessionInfo {
            addr: session.addr,
            is_local_socket: session.addr.is_none(),
            rdns: session.rdns.clone(),
            helo: Some(session.helo.clone()),
            auth_user: session.auth_user.clone(),
            tag: session.tag.clone(),
            tls: session.tls,
        };
        match self.rules.decide(&s, from.as_ref(), &to) {
            Decision::Accept { action } => {
                let Some(action) = self.view.actions.iter().find(|a| a.name == action) else {
                    return Verdict::Reject {
                        code: 451,
                        enhanced: "4.3.0".into(),
                        text: "Temporary failure".into(),
                    };
                };
                let resolver = resolve::LkaResolver {
                    lka: self,
                    session: &s,
                    mail_from: from.as_ref(),
                };
                let opts = expand::Options {
                    subaddr_delim: self.view.sub_addr_delim,
                    ..expand::Options::default()
                };
                match expand::expand(action, &to, &resolver, &opts) {
                    Ok(nodes) => Verdict::Accept {
                        dests: nodes
                            .into_iter()
                            .map(|n| destination(self.view, n))
                            .collect(),
                    },
                    Err(f) => Verdict::Reject {
                        code: f.code,
                        enhanced: f.enhanced,
                        text: f.text,
                    },
                }
            }
            Decision::Reject {
                code,
                enhanced,
                text,
            } => Verdict::Reject {
                code,
                enhanced,
                text,
            },
        }
    }

    /// Check a password against the listener's auth table.
    pub fn auth(&self, listener: u32, user: &str, password: &[u8]) -> bool {
        let Some(Some(tref)) = self.view.listener_auth.get(listener as usize) else {
            log::warn!("warn: lka: auth on a listener without a credentials table: system users are not supported yet");
            return false;
        };
        match self.tables.resolve(tref) {
            Ok(t) => auth::authenticate(&t, user, password) == auth::AuthResult::Ok,
            Err(e) => {
                log::warn!("warn: lka: auth table: {e}");
                false
            }
        }
    }
}

impl Lka {
    /// `senders <table>`: is `sender` one of the addresses the table maps
    /// the authenticated `user` to? As OpenSMTPD's lka_mailaddrmap: a user
    /// not in the table may send as no one; an entry `@domain` allows any
    /// user there, `user` any domain, `@` anything.
    pub fn sender(&self, listener: u32, user: &str, sender: &str) -> LookupResult {
        let Some(Some(tref)) = self.view.listener_senders.get(listener as usize) else {
            return LookupResult::Ok;
        };
        let table = match self.tables.resolve(tref) {
            Ok(t) => t,
            Err(e) => {
                log::warn!("warn: lka: senders table: {e}");
                return LookupResult::TempFail;
            }
        };
        match table.sender_allowed(user, sender, self.view.sub_addr_delim) {
            Ok(true) => LookupResult::Ok,
            Ok(false) => LookupResult::PermFail,
            Err(e) => {
                log::warn!("warn: lka: senders lookup of {user}: {e}");
                LookupResult::TempFail
            }
        }
    }
}

/// One expanded node as the dispatcher makes an envelope of it. A user
/// found in the action's `userbase` travels with its uid, gid and home
/// (it has no passwd entry for the delivery to look up).
fn destination(view: &LkaView, e: expand::Expanded) -> Destination {
    let from_userbase = |action: &str| {
        view.actions
            .iter()
            .any(|a| a.name == action && a.local.userbase.is_some())
    };
    let account = |action: &str, u: &expand::UserInfo| {
        from_userbase(action).then(|| LocalAccount {
            uid: u.uid,
            gid: u.gid,
            home: u.home.to_string_lossy().into_owned(),
        })
    };
    // A file or command runs as the daemon's user (an alias's) or as the
    // user whose .forward named it.
    let target = |action: String, dest: Mailbox, r: expand::RunAs, target: LocalTarget| {
        let (user, account) = match r {
            expand::RunAs::Daemon => (crate::proc::USER_SMTPD.to_string(), None),
            expand::RunAs::User(u) => {
                let a = account(&action, &u);
                (u.name, a)
            }
        };
        Destination {
            action,
            relay: false,
            dest: dest.to_string(),
            user,
            target: Some(target),
            account,
        }
    };
    match e {
        expand::Expanded::User {
            action, dest, user, ..
        } => Destination {
            account: account(&action, &user),
            relay: false,
            dest: dest.to_string(),
            user: user.name,
            target: None,
            action,
        },
        expand::Expanded::File {
            action,
            dest,
            path,
            run_as,
        } => target(action, dest, run_as, LocalTarget::File(path)),
        expand::Expanded::Command {
            action,
            dest,
            command,
            run_as,
        } => target(action, dest, run_as, LocalTarget::Command(command)),
        expand::Expanded::Relay { action, dest } => Destination {
            action,
            relay: true,
            dest: dest.to_string(),
            user: String::new(),
            target: None,
            account: None,
        },
    }
}

/// Token of the route workers' wake-up socket in lka's loop.
const ROUTES: Token = Token(FIRST_OWN_TOKEN);

/// Entry point after the prologue.
pub fn run(setup: Setup) -> Result<(), String> {
    let View::Lka(view) = setup.view.get() else {
        return Err("not an lka view".into());
    };
    let mut lka = Lka::new(view)?;
    let fd = setup.runner.ok_or("no channel to the delivery runner")?;
    lka.forward =
        Some(resolve::ForwardClient::new(fd).map_err(|e| format!("runner channel: {e}"))?);
    // Read once, here: resolv.conf and hosts are unveiled read-only and
    // "dns" lets lka open them. The threads start after pledge, so they
    // run sandboxed.
    let config = route_workers::RouteConfig {
        resolver: dns::Resolver::from_system(),
        names: vec![view.common.hostname.clone()],
        route_time: route_workers::ROUTE_TIME,
    };
    let routes =
        route_workers::RouteWorkers::start(config, route_workers::WORKERS, route_workers::QUEUE)
            .map_err(|e| format!("route workers: {e}"))?;
    run_service(setup.links, &mut Service { lka, routes })
}

/// lka's loop: answers to the queue and the dispatcher, and the route
/// workers' answers as they come.
struct Service {
    lka: Lka,
    routes: route_workers::RouteWorkers,
}

impl prologue::Service for Service {
    fn start(&mut self, _links: &mut Links, lp: &Loop) -> Result<(), String> {
        lp.watch(self.routes.fd(), ROUTES, false)
            .map_err(|e| format!("route workers: {e}"))
    }

    fn frames(&mut self, links: &mut Links, lp: &Loop, frames: Vec<Frame>) -> Result<(), String> {
        let lka = &self.lka;
        for f in frames {
            if f.peer == Role::Queue {
                let reply = match f.decode::<LkaQueue>()? {
                    LkaQueue::Bounce { req, rcpt } => LkaQueue::BounceRoute {
                        req,
                        result: lka.route_bounce(&rcpt),
                    },
                    other => return Err(msg::unexpected(Role::Queue, &other)),
                };
                links.send(lp, Role::Queue, &reply, Vec::new())?;
                continue;
            }
            if f.peer != Role::Dispatcher {
                return Err(f.refuse(Role::Lka));
            }
            let reply = match f.decode::<LkaDispatcher>()? {
                LkaDispatcher::Rcpt {
                    req,
                    session,
                    mail_from,
                    rcpt,
                } => LkaDispatcher::RcptVerdict {
                    req,
                    verdict: lka.rcpt(&session, &mail_from, &rcpt),
                },
                LkaDispatcher::Auth {
                    req,
                    listener,
                    user,
                    password,
                } => LkaDispatcher::AuthResult {
                    req,
                    ok: lka.auth(listener, &user, &password),
                },
                LkaDispatcher::Sender {
                    req,
                    listener,
                    user,
                    sender,
                } => LkaDispatcher::SenderResult {
                    req,
                    result: lka.sender(listener, &user, &sender),
                },
                // Answered later, from a worker (`ready`), unless refused
                // now.
                LkaDispatcher::Route {
                    req,
                    domain,
                    host,
                    backup,
                } => {
                    let query = route::RouteQuery {
                        domain,
                        host,
                        backup,
                    };
                    match self.routes.submit(req, query) {
                        Ok(()) => continue,
                        Err(why) => {
                            log::warn!("warn: lka: route lookup refused: {why}");
                            LkaDispatcher::RouteResult {
                                req,
                                answer: msg::RouteAnswer::TempFail(why.into()),
                            }
                        }
                    }
                }
                other => return Err(msg::unexpected(Role::Dispatcher, &other)),
            };
            links.send(lp, Role::Dispatcher, &reply, Vec::new())?;
        }
        Ok(())
    }

    fn ready(&mut self, links: &mut Links, lp: &Loop, r: &Ready) -> Result<(), String> {
        if r.token != ROUTES {
            return Err(format!("event for unknown token {}", r.token.0));
        }
        let answers = self
            .routes
            .take()
            .map_err(|e| format!("route workers: {e}"))?;
        for (req, answer) in answers {
            let reply = LkaDispatcher::RouteResult { req, answer };
            links.send(lp, Role::Dispatcher, &reply, Vec::new())?;
        }
        Ok(())
    }
}

/// An SRS0 or SRS1 local part.
fn is_srs(local: &str) -> bool {
    local
        .get(..5)
        .is_some_and(|p| p.eq_ignore_ascii_case("SRS0=") || p.eq_ignore_ascii_case("SRS1="))
}
