//! The mta: relaying the envelopes the queue hands over, as OpenSMTPD's
//! mta in its dispatcher ("pony") process.
//!
//! Envelopes are grouped into routes: one per relay action and domain
//! (or per action alone for a smarthost). A route asks lka for its hosts
//! (MX order, addresses from the DNS: lka has the `dns` promise, we
//! only connect), then opens connections, up to `MAX_CONNS_PER_ROUTE`,
//! and reuses each greeted connection for the next task of its route.
//! A task is one message to one route: the envelopes of a message for
//! the same domain go out in one transaction with several RCPTs.
//!
//! Every recipient's fate goes back to the queue as `Relayed`, logged
//! here in OpenSMTPD's `mta delivery` form (with the relay's name and
//! address, which only we know). Nothing a server says reaches the queue
//! or a log line but the engine's printable-ASCII reply text (A12).

#![forbid(unsafe_code)]

pub mod conn;
pub mod tls;

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::net::SocketAddr;
use std::os::unix::fs::FileExt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mio::Token;

use super::tls::CaClient;
use crate::config::relay::{RelayHost, RelayTls, RelayView};
use crate::config::view::DispatcherView;
use crate::delivery::Outcome;
use crate::event::Loop;
use crate::ipc::msg::{
    KeyInfo, LkaDispatcher, QueueDispatcher, RelayEnvelope, RouteAnswer, MAX_ROUTE_ADDRS,
    MAX_ROUTE_HOSTS,
};
use crate::smtp::address::{parse_path, Domain, Mailbox};
use crate::smtp::client::{self, Credentials, Password, TlsPolicy};
use crate::spool::{DsnRet, Notify};
use conn::{Conn, ConnEvent, Setup, Target};

/// Most connections open at once for one route, to one address (many
/// domains share a provider's MX hosts), and in all.
const MAX_CONNS_PER_ROUTE: usize = 10;
const MAX_CONNS_PER_HOST: usize = 20;
const MAX_CONNS: usize = 200;
/// Most recipients in one transaction (RFC 5321 4.5.3.1.8 asks servers
/// to take at least 100).
const MAX_RCPTS_PER_TASK: usize = 100;
/// A greeted connection with nothing to send waits this long for more.
const IDLE_TIME: Duration = Duration::from_secs(5);
/// The hosts lka gave for a route are used this long.
const ROUTE_TTL: Duration = Duration::from_secs(300);
/// Tokens of mta sockets start here, far above the sessions'.
pub const TOKEN_BASE: usize = 1 << 40;

/// One message to send on one route.
#[derive(Debug)]
pub struct Task {
    msgid: u32,
    sender: Option<Mailbox>,
    pub file: File,
    rcpts: Vec<(RelayEnvelope, Mailbox)>,
}

impl Task {
    /// The engine's view of this task.
    pub fn client_envelope(&self) -> client::Envelope {
        let first = &self.rcpts[0].0;
        let size = self.file.metadata().map(|m| m.len()).unwrap_or(0);
        client::Envelope {
            id: u64::from(self.msgid),
            mail_from: self.sender.clone(),
            size,
            body_8bit: has_8bit(&self.file),
            smtputf8: false,
            ret: first.ret.map(|r| match r {
                DsnRet::Full => client::Ret::Full,
                DsnRet::Hdrs => client::Ret::Hdrs,
            }),
            envid: first.envid.clone(),
            rcpts: self
                .rcpts
                .iter()
                .map(|(env, addr)| client::Recipient {
                    addr: addr.clone(),
                    notify: notify(env.notify),
                    orcpt: env.orcpt.clone(),
                })
                .collect(),
        }
    }
}

