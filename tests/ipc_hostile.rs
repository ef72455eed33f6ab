//! A role fed garbage on any of its channels logs why and exits 1: never a
//! panic (SIGABRT with panic=abort), never a crash, never silence.
//!
//! Each case starts one real role (`smtpd -x ROLE`, the real binary, as
//! root, with its real chroot, user and sandbox) on socket pairs this test
//! holds: it plays the parent and every peer, completes the start
//! handshake with well-formed frames built by the crate's own encoders,
//! then sends one bad frame on one channel. One good exchange rides on the
//! same scaffolding: lka's Route, answered from its worker threads.

use smtpd::config::view;
use smtpd::ipc::frame::{self, HEADER_LEN, IPC_VERSION, MAX_PACKET};
use smtpd::ipc::msg::{self, FromParent, ToParent};
use smtpd::ipc::Channel;
use smtpd::proc::{Role, ROLES};
use smtpd::sys::fdpass::{send_packet, seqpacket_pair};
use smtpd::sys::process::{self, Exit};
use std::ffi::CString;
use std::io::Read;
use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

/// A role started on our sockets, handshake done.
struct Started {
    pid: libc::pid_t,
    parent: Channel,
    peers: Vec<(Role, OwnedFd)>,
    log: std::fs::File,
    _listener: Option<std::net::TcpListener>,
    _runner: Option<OwnedFd>,
}

fn start(role: Role) -> Started {
    assert_eq!(
        process::geteuid(),
        0,
        "these tests start real roles and must run as root"
    );
    let spec = role.spec().unwrap();
    if role == Role::Queue {
        // The parent prepares the spool before it starts the queue role;
        // here the test is the parent (idempotent, as the parent's is).
        let q = smtpd::sys::privdrop::lookup(smtpd::proc::USER_SMTPQ).unwrap();
        smtpd::spool::store::prepare(
            std::path::Path::new(smtpd::proc::SPOOL_DIR),
            q.uid,
            q.gid,
            q.gid,
        )
        .unwrap();
    }
    let exe = CString::new(env!("CARGO_BIN_EXE_smtpd")).unwrap();
    let (ours, theirs) = seqpacket_pair().unwrap();
    let log_path =
        std::env::temp_dir().join(format!("ipc-hostile-{}-{}.log", role, std::process::id()));
    let log_w = std::fs::File::create(&log_path).unwrap();
    let log = std::fs::File::open(&log_path).unwrap();
    let _ = std::fs::remove_file(&log_path);
    let pid =
        smtpd::proc::spawn(&exe, role, true, true, theirs.as_fd(), Some(log_w.as_fd())).unwrap();
    drop(theirs);
    let mut parent = Channel::new(ours, Role::Parent).unwrap();

    let mut listener = None;
    let mut listeners = Vec::new();
    if role == Role::Dispatcher {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listeners.push(view::ListenerView {
            addr: l.local_addr().unwrap(),
            hostname: "test.example".into(),
            opts: Default::default(),
        });
        listener = Some(l);
    }
    let cfg = smtpd::config::parse("t.conf", b"action a mbox\nmatch for local action a\n", &[])
        .unwrap()
        .config;
    let v = view::for_role(role, &cfg, "test.example", &listeners, &Default::default()).unwrap();
    let bytes = postcard::to_stdvec(&v).unwrap();
    parent
        .send(&FromParent::ConfigChunk(bytes.clone()), vec![])
        .unwrap();
    parent
        .send(
            &FromParent::ConfigEnd {
                len: bytes.len() as u64,
            },
            vec![],
        )
        .unwrap();
    let mut peers = Vec::new();
    for &peer in spec.peers {
        let (a, b) = seqpacket_pair().unwrap();
        parent.send(&FromParent::Peer { peer }, vec![b]).unwrap();
        peers.push((peer, a));
    }
    if let Some(l) = &listener {
        let fd = OwnedFd::from(l.try_clone().unwrap());
        parent
            .send(&FromParent::Listener { index: 0 }, vec![fd])
            .unwrap();
    }
    // control's /var/run/smtpd.sock: a socket of the same kind, elsewhere.
    if role == Role::Control {
        let dir = std::env::temp_dir().join(format!("ipc-hostile-ctl-{}", std::process::id()));
        let _ = std::fs::create_dir(&dir);
        let path = dir.join("smtpd.sock");
        let _ = std::fs::remove_file(&path);
        let fd = smtpd::sys::unixsock::listen(&path, 0o600, 5).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        parent
            .send(&FromParent::Listener { index: 0 }, vec![fd])
            .unwrap();
    }
    // lka's channel to the delivery runner: held open, never answered.
    let mut runner = None;
    if role == Role::Lka {
        let (a, b) = seqpacket_pair().unwrap();
        parent.send(&FromParent::RunnerChannel, vec![b]).unwrap();
        runner = Some(a);
    }
    parent.send(&FromParent::Start, vec![]).unwrap();
    let ready = parent.recv_until::<ToParent>(Instant::now() + Duration::from_secs(10));
    let mut s = Started {
        pid,
        parent,
        peers,
        log,
        _listener: listener,
        _runner: runner,
    };
    match ready {
        Ok(r) => assert_eq!(r.msg, ToParent::Ready { role }),
        Err(e) => panic!("{role} did not start: {e}; log:\n{}", s.read_log()),
    }
    s
}

