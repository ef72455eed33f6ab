//! What control does for each smtpctl request, and the answers of the
//! roles it asks. Only root may ask anything but sendmail's SMTP session
//! (OpenSMTPD's control checks the same for every admin imsg); others get
//! `Denied`.

use super::client::{QueueStep, Work};
use super::Control;
use crate::event::Loop;
use crate::ipc::ctl::{Agent, Reply, Request, QUEUE_CHUNK};
use crate::ipc::msg::{self, ControlDispatcher, ControlQueue, ControlScheduler, ToParent};
use crate::proc::Role;
use crate::prologue::{Frame, Links};
use crate::spool::Kind;

impl Control {
    /// One request from the client in `slot` (which is idle).
    pub(super) fn request(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        slot: usize,
        req: Request,
    ) -> Result<(), String> {
        let sessions = self.clients.iter().flatten().count() as u64;
        let Some(c) = self.clients[slot].as_mut() else {
            return Ok(());
        };
        // sendmail's session is every user's; the rest is root's.
        if c.uid != 0 && req != Request::SmtpSession {
            self.reply(lp, slot, &Reply::Denied);
            return Ok(());
        }
        let id = c.id;
        match req {
            Request::ShowQueue { msgid } => {
                c.work = Work::Queue {
                    msgid,
                    after: 0,
                    step: QueueStep::List,
                };
                self.next_queue_chunk(links, lp, slot)?;
            }
            Request::ShowStats | Request::Digest => {
                c.work = Work::Stats {
                    have: vec![
                        ("control.session".into(), sessions),
                        (
                            "uptime".into(),
                            crate::spool::unix_now().saturating_sub(self.started),
                        ),
                    ],
                    waiting: 2,
                };
                let m = ControlScheduler::Stats { req: id };
                links.send(lp, Role::Scheduler, &m, Vec::new())?;
                let m = ControlDispatcher::Stats { req: id };
                links.send(lp, Role::Dispatcher, &m, Vec::new())?;
            }
            Request::ShowStatus => {
                let p = self.paused;
                let r = Reply::Status {
                    mda_paused: p.mda,
                    mta_paused: p.mta,
                    smtp_paused: p.smtp,
                };
                self.reply(lp, slot, &r);
            }
            Request::Pause(agent) | Request::Resume(agent) => {
                let pause = matches!(req, Request::Pause(_));
                let r = self.pause(links, lp, agent, pause)?;
                self.reply(lp, slot, &r);
            }
            Request::Envelopes { op, target } => {
                c.work = Work::Apply;
                let m = ControlScheduler::Apply {
                    req: id,
                    op,
                    target,
                };
                links.send(lp, Role::Scheduler, &m, Vec::new())?;
            }
            Request::Stop => {
                links.send_parent(lp, &ToParent::Stop, Vec::new())?;
                self.reply(lp, slot, &Reply::Ok);
            }
            Request::Log { verbose } => {
                links.send_parent(lp, &ToParent::Verbose { on: verbose }, Vec::new())?;
                self.reply(lp, slot, &Reply::Ok);
            }
            Request::Unsupported { command } => {
                let command: String = command
                    .chars()
                    .take(crate::ipc::ctl::MAX_COMMAND)
                    .filter(|ch| !ch.is_control())
                    .collect();
                let why = format!("{command}: not supported by this smtpd");
                self.reply(lp, slot, &Reply::Fail(Some(why)));
            }
            Request::SmtpSession => self.smtp_session(links, lp, slot)?,
        }
        Ok(())
    }

    /// `pause|resume mda|mta|smtp`: Fail if it is so already, as
    /// OpenSMTPD's control answers.
    fn pause(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        agent: Agent,
        pause: bool,
    ) -> Result<Reply, String> {
        let (flag, name) = match agent {
            Agent::Mda => (&mut self.paused.mda, "mda"),
            Agent::Mta => (&mut self.paused.mta, "mta"),
            Agent::Smtp => (&mut self.paused.smtp, "smtp"),
        };
        if *flag == pause {
            return Ok(Reply::Fail(None));
        }
        *flag = pause;
        log::info!("info: {name} {}", if pause { "paused" } else { "resumed" });
        match agent {
            Agent::Mda | Agent::Mta => {
                let kind = if agent == Agent::Mda {
                    Kind::Local
                } else {
                    Kind::Relay
                };
                let m = ControlScheduler::PauseKind {
                    kind,
                    paused: pause,
                };
                links.send(lp, Role::Scheduler, &m, Vec::new())?;
            }
            Agent::Smtp => {
                let m = ControlDispatcher::PauseSmtp { paused: pause };
                links.send(lp, Role::Dispatcher, &m, Vec::new())?;
            }
        }
        Ok(Reply::Ok)
    }