/// Whether the message has a byte above 127 (needs 8BITMIME).
fn has_8bit(file: &File) -> bool {
    let mut buf = vec![0u8; 64 * 1024];
    let mut off = 0u64;
    loop {
        match file.read_at(&mut buf, off) {
            Ok(0) => return false,
            Ok(n) => {
                if buf[..n].iter().any(|&b| b >= 0x80) {
                    return true;
                }
                off += n as u64;
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            // Said 8-bit: the worst case is a needless BODY=8BITMIME.
            Err(_) => return true,
        }
    }
}

fn notify(n: Notify) -> Option<client::Notify> {
    if n.is_empty() {
        return None;
    }
    if n.contains(Notify::NEVER) {
        return Some(client::Notify::Never);
    }
    Some(client::Notify::When {
        success: n.contains(Notify::SUCCESS),
        failure: n.contains(Notify::FAILURE),
        delay: n.contains(Notify::DELAY),
    })
}

/// What the mta sends to other roles.
pub enum Out {
    Lka(LkaDispatcher),
    Queue(QueueDispatcher),
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct RouteKey {
    action: String,
    /// The destination domain; "" for a smarthost (one route per action).
    domain: String,
}

struct Route {
    relay: &'static RelayView,
    /// The host to relay to instead of the MXs, if any.
    host: Option<RelayHost>,
    /// Where to connect, in order, and when lka said so.
    targets: Option<(Vec<Target>, Instant)>,
    lookup: bool,
    tasks: VecDeque<Task>,
    /// Connections of this route, and how many are not greeted yet.
    conns: usize,
    opening: usize,
    /// It wanted a connection the per-host or overall cap refused: a
    /// closing connection of any route lets it try again.
    capped: bool,
}

struct MtaConn {
    key: RouteKey,
    conn: Conn,
    /// Since when it is greeted and has nothing to do.
    idle_since: Option<Instant>,
    /// Counted in its route's `opening` (not greeted nor given up yet).
    opening: bool,
}

impl MtaConn {
    /// It greeted or gave up: no longer one that is opening.
    fn opened(&mut self, routes: &mut HashMap<RouteKey, Route>) {
        if std::mem::take(&mut self.opening) {
            if let Some(r) = routes.get_mut(&self.key) {
                r.opening = r.opening.saturating_sub(1);
            }
        }
    }
}

pub struct Mta {
    view: &'static DispatcherView,
    routes: HashMap<RouteKey, Route>,
    lookups: HashMap<u64, RouteKey>,
    conns: HashMap<Token, MtaConn>,
    /// Client TLS configs by relay action, made on first use.
    tls: HashMap<String, Arc<rustls::ClientConfig>>,
    /// The keys ca holds, and the way to it: for relays with a `pki`.
    ca: Option<(Vec<KeyInfo>, Arc<CaClient>)>,
    next_token: usize,
    next_id: u64,
}

impl Mta {
    pub fn new(view: &'static DispatcherView, id_seed: u64) -> Mta {
        Mta {
            view,
            routes: HashMap::new(),
            lookups: HashMap::new(),
            conns: HashMap::new(),
            tls: HashMap::new(),
            ca: None,
            next_token: TOKEN_BASE,
            next_id: id_seed,
        }
    }

    /// ca said which keys it holds: client certificates can be made.
    pub fn set_ca(&mut self, keys: Vec<KeyInfo>, ca: Arc<CaClient>) {
        self.ca = Some((keys, ca));
    }

    pub fn owns(&self, token: Token) -> bool {
        token.0 >= TOKEN_BASE
    }

    /// The earliest connection deadline or idle end.
    pub fn deadline(&self) -> Option<Instant> {
        self.conns
            .values()
            .map(|c| match c.idle_since {
                Some(t) => (t + IDLE_TIME).min(c.conn.deadline),
                None => c.conn.deadline,
            })
            .min()
    }

    /// The queue hands over an envelope to relay, with its message.
    pub fn relay(
        &mut self,
        lp: &Loop,
        env: RelayEnvelope,
        file: File,
        next_req: &mut u64,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(relay) = self.view.relays.iter().find(|r| r.action == env.action) else {
            let why = format!("no relay action {:?}", env.action);
            out.push(report(&env, None, Outcome::TempFail(why)));
            return out;
        };
        let (sender, rcpt) = match addresses(self.view, relay, &env) {
            Ok(x) => x,
            Err(why) => {
                out.push(report(&env, None, Outcome::PermFail(why)));
                return out;
            }
        };
        let domain = if relay.host.is_some() {
            String::new()
        } else {
            rcpt.domain.to_string()
        };
        // The action's smarthost, or its `domain` table's host for this
        // domain, or none: the MXs.
        let host = relay.host.clone().or_else(|| {
            relay
                .domains
                .iter()
                .find(|(d, _)| *d == domain)
                .map(|(_, h)| h.clone())
        });
        let key = RouteKey {
            action: relay.action.clone(),
            domain,
        };
        let route = self.routes.entry(key.clone()).or_insert_with(|| Route {
            relay,
            host,
            targets: None,
            lookup: false,
            tasks: VecDeque::new(),
            conns: 0,
            opening: 0,
            capped: false,
        });
        let msgid = (env.id >> 32) as u32;
        match route.tasks.back_mut() {
            // Another recipient of the message just queued: same
            // transaction (the file we were given again is closed).
            Some(t)
                if t.msgid == msgid && t.sender == sender && t.rcpts.len() < MAX_RCPTS_PER_TASK =>
            {
                t.rcpts.push((env, rcpt))
            }
            _ => route.tasks.push_back(Task {
                msgid,
                sender,
                file,
                rcpts: vec![(env, rcpt)],
            }),
        }
        out.extend(self.kick(lp, &key, next_req));
        out
    }

    /// lka's answer to a route request.
    pub fn route_answer(
        &mut self,
        lp: &Loop,
        req: u64,
        answer: RouteAnswer,
        next_req: &mut u64,
    ) -> Result<Vec<Out>, String> {
        let Some(key) = self.lookups.remove(&req) else {
            return Err(format!(
                "lka channel: route answer for unknown request {req}"
            ));
        };
        let Some(route) = self.routes.get_mut(&key) else {
            return Ok(Vec::new());
        };
        route.lookup = false;
        let port = route.host.as_ref().map_or(25, |h| h.port);
        let failed = match answer {
            RouteAnswer::Hosts(hosts) => {
                if hosts.len() > MAX_ROUTE_HOSTS
                    || hosts.iter().any(|h| h.addrs.len() > MAX_ROUTE_ADDRS)
                {
                    return Err("lka channel: route answer over its bounds".into());
                }
                let targets: Vec<Target> = hosts
                    .iter()
                    .flat_map(|h| {
                        h.addrs.iter().map(|a| Target {
                            name: h.name.clone(),
                            addr: SocketAddr::new(*a, port),
                        })
                    })
                    .collect();
                if targets.is_empty() {
                    Some(Outcome::TempFail("No address for any MX host".into()))
                } else {
                    route.targets = Some((targets, Instant::now()));
                    None
                }
            }
            RouteAnswer::TempFail(why) => Some(Outcome::TempFail(why)),
            RouteAnswer::PermFail(why) => Some(Outcome::PermFail(why)),
        };
        let mut out = Vec::new();
        if let Some(outcome) = failed {
            for task in route.tasks.drain(..) {
                out.extend(task_reports(&task, None, &outcome));
            }
            return Ok(out);
        }
        out.extend(self.kick(lp, &key, next_req));
        Ok(out)
    }

    /// Start what a route can start: a look-up, tasks on idle
    /// connections, new connections.
    fn kick(&mut self, lp: &Loop, key: &RouteKey, next_req: &mut u64) -> Vec<Out> {
        let mut out = Vec::new();
        let Some(route) = self.routes.get_mut(key) else {
            return out;
        };
        if route.tasks.is_empty() {
            return out;
        }
        if route
            .targets
            .as_ref()
            .is_some_and(|(_, t)| t.elapsed() > ROUTE_TTL)
            && route.conns == 0
        {
            route.targets = None;
        }
        let Some((targets, _)) = &route.targets else {
            if !route.lookup {
                route.lookup = true;
                *next_req += 1;
                self.lookups.insert(*next_req, key.clone());
                out.push(Out::Lka(route_request(
                    *next_req,
                    route,
                    key,
                    &self.view.common.hostname,
                )));
            }
            return out;
        };
        let targets = targets.clone();
        // Idle connections of this route first.
        let idle: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| &c.key == key && c.idle_since.is_some())
            .map(|(t, _)| *t)
            .collect();
        for token in idle {
            let Some(task) = self.routes.get_mut(key).and_then(|r| r.tasks.pop_front()) else {
                break;
            };
            let c = self.conns.get_mut(&token).expect("listed above");
            c.idle_since = None;
            let ev = c.conn.send(lp, task);
            out.extend(self.conn_events(lp, token, ev, next_req));
        }
        // Then new ones, one per task not yet covered by one opening.
        loop {
            let Some(route) = self.routes.get(key) else {
                return out;
            };
            let wanted = route.tasks.len() > route.opening;
            if !wanted || route.conns >= MAX_CONNS_PER_ROUTE {
                return out;
            }
            // The host a new connection tries first.
            let first = targets[0].addr.ip();
            let to_host = self
                .conns
                .values()
                .filter(|c| c.conn.target.addr.ip() == first)
                .count();
            if to_host >= MAX_CONNS_PER_HOST || self.conns.len() >= MAX_CONNS {
                if let Some(r) = self.routes.get_mut(key) {
                    r.capped = true;
                }
                return out;
            }
            let host = route.host.clone();
            let setup = match self.setup(route.relay, host.as_ref()) {
                Ok(s) => s,
                Err(why) => {
                    let tasks: Vec<Task> = self
                        .routes
                        .get_mut(key)
                        .map(|r| r.tasks.drain(..).collect())
                        .unwrap_or_default();
                    for task in tasks {
                        out.extend(task_reports(&task, None, &Outcome::TempFail(why.clone())));
                    }
                    return out;
                }
            };
            let token = Token(self.next_token);
            self.next_token += 1;
            self.next_id = self.next_id.wrapping_add(1);
            match Conn::open(lp, self.next_id, token, targets.clone(), setup) {
                Ok(conn) => {
                    let route = self.routes.get_mut(key).expect("checked above");
                    route.conns += 1;
                    route.opening += 1;
                    self.conns.insert(
                        token,
                        MtaConn {
                            key: key.clone(),
                            conn,
                            idle_since: None,
                            opening: true,
                        },
                    );
                }
                Err(why) => {
                    out.extend(self.unreachable(key, &why));
                    return out;
                }
            }
        }
    }

    /// The engine settings and TLS config for a connection of `relay`.
    fn setup(&mut self, relay: &RelayView, host: Option<&RelayHost>) -> Result<Setup, String> {
        let mut engine =
            client::Config::new(relay.helo.as_deref().unwrap_or(&self.view.common.hostname));
        let (policy, verify, smtps) = match relay.tls {
            RelayTls::Opportunistic => (TlsPolicy::Opportunistic, false, false),
            RelayTls::Required { verify } => (TlsPolicy::Required, verify, false),
            RelayTls::Smtps { verify } => (TlsPolicy::Never, verify, true),
            RelayTls::Never => (TlsPolicy::Never, false, false),
        };
        engine.lmtp = host.is_some_and(|h| h.lmtp);
        engine.tls = policy;
        engine.tls_active = smtps;
        engine.auth = relay.auth.as_ref().map(|a| Credentials {
            user: a.user.clone(),
            password: Password(a.password.clone()),
        });
        let tls = if policy == TlsPolicy::Never && !smtps {
            None
        } else {
            let cfg = match self.tls.get(&relay.action) {
                Some(c) => c.clone(),
                None => {
                    let roots = relay.ca_pem.as_deref().unwrap_or(&self.view.roots_pem);
                    let cert = match &relay.pki {
                        None => None,
                        Some(pki) => {
                            let (keys, ca) =
                                self.ca.as_ref().ok_or("ca has not sent its keys yet")?;
                            let certs = super::tls::cert_pems(&self.view.certs);
                            Some(super::tls::certified_key(pki, &certs, keys, ca)?)
                        }
                    };
                    let c = tls::client_config(verify, roots, cert)?;
                    self.tls.insert(relay.action.clone(), c.clone());
                    c
                }
            };
            Some((cfg, smtps))
        };
        Ok(Setup {
            engine,
            tls,
            src: relay.src.clone(),
            helo_src: relay.helo_src.clone(),
        })
    }

    /// A socket of ours is ready.
    pub fn ready(
        &mut self,
        lp: &Loop,
        token: Token,
        readable: bool,
        writable: bool,
        next_req: &mut u64,
    ) -> Vec<Out> {
        let Some(c) = self.conns.get_mut(&token) else {
            return Vec::new();
        };
        let ev = c.conn.ready(lp, readable, writable);
        self.conn_events(lp, token, ev, next_req)
    }

    /// Deadlines and idle connections.
    pub fn timers(&mut self, lp: &Loop, next_req: &mut u64) -> Vec<Out> {
        let now = Instant::now();
        let mut out = Vec::new();
        let due: Vec<Token> = self
            .conns
            .iter()
            .filter(|(_, c)| {
                c.conn.deadline <= now || c.idle_since.is_some_and(|t| t + IDLE_TIME <= now)
            })
            .map(|(t, _)| *t)
            .collect();
        for token in due {
            let Some(c) = self.conns.get_mut(&token) else {
                continue;
            };
            let ev = if c.idle_since.is_some_and(|t| t + IDLE_TIME <= now) {
                c.idle_since = None;
                c.conn.quit(lp)
            } else {
                c.conn.timed_out(lp)
            };
            out.extend(self.conn_events(lp, token, ev, next_req));
        }
        out
    }

    fn conn_events(
        &mut self,
        lp: &Loop,
        token: Token,
        events: Vec<ConnEvent>,
        next_req: &mut u64,
    ) -> Vec<Out> {
        let mut out = Vec::new();
        for e in events {
            let Some(c) = self.conns.get_mut(&token) else {
                break;
            };
            let key = c.key.clone();
            match e {
                ConnEvent::Idle => {
                    c.opened(&mut self.routes);
                    match self.routes.get_mut(&key).and_then(|r| r.tasks.pop_front()) {
                        Some(task) => {
                            let ev = c.conn.send(lp, task);
                            out.extend(self.conn_events(lp, token, ev, next_req));
                        }
                        None => c.idle_since = Some(Instant::now()),
                    }
                }
                ConnEvent::Done(task, outcomes) => {
                    // OpenSMTPD's form: the address, then the name.
                    let relay = format!(
                        "{} ({})",
                        addr_text(c.conn.target.addr.ip()),
                        c.conn.target.name
                    );
                    let at = (c.conn.id, c.conn.source(), relay);
                    out.extend(done(&task, &at, outcomes));
                }
                ConnEvent::Unreachable(why) => {
                    c.opened(&mut self.routes);
                    out.extend(self.unreachable(&key, &why));
                }
                ConnEvent::Closed => {
                    let mut c = self.conns.remove(&token).expect("checked above");
                    c.opened(&mut self.routes);
                    if let Some(r) = self.routes.get_mut(&key) {
                        r.conns -= 1;
                    }
                    // A slot is free: this route, and any other the
                    // per-host or overall cap held back, may go on.
                    let waiting: Vec<RouteKey> = self
                        .routes
                        .iter_mut()
                        .filter(|(k, r)| **k == key || r.capped)
                        .map(|(k, r)| {
                            r.capped = false;
                            k.clone()
                        })
                        .collect();
                    for k in waiting {
                        out.extend(self.kick(lp, &k, next_req));
                    }
                    self.forget_if_done(&key);
                    return out;
                }
            }
        }
        out
    }

    /// No address of a route greeted a connection: unless another
    /// connection of the route works, its tasks fail for now and its
    /// hosts are asked again next time.
    fn unreachable(&mut self, key: &RouteKey, why: &str) -> Vec<Out> {
        let mut out = Vec::new();
        let working = self
            .conns
            .values()
            .any(|c| &c.key == key && c.conn.was_greeted());
        let Some(route) = self.routes.get_mut(key) else {
            return out;
        };
        if working {
            return out;
        }
        route.targets = None;
        let outcome = Outcome::TempFail(why.to_string());
        for task in route.tasks.drain(..) {
            out.extend(task_reports(&task, None, &outcome));
        }
        out
    }

    /// Drop a route with nothing left to do.
    fn forget_if_done(&mut self, key: &RouteKey) {
        if let Some(r) = self.routes.get(key) {
            if r.tasks.is_empty() && r.conns == 0 && !r.lookup {
                self.routes.remove(key);
            }
        }
    }
}

/// The sender and recipient as the engine takes them, or why not. On an
/// `srs` action, the sender of forwarded mail (its recipient was
/// rewritten: RCPT TO differs from where it goes now) becomes an SRS
/// address at the original recipient's domain, as OpenSMTPD's mta does.
fn addresses(
    view: &DispatcherView,
    relay: &RelayView,
    env: &RelayEnvelope,
) -> Result<(Option<Mailbox>, Mailbox), String> {
    let mut sender = relay
        .mail_from
        .clone()
        .unwrap_or_else(|| env.sender.clone());
    if let (true, Some(srs), Some((_, domain))) = (relay.srs, &view.srs, env.rcpt.rsplit_once('@'))
    {
        if env.rcpt != env.dest && sender.contains('@') {
            let today = crate::srs::today(crate::spool::unix_now());
            if let Some(s) = srs.encode(&sender, domain, today) {
                sender = s;
            }
        }
    }
    let sender =
        parse_path(&sender, true).map_err(|e| format!("invalid sender <{}>: {e}", env.sender))?;
    let rcpt = parse_path(&env.dest, true)
        .map_err(|e| format!("invalid recipient <{}>: {e}", env.dest))?
        .ok_or("empty recipient")?;
    Ok((sender, rcpt))
}

fn route_request(req: u64, route: &Route, key: &RouteKey, hostname: &str) -> LkaDispatcher {
    let relay = route.relay;
    let host = route.host.as_ref().map(|h| h.host.clone());
    // A domain literal is its own host.
    let host = host.or_else(|| match Domain::parse(&key.domain, true) {
        Ok(Domain::Literal(ip)) => Some(ip.to_string()),
        _ => None,
    });
    let backup = relay.backup.as_ref().map(|b| {
        if b.is_empty() {
            hostname.to_string()
        } else {
            b.clone()
        }
    });
    LkaDispatcher::Route {
        req,
        domain: key.domain.clone(),
        host,
        backup,
    }
}

/// The outcome of every recipient of `task`, from the engine's replies.
/// `at`: the connection's id, source address and relay text.
fn done(task: &Task, at: &(u64, String, String), outcomes: Vec<client::Outcome>) -> Vec<Out> {
    task.rcpts
        .iter()
        .enumerate()
        .map(|(i, (env, _))| {
            let o = outcomes.get(i).cloned().unwrap_or_else(|| {
                client::Outcome::TempFail(client::Reply {
                    code: 421,
                    lines: vec!["4.4.0 no reply for this recipient".into()],
                })
            });
            // A reply may run to MAX_REPLY_LINES lines: what goes on, to
            // the log, the queue and a bounce, is cut to a sane length.
            let text = |r: &client::Reply| cut(&r.to_string(), MAX_STAT).to_string();
            let (outcome, stat) = match o {
                client::Outcome::Ok(r) => (Outcome::Delivered, text(&r)),
                client::Outcome::TempFail(r) => (Outcome::TempFail(text(&r)), text(&r)),
                client::Outcome::PermFail(r) => (Outcome::PermFail(text(&r)), text(&r)),
            };
            log_delivery(at, env, &outcome, &stat);
            relayed(env, outcome)
        })
        .collect()
}

fn task_reports(task: &Task, relay: Option<&str>, outcome: &Outcome) -> Vec<Out> {
    task.rcpts
        .iter()
        .map(|(env, _)| report(env, relay, outcome.clone()))
        .collect()
}

/// One recipient's outcome found without a session (no route, no host).
fn report(env: &RelayEnvelope, relay: Option<&str>, outcome: Outcome) -> Out {
    let stat = match &outcome {
        Outcome::Delivered => "Delivered".to_string(),
        Outcome::TempFail(t) | Outcome::PermFail(t) => t.clone(),
    };
    let at = (env.id, "-".to_string(), relay.unwrap_or("-").to_string());
    log_delivery(&at, env, &outcome, &stat);
    relayed(env, outcome)
}

fn relayed(env: &RelayEnvelope, outcome: Outcome) -> Out {
    Out::Queue(QueueDispatcher::Relayed {
        id: env.id,
        outcome,
    })
}

/// OpenSMTPD's mta_log line.
fn log_delivery(at: &(u64, String, String), env: &RelayEnvelope, outcome: &Outcome, stat: &str) {
    let (id, source, relay) = at;
    let result = match outcome {
        Outcome::Delivered => "Ok",
        Outcome::TempFail(_) => "TempFail",
        Outcome::PermFail(_) => "PermFail",
    };
    let delay = crate::spool::unix_now().saturating_sub(env.ctime);
    log::info!(
        "{id:016x} mta delivery evpid={:016x} from=<{}> to=<{}> rcpt=<{}> source=\"{source}\" relay=\"{}\" delay={} result=\"{result}\" stat=\"{}\"",
        env.id,
        env.sender,
        env.dest,
        // As OpenSMTPD's mta: the recipient as given only when it differs.
        if env.rcpt == env.dest { "-" } else { &env.rcpt },
        crate::log::escape(relay.as_bytes()),
        crate::log::duration_text(delay),
        crate::log::escape(stat.as_bytes())
    );
}

/// Longest reply text kept for a recipient's outcome.
const MAX_STAT: usize = 1024;

/// `s` cut to at most `max` bytes (it is ASCII: the engine made it so).
fn cut(s: &str, max: usize) -> &str {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// An address as OpenSMTPD's sa_to_text writes it: IPv6 in brackets.
pub fn addr_text(ip: std::net::IpAddr) -> String {
    match ip {
        std::net::IpAddr::V4(a) => a.to_string(),
        std::net::IpAddr::V6(a) => format!("[{a}]"),
    }
}

#[cfg(test)]
mod tests;