impl Started {
    fn read_log(&mut self) -> String {
        let mut out = String::new();
        let _ = self.log.read_to_string(&mut out);
        out
    }

    /// Wait for the role to exit by itself.
    fn wait(&mut self) -> Exit {
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Some(e) = process::try_wait_pid(self.pid).unwrap() {
                return e;
            }
            if Instant::now() > deadline {
                let _ = process::kill(self.pid, libc::SIGKILL);
                panic!(
                    "role did not exit after a bad frame; log:\n{}",
                    self.read_log()
                );
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

/// A bad packet and the words the role's log line must contain.
struct Bad {
    name: &'static str,
    packet: Vec<u8>,
    with_fd: bool,
    expect: &'static str,
}

fn header(version: u16, nfds: u16, len: u32) -> Vec<u8> {
    let mut h = Vec::with_capacity(HEADER_LEN);
    h.extend_from_slice(&version.to_le_bytes());
    h.extend_from_slice(&nfds.to_le_bytes());
    h.extend_from_slice(&len.to_le_bytes());
    h
}

fn with_payload(mut h: Vec<u8>, p: &[u8]) -> Vec<u8> {
    h.extend_from_slice(p);
    h
}

/// The bad frames, for a channel whose Hello from `from` would be valid.
fn bad_frames(me: Role, from: Option<Role>) -> Vec<Bad> {
    let garbage: Vec<u8> = (0..64u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect();
    // A frame well-formed for some *other* channel: the parent's Start on a
    // peer channel, a peer's Hello on the parent channel.
    let foreign = match from {
        Some(_) => frame::encode(&FromParent::Start, 0).unwrap(),
        None => msg::encode_hello(Role::Control, Role::Lka)
            .unwrap()
            .unwrap(),
    };
    let mut v = vec![
        Bad {
            name: "short",
            packet: vec![1, 0, 0],
            with_fd: false,
            expect: "short frame",
        },
        Bad {
            name: "garbage",
            packet: garbage,
            with_fd: false,
            expect: "bad version",
        },
        Bad {
            name: "version",
            packet: with_payload(header(IPC_VERSION + 1, 0, 1), &[0]),
            with_fd: false,
            expect: "bad version",
        },
        Bad {
            name: "length-lie",
            packet: with_payload(header(IPC_VERSION, 0, 100), &[0; 10]),
            with_fd: false,
            expect: "length field 100",
        },
        Bad {
            name: "huge-length",
            packet: with_payload(header(IPC_VERSION, 0, u32::MAX), &[0; 10]),
            with_fd: false,
            expect: "length field",
        },
        Bad {
            name: "oversized",
            packet: vec![1; MAX_PACKET + 100],
            with_fd: false,
            expect: "truncated",
        },
        Bad {
            name: "undecodable",
            packet: with_payload(header(IPC_VERSION, 0, 3), &[0x7f, 0xff, 0xff]),
            with_fd: false,
            expect: "undecodable",
        },
        Bad {
            name: "unannounced-fd",
            packet: header(IPC_VERSION, 0, 0),
            with_fd: true,
            expect: "descriptors",
        },
        Bad {
            name: "foreign-type",
            packet: foreign,
            with_fd: false,
            expect: "channel",
        },
        Bad {
            name: "empty-payload",
            packet: header(IPC_VERSION, 0, 0),
            with_fd: false,
            expect: "undecodable",
        },
    ];
    if let Some(from) = from {
        // A Hello claiming to be someone else: the channel knows its peer.
        let liar = ROLES
            .iter()
            .map(|r| r.role)
            .find(|&r| r != from && r != me)
            .unwrap();
        let mut lie = msg::encode_hello(from, me).unwrap().unwrap();
        // The Hello's payload is [variant 0, role index]; rewrite the role.
        let idx = lie.len() - 1;
        lie[idx] = liar as u8;
        v.push(Bad {
            name: "impostor-hello",
            packet: lie,
            with_fd: false,
            expect: "Hello from",
        });
        // A second Hello after a good one.
        v.push(Bad {
            name: "second-hello",
            packet: msg::encode_hello(from, me).unwrap().unwrap(),
            with_fd: false,
            expect: "second Hello from",
        });
    }
    v
}

fn run_case(role: Role, channel: Option<Role>, bad: &Bad) {
    let mut s = start(role);
    let (extra, _keep) = seqpacket_pair().unwrap();
    let fds = if bad.with_fd {
        vec![extra.as_fd()]
    } else {
        vec![]
    };
    match channel {
        None => send_packet(s.parent.as_fd(), &bad.packet, &fds).unwrap(),
        Some(peer) => {
            let sock = &s.peers.iter().find(|(p, _)| *p == peer).unwrap().1;
            if bad.name == "second-hello" {
                let good = msg::encode_hello(peer, role).unwrap().unwrap();
                send_packet(sock.as_fd(), &good, &[]).unwrap();
            }
            send_packet(sock.as_fd(), &bad.packet, &fds).unwrap();
        }
    }
    let exit = s.wait();
    let log = s.read_log();
    let chan = channel.map(|p| p.name()).unwrap_or("parent");
    assert_eq!(
        exit,
        Exit::Code(1),
        "{role}/{chan}/{}: wanted a clean exit 1; log:\n{log}",
        bad.name
    );
    let line = log
        .lines()
        .find(|l| l.starts_with(&format!("warn: {role}: {chan} channel:")));
    let line = line.unwrap_or_else(|| {
        panic!(
            "{role}/{chan}/{}: no warn line naming the channel; log:\n{log}",
            bad.name
        )
    });
    assert!(
        line.contains(bad.expect),
        "{role}/{chan}/{}: line {line:?} lacks {:?}",
        bad.name,
        bad.expect
    );
    assert!(line.ends_with("shutting down"), "{line}");
    assert!(!log.contains("panicked"), "{log}");
    eprintln!("{role}/{chan}/{}: {line}", bad.name);
}

fn every_channel_of(role: Role) {
    let spec = role.spec().unwrap();
    for bad in bad_frames(role, None) {
        run_case(role, None, &bad);
    }
    for &peer in spec.peers {
        for bad in bad_frames(role, Some(peer)) {
            run_case(role, Some(peer), &bad);
        }
    }
}

#[test]
fn control_refuses_bad_frames() {
    every_channel_of(Role::Control);
}

#[test]
fn lka_refuses_bad_frames() {
    every_channel_of(Role::Lka);
}

#[test]
fn queue_refuses_bad_frames() {
    every_channel_of(Role::Queue);
}

#[test]
fn scheduler_refuses_bad_frames() {
    every_channel_of(Role::Scheduler);
}

#[test]
fn dispatcher_refuses_bad_frames() {
    every_channel_of(Role::Dispatcher);
}

#[test]
fn ca_refuses_bad_frames() {
    every_channel_of(Role::Ca);
}

#[test]
fn a_role_started_without_a_channel_refuses_to_run() {
    // Descriptor 3 is not a socket here: the role must say so and stop.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_smtpd"))
        .args(["-x", "queue", "-d"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("descriptor 3 is not a channel"));
}

/// Not hostile: lka answers the dispatcher's Route from its worker
/// threads, in the real sandboxed process (a smarthost literal and an
/// invalid domain need no name server), and goes on answering after.
#[test]
fn lka_answers_route_from_its_workers() {
    use smtpd::ipc::msg::{LkaDispatcher, RouteAnswer, RouteHost};
    let mut s = start(Role::Lka);
    let sock = s
        .peers
        .iter()
        .find(|(p, _)| *p == Role::Dispatcher)
        .unwrap()
        .1
        .try_clone()
        .unwrap();
    let mut chan = Channel::new(sock, Role::Lka).unwrap();
    let hello = msg::encode_hello(Role::Dispatcher, Role::Lka)
        .unwrap()
        .unwrap();
    send_packet(chan.as_fd(), &hello, &[]).unwrap();
    for (req, domain, host) in [(1, "example.test", Some("[192.0.2.1]")), (2, "", None)] {
        let m = LkaDispatcher::Route {
            req,
            domain: domain.into(),
            host: host.map(Into::into),
            backup: None,
        };
        chan.send(&m, vec![]).unwrap();
    }
    chan.flush_blocking(Duration::from_secs(5)).unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut answers = Vec::new();
    while answers.len() < 2 {
        let got = chan.recv_until::<LkaDispatcher>(deadline);
        match got.map(|r| r.msg) {
            Ok(LkaDispatcher::Hello { from }) => assert_eq!(from, Role::Lka),
            Ok(LkaDispatcher::RouteResult { req, answer }) => answers.push((req, answer)),
            other => panic!("{other:?}; log:\n{}", s.read_log()),
        }
    }
    answers.sort_by_key(|(req, _)| *req);
    assert_eq!(
        answers[0],
        (
            1,
            RouteAnswer::Hosts(vec![RouteHost {
                name: "[192.0.2.1]".into(),
                preference: 0,
                addrs: vec!["192.0.2.1".parse().unwrap()],
            }])
        )
    );
    assert!(
        matches!(&answers[1], (2, RouteAnswer::PermFail(t)) if t.starts_with("Invalid domain name")),
        "{answers:?}"
    );
    // Still serving: the parent's Shutdown ends it cleanly.
    s.parent.send(&FromParent::Shutdown, vec![]).unwrap();
    s.parent.flush_blocking(Duration::from_secs(5)).unwrap();
    assert_eq!(s.wait(), Exit::Code(0), "log:\n{}", s.read_log());
}