    /// Ask the scheduler for the next ids of a show queue.
    pub(super) fn next_queue_chunk(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        slot: usize,
    ) -> Result<(), String> {
        let Some(c) = self.clients[slot].as_mut() else {
            return Ok(());
        };
        let Work::Queue {
            msgid, after, step, ..
        } = &mut c.work
        else {
            return Ok(());
        };
        *step = QueueStep::List;
        let m = ControlScheduler::List {
            req: c.id,
            after: *after,
            msgid: *msgid,
            max: QUEUE_CHUNK as u32,
        };
        links.send(lp, Role::Scheduler, &m, Vec::new())
    }

    /// An answer from another role, for the client whose id is its req.
    pub(super) fn role_frame(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        f: Frame,
    ) -> Result<(), String> {
        match f.peer {
            Role::Scheduler => match f.decode::<ControlScheduler>()? {
                ControlScheduler::Listed { req, entries, more } => {
                    let Some(slot) = self.slot_of(req) else {
                        return Ok(());
                    };
                    let Some(c) = self.clients[slot].as_mut() else {
                        return Ok(());
                    };
                    let Work::Queue { after, step, .. } = &mut c.work else {
                        return Err(format!(
                            "scheduler channel: Listed for client {req} not listing"
                        ));
                    };
                    match entries.last() {
                        None => {
                            c.work = Work::Idle;
                            self.reply(lp, slot, &Reply::End);
                        }
                        Some(last) => {
                            *after = last.id;
                            *step = QueueStep::Describe { more };
                            let m = ControlQueue::Describe { req, entries };
                            links.send(lp, Role::Queue, &m, Vec::new())?;
                        }
                    }
                    self.after_io(links, lp, slot)
                }
                ControlScheduler::Applied { req, count } => {
                    let Some(slot) = self.slot_of(req) else {
                        return Ok(());
                    };
                    if let Some(c) = self.clients[slot].as_mut() {
                        c.work = Work::Idle;
                    }
                    self.reply(lp, slot, &Reply::Count(count));
                    self.after_io(links, lp, slot)
                }
                ControlScheduler::StatsAre { req, stats } => self.stats(links, lp, req, stats),
                other => Err(msg::unexpected(Role::Scheduler, &other)),
            },
            Role::Queue => match f.decode::<ControlQueue>()? {
                ControlQueue::Described { req, entries } => {
                    let Some(slot) = self.slot_of(req) else {
                        return Ok(());
                    };
                    let Some(c) = self.clients[slot].as_mut() else {
                        return Ok(());
                    };
                    let Work::Queue { step, .. } = &mut c.work else {
                        return Err(format!(
                            "queue channel: Described for client {req} not listing"
                        ));
                    };
                    let QueueStep::Describe { more } = *step else {
                        return Err(format!(
                            "queue channel: Described for client {req} not asked"
                        ));
                    };
                    if more {
                        *step = QueueStep::Drain;
                    } else {
                        c.work = Work::Idle;
                    }
                    if !entries.is_empty() {
                        self.reply(lp, slot, &Reply::Queue(entries));
                    }
                    if !more {
                        self.reply(lp, slot, &Reply::End);
                    }
                    self.after_io(links, lp, slot)
                }
                other => Err(msg::unexpected(Role::Queue, &other)),
            },
            Role::Dispatcher => match f.decode::<ControlDispatcher>()? {
                ControlDispatcher::StatsAre { req, stats } => self.stats(links, lp, req, stats),
                other => Err(msg::unexpected(Role::Dispatcher, &other)),
            },
            _ => Err(f.refuse(Role::Control)),
        }
    }

    /// One role's counters for a `show stats`; the reply goes once all
    /// have answered, sorted by name as OpenSMTPD's are.
    fn stats(
        &mut self,
        links: &mut Links,
        lp: &Loop,
        req: u64,
        stats: Vec<(String, u64)>,
    ) -> Result<(), String> {
        let Some(slot) = self.slot_of(req) else {
            return Ok(());
        };
        let Some(c) = self.clients[slot].as_mut() else {
            return Ok(());
        };
        let Work::Stats { have, waiting } = &mut c.work else {
            return Err(format!("counters for client {req}, which did not ask"));
        };
        have.extend(stats);
        *waiting = waiting.saturating_sub(1);
        if *waiting > 0 {
            return Ok(());
        }
        let mut all = std::mem::take(have);
        c.work = Work::Idle;
        all.sort();
        self.reply(lp, slot, &Reply::Stats(all));
        self.after_io(links, lp, slot)
    }
}
