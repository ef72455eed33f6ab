//! The schedule: when each envelope is tried next, which are due, which
//! expired, which deserve a delay notice. Pure logic: no I/O, no clock
//! (every time is passed in, unix seconds), so the scheduler role's loop
//! and the tests drive it the same way.
//!
//! Modelled on OpenSMTPD's scheduler_ramqueue.c: an envelope is pending
//! (waiting for its next try), in flight (handed to a delivery agent),
//! and may be suspended (`smtpctl pause envelope`) or marked for removal
//! while in flight (`smtpctl remove`). Pending envelopes sit in two
//! ordered indexes, by next try (one per delivery kind, so a paused kind
//! costs nothing to skip) and by expiry; every operation is O(log n) per
//! envelope it touches.

#![forbid(unsafe_code)]

use crate::spool::{Envelope, Kind};
use std::collections::{BTreeMap, BTreeSet};

/// Backoff base for relayed envelopes, seconds (OpenSMTPD's
/// BACKOFF_TRANSFER, scheduler_ramqueue.c).
pub const BACKOFF_TRANSFER: u64 = 400;
/// Backoff base for local deliveries and bounces, seconds (OpenSMTPD's
/// BACKOFF_DELIVERY).
pub const BACKOFF_DELIVERY: u64 = 10;
/// `bounce warn-interval` when smtpd.conf says nothing: one notice after
/// four hours (OpenSMTPD's config.c).
pub const DEFAULT_WARN_INTERVAL: u64 = 4 * 3600;
/// At most this many warn intervals (OpenSMTPD's MAX_BOUNCE_WARN).
pub const MAX_WARN_INTERVALS: usize = 4;
/// Most envelopes of one kind (local, relay, bounce) in flight at once.
pub const MAX_IN_FLIGHT: usize = 1000;

/// The backoff base for a kind of delivery.
pub fn backoff_base(kind: Kind) -> u64 {
    match kind {
        Kind::Relay => BACKOFF_TRANSFER,
        Kind::Local | Kind::Bounce => BACKOFF_DELIVERY,
    }
}

/// OpenSMTPD's scheduler_backoff(): `ctime + base * step²`. The delay
/// grows with the square of the attempt count and is not capped: the
/// queue ttl ends it.
pub fn backoff(ctime: u64, base: u64, step: u32) -> u64 {
    backoff_wide(ctime, base, u64::from(step))
}

/// `backoff` for steps past u32, saturating rather than wrapping.
fn backoff_wide(ctime: u64, base: u64, step: u64) -> u64 {
    ctime.saturating_add(base.saturating_mul(step.saturating_mul(step)))
}

/// OpenSMTPD's scheduler_next(): the first `backoff(ctime, base, s)` with
/// `s >= step` that lies after `now`. OpenSMTPD counts `s` up one by one;
/// the smallest `s` with `base * s² > now - ctime` is `isqrt(q) + 1` for
/// `q = (now - ctime) / base`, so this is O(1). Saturates at u64::MAX.
pub fn next_try(ctime: u64, base: u64, step: u32, now: u64) -> u64 {
    let first = backoff(ctime, base, step);
    if first > now {
        return first;
    }
    let q = (now - ctime) / base.max(1);
    backoff_wide(ctime, base, (q.isqrt() + 1).max(u64::from(step)))
}

/// Where an envelope is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum State {
    /// Waiting for its next try (or held, if suspended).
    Pending,
    /// Handed to a delivery agent; `done` or `temp_fail` ends it.
    InFlight,
}

/// What the schedule knows of one envelope.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub kind: Kind,
    pub state: State,
    /// `smtpctl pause envelope`: not tried until resumed (an explicit
    /// `smtpctl schedule` still sends it once, as OpenSMTPD does).
    pub suspended: bool,
    /// `smtpctl remove` while in flight: dropped when the attempt ends.
    pub removed: bool,
    /// When it is tried next (meaningful while pending).
    pub next_try: u64,
    /// Attempts so far.
    pub retry: u32,
    /// When the message was accepted, and how long it may stay (ttl).
    pub ctime: u64,
    pub expire: u64,
    /// The last delay notice's mark (`ctime + interval`); 0 for none.
    pub last_warn: u64,
    /// A bounce, or a message that is itself one: never a notice.
    pub is_bounce: bool,
    /// The sender may be told of delays (non-null sender whose NOTIFY
    /// allows DELAY, explicitly or by default).
    pub notify_delay: bool,
    /// In the time indexes (pending, and not suspended unless forced by
    /// `schedule`).
    queued: bool,
}

impl Entry {
    /// When it must bounce: `ctime + ttl`.
    pub fn expires_at(&self) -> u64 {
        self.ctime.saturating_add(self.expire)
    }
}

/// What `insert` needs of an envelope (the queue sends it with each
/// committed or recovered envelope).
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NewEntry {
    pub kind: Kind,
    pub ctime: u64,
    pub expire: u64,
    pub retry: u32,
    pub last_warn: u64,
    pub is_bounce: bool,
    pub notify_delay: bool,
}

impl NewEntry {
    /// The schedule's view of a stored envelope.
    pub fn from_envelope(e: &Envelope) -> NewEntry {
        let is_bounce = e.is_bounce();
        NewEntry {
            kind: e.kind,
            ctime: e.ctime,
            expire: e.expire,
            retry: e.retry,
            last_warn: e.last_warn,
            is_bounce,
            notify_delay: !is_bounce
                && crate::bounce::should_bounce(
                    &e.sender,
                    e.notify,
                    crate::bounce::Action::Delayed,
                ),
        }
    }

    /// A fresh envelope of `kind` accepted at `ctime`, for tests and
    /// callers without an `Envelope` at hand.
    pub fn new(kind: Kind, ctime: u64, expire: u64) -> NewEntry {
        NewEntry {
            kind,
            ctime,
            expire,
            retry: 0,
            last_warn: 0,
            is_bounce: kind == Kind::Bounce,
            notify_delay: kind != Kind::Bounce,
        }
    }
}

/// Why `insert` refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InsertError {
    /// Already scheduled.
    Duplicate,
    /// The schedule holds its maximum.
    Full,
}

/// The envelopes an smtpctl operation applies to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Envelope(u64),
    /// Every envelope of a message (the high 32 bits of their ids).
    Message(u32),
    All,
}

/// A delay notice to send (OpenSMTPD's B_DELAYED bounce request).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DelayWarning {
    /// The warn interval passed ("delayed for more than ...").
    pub delay: u64,
    /// `ctime + delay`: store it as the envelope's `last_warn`.
    pub mark: u64,
    /// The queue ttl ("kept in the queue for up to ...").
    pub ttl: u64,
}

/// How a temporary failure was taken.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Tried again at `next_try`; `warn` if the sender is due a notice.
    Later {
        next_try: u64,
        retry: u32,
        warn: Option<DelayWarning>,
    },
    /// Removed (smtpctl) during the attempt: delete the envelope.
    Removed,
}

/// What `remove` did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Removal {
    /// Gone from the schedule: delete these envelopes from the spool.
    pub gone: Vec<u64>,
    /// In flight: dropped when their attempt ends (`Retry::Removed`).
    pub marked: usize,
}

/// The schedule of every envelope in the queue.
#[derive(Debug)]
pub struct Schedule {
    entries: BTreeMap<u64, Entry>,
    /// (next_try, id) of queued entries, one set per kind.
    by_try: [BTreeSet<(u64, u64)>; 3],
    /// (expires_at, id) of queued entries.
    by_expiry: BTreeSet<(u64, u64)>,
    /// Kinds paused as a whole (`smtpctl pause mda|mta`).
    paused: [bool; 3],
    /// Entries in flight, per kind: `due` hands out no more than
    /// `MAX_IN_FLIGHT` of a kind, so a backlog never becomes thousands of
    /// open message files in queue, parent or dispatcher at once.
    in_flight: [usize; 3],
    max: usize,
    /// Ascending, nonzero, at most MAX_WARN_INTERVALS.
    warn_intervals: Vec<u64>,
}

fn slot(kind: Kind) -> usize {
    match kind {
        Kind::Local => 0,
        Kind::Relay => 1,
        Kind::Bounce => 2,
    }
}

impl Schedule {
    /// An empty schedule of at most `max` envelopes. `warn_intervals` is
    /// `bounce warn-interval` in seconds: zeros dropped, at most four
    /// kept, sorted so that notices go out in time order whatever the
    /// order in smtpd.conf (OpenSMTPD keeps the configured order).
    pub fn new(max: usize, warn_intervals: &[u64]) -> Schedule {
        let mut w: Vec<u64> = warn_intervals.iter().copied().filter(|&d| d > 0).collect();
        w.truncate(MAX_WARN_INTERVALS);
        w.sort_unstable();
        w.dedup();
        Schedule {
            entries: BTreeMap::new(),
            by_try: Default::default(),
            by_expiry: BTreeSet::new(),
            paused: [false; 3],
            in_flight: [0; 3],
            max,
            warn_intervals: w,
        }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    pub fn get(&self, id: u64) -> Option<&Entry> {
        self.entries.get(&id)
    }

    /// Schedule a committed (or recovered) envelope. As OpenSMTPD's
    /// scheduler_ram_insert(), its first try is `backoff(ctime, base,
    /// retry)`: `ctime` for a new one, so it is due at once.
    pub fn insert(&mut self, id: u64, new: NewEntry) -> Result<(), InsertError> {
        if self.entries.contains_key(&id) {
            return Err(InsertError::Duplicate);
        }
        if self.entries.len() >= self.max {
            return Err(InsertError::Full);
        }
        let entry = Entry {
            kind: new.kind,
            state: State::Pending,
            suspended: false,
            removed: false,
            next_try: backoff(new.ctime, backoff_base(new.kind), new.retry),
            retry: new.retry,
            ctime: new.ctime,
            expire: new.expire,
            last_warn: new.last_warn,
            is_bounce: new.is_bounce,
            notify_delay: new.notify_delay,
            queued: false,
        };
        self.entries.insert(id, entry);
        self.enqueue(id);
        Ok(())
    }

    /// Up to `max` envelopes due by `now`, earliest first, now in flight.
    /// Paused kinds are skipped, and so are expired envelopes: `expired`
    /// hands those out (call it first).
    pub fn due(&mut self, now: u64, max: usize) -> Vec<u64> {
        let mut picked: Vec<(u64, u64)> = Vec::new();
        for k in 0..3 {
            if self.paused[k] {
                continue;
            }
            let room = MAX_IN_FLIGHT.saturating_sub(self.in_flight[k]);
            let live = self.by_try[k]
                .range(..=(now, u64::MAX))
                .filter(|(_, id)| self.entries.get(id).is_some_and(|e| e.expires_at() > now))
                .take(max.min(room));
            picked.extend(live);
        }
        picked.sort_unstable();
        picked.truncate(max);
        let ids: Vec<u64> = picked.into_iter().map(|(_, id)| id).collect();
        for &id in &ids {
            self.dequeue(id);
            if let Some(e) = self.entries.get_mut(&id) {
                e.state = State::InFlight;
                self.in_flight[slot(e.kind)] += 1;
            }
        }
        ids
    }

    /// Up to `max` envelopes whose `ctime + ttl` is reached by `now`
    /// (OpenSMTPD: `expire <= currtime`), removed from the schedule: the
    /// queue bounces them. In-flight and suspended envelopes do not
    /// expire until they are pending again, as in OpenSMTPD.
    pub fn expired(&mut self, now: u64, max: usize) -> Vec<u64> {
        let ids: Vec<u64> = self
            .by_expiry
            .range(..=(now, u64::MAX))
            .take(max)
            .map(|&(_, id)| id)
            .collect();
        for &id in &ids {
            self.dequeue(id);
            self.entries.remove(&id);
        }
        ids
    }

    /// When something next needs doing (a try of an unpaused kind, or an
    /// expiry); None if nothing is pending. May be in the past.
    pub fn next_wakeup(&self) -> Option<u64> {
        let tries = (0..3)
            .filter(|&k| !self.paused[k])
            .filter_map(|k| self.by_try[k].first().map(|&(t, _)| t));
        let expiry = self.by_expiry.first().map(|&(t, _)| t);
        tries.chain(expiry).min()
    }

    /// The envelope is delivered, or failed for good (and was bounced):
    /// forget it. False if unknown.
    pub fn done(&mut self, id: u64) -> bool {
        self.dequeue(id);
        match self.entries.remove(&id) {
            Some(e) => {
                self.landed(&e);
                true
            }
            None => false,
        }
    }

    /// An entry leaves the in-flight state.
    fn landed(&mut self, e: &Entry) {
        if e.state == State::InFlight {
            let n = &mut self.in_flight[slot(e.kind)];
            *n = n.saturating_sub(1);
        }
    }

    /// The attempt failed temporarily: count it and schedule the next per
    /// OpenSMTPD's scheduler_ram_update() (`scheduler_next(ctime, base,
    /// retry)`), then check for a delay notice as scheduler.c does on
    /// IMSG_QUEUE_DELIVERY_TEMPFAIL. None if the envelope is unknown or
    /// not in flight.
    pub fn temp_fail(&mut self, id: u64, now: u64) -> Option<Retry> {
        let e = self.entries.get(&id)?;
        if e.state != State::InFlight {
            return None;
        }
        let e = e.clone();
        self.landed(&e);
        let e = self.entries.get_mut(&id)?;
        if e.removed {
            self.entries.remove(&id);
            return Some(Retry::Removed);
        }
        e.retry = e.retry.saturating_add(1);
        e.next_try = next_try(e.ctime, backoff_base(e.kind), e.retry, now);
        e.state = State::Pending;
        let (next_try, retry) = (e.next_try, e.retry);
        if !e.suspended {
            self.enqueue(id);
        }
        let warn = self.needs_delay_warning(id, now);
        if let Some(w) = warn {
            self.warned(id, w.mark);
        }
        Some(Retry::Later {
            next_try,
            retry,
            warn,
        })
    }

    /// The delay notice this envelope is due, if any. OpenSMTPD's rule
    /// (scheduler.c): for each warn interval `d`, in order, the mark is
    /// `ctime + d`; a notice is due when the envelope will still be
    /// queued at the mark (its next try, or `now`, is not before it) and
    /// no notice was sent for that mark or a later one. One notice per
    /// call; never for bounces or senders that refused delay notices.
    pub fn needs_delay_warning(&self, id: u64, now: u64) -> Option<DelayWarning> {
        let e = self.entries.get(&id)?;
        if e.is_bounce || !e.notify_delay {
            return None;
        }
        let horizon = e.next_try.max(now);
        self.warn_intervals.iter().find_map(|&d| {
            let mark = e.ctime.saturating_add(d);
            (horizon >= mark && e.last_warn < mark).then_some(DelayWarning {
                delay: d,
                mark,
                ttl: e.expire,
            })
        })
    }

    /// Record that the notice for `mark` went out.
    pub fn warned(&mut self, id: u64, mark: u64) {
        if let Some(e) = self.entries.get_mut(&id) {
            e.last_warn = e.last_warn.max(mark);
        }
    }

    /// `smtpctl pause envelope`: suspend; returns how many changed.
    pub fn pause(&mut self, target: Target) -> usize {
        self.each(target, |s, id| {
            let Some(e) = s.entries.get_mut(&id) else {
                return false;
            };
            if e.suspended {
                return false;
            }
            e.suspended = true;
            s.dequeue(id);
            true
        })
    }

    /// `smtpctl resume envelope`: lift a suspension; returns how many
    /// changed.
    pub fn resume(&mut self, target: Target) -> usize {
        self.each(target, |s, id| {
            let Some(e) = s.entries.get_mut(&id) else {
                return false;
            };
            if !e.suspended {
                return false;
            }
            e.suspended = false;
            if e.state == State::Pending {
                s.enqueue(id);
            }
            true
        })
    }

    /// `smtpctl schedule`: due at `now`, whatever the backoff said. In
    /// flight envelopes are left alone; a suspended one is sent once and
    /// stays suspended (OpenSMTPD's rq_envelope_schedule()).
    pub fn schedule(&mut self, target: Target, now: u64) -> usize {
        self.each(target, |s, id| {
            let Some(e) = s.entries.get(&id) else {
                return false;
            };
            if e.state == State::InFlight {
                return false;
            }
            s.dequeue(id);
            if let Some(e) = s.entries.get_mut(&id) {
                e.next_try = now;
            }
            s.enqueue_forced(id);
            true
        })
    }

    /// `smtpctl remove`: forget pending envelopes at once, mark in-flight
    /// ones (OpenSMTPD's rq_envelope_remove()).
    pub fn remove(&mut self, target: Target) -> Removal {
        let mut marked = 0;
        let mut gone = Vec::new();
        self.each(target, |s, id| {
            let Some(e) = s.entries.get_mut(&id) else {
                return false;
            };
            if e.state == State::InFlight {
                if !e.removed {
                    e.removed = true;
                    marked += 1;
                }
                return true;
            }
            s.dequeue(id);
            s.entries.remove(&id);
            gone.push(id);
            true
        });
        Removal { gone, marked }
    }

    /// `smtpctl pause mda|mta` (and bounces): no envelope of `kind` is
    /// handed out until `resume_kind`. Expiry goes on.
    pub fn pause_kind(&mut self, kind: Kind) {
        self.paused[slot(kind)] = true;
    }

    pub fn resume_kind(&mut self, kind: Kind) {
        self.paused[slot(kind)] = false;
    }

    pub fn is_paused(&self, kind: Kind) -> bool {
        self.paused[slot(kind)]
    }

    /// `smtpctl show queue`: up to `max` entries with ids above `after`,
    /// of message `msgid` only if given, in id order; and whether more
    /// follow. Bounded work per call, so a huge queue is listed in turns.
    pub fn list(&self, after: u64, msgid: Option<u32>, max: usize) -> (Vec<(u64, &Entry)>, bool) {
        let hi = match msgid {
            Some(m) => u64::from(m) << 32 | 0xffff_ffff,
            None => u64::MAX,
        };
        let lo = match msgid {
            Some(m) => (u64::from(m) << 32).max(after.saturating_add(1)),
            None => after.saturating_add(1),
        };
        if after == u64::MAX || lo > hi {
            return (Vec::new(), false);
        }
        let mut it = self.entries.range(lo..=hi).map(|(&id, e)| (id, e));
        let out: Vec<_> = it.by_ref().take(max).collect();
        (out, it.next().is_some())
    }

    /// How many entries are in flight (for `show stats`).
    pub fn in_flight(&self) -> usize {
        self.in_flight.iter().sum()
    }

    /// Apply `f` to every envelope of `target`; count the trues. The ids
    /// are collected first: `f` may remove entries.
    fn each(&mut self, target: Target, mut f: impl FnMut(&mut Self, u64) -> bool) -> usize {
        let ids: Vec<u64> = match target {
            Target::Envelope(id) => vec![id],
            Target::Message(m) => {
                let lo = u64::from(m) << 32;
                self.entries
                    .range(lo..=lo | 0xffff_ffff)
                    .map(|(&id, _)| id)
                    .collect()
            }
            Target::All => self.entries.keys().copied().collect(),
        };
        ids.into_iter().filter(|&id| f(self, id)).count()
    }

    /// Put a pending, unsuspended entry in the indexes.
    fn enqueue(&mut self, id: u64) {
        if self.entries.get(&id).is_some_and(|e| !e.suspended) {
            self.enqueue_forced(id);
        }
    }

    fn enqueue_forced(&mut self, id: u64) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if e.queued || e.state != State::Pending {
            return;
        }
        e.queued = true;
        let (k, t, x) = (slot(e.kind), e.next_try, e.expires_at());
        self.by_try[k].insert((t, id));
        self.by_expiry.insert((x, id));
    }

    fn dequeue(&mut self, id: u64) {
        let Some(e) = self.entries.get_mut(&id) else {
            return;
        };
        if !e.queued {
            return;
        }
        e.queued = false;
        let (k, t, x) = (slot(e.kind), e.next_try, e.expires_at());
        self.by_try[k].remove(&(t, id));
        self.by_expiry.remove(&(x, id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spool::Flags;
    use crate::spool::Notify;

    const H: u64 = 3600;
    const DAY: u64 = 86400;
    const T0: u64 = 1_700_000_000;

    fn sched() -> Schedule {
        Schedule::new(1000, &[DEFAULT_WARN_INTERVAL])
    }

    fn evp(msg: u32, n: u32) -> u64 {
        (u64::from(msg) << 32) | u64::from(n)
    }

    /// The indexes hold exactly the queued entries, with their keys.
    fn check(s: &Schedule) {
        let mut tries = 0;
        for (&id, e) in &s.entries {
            let in_try = s.by_try[slot(e.kind)].contains(&(e.next_try, id));
            let in_exp = s.by_expiry.contains(&(e.expires_at(), id));
            assert_eq!(in_try, e.queued, "{id:x}");
            assert_eq!(in_exp, e.queued, "{id:x}");
            if e.queued {
                assert_eq!(e.state, State::Pending);
                tries += 1;
            }
        }
        assert_eq!(s.by_try.iter().map(BTreeSet::len).sum::<usize>(), tries);
        assert_eq!(s.by_expiry.len(), tries);
    }

    /// OpenSMTPD's scheduler_next(), literally.
    fn reference_next(ctime: u64, base: u64, mut step: u32, now: u64) -> u64 {
        loop {
            let t = backoff(ctime, base, step);
            if t > now {
                return t;
            }
            step += 1;
        }
    }

    #[test]
    fn backoff_matches_opensmtpd() {
        assert_eq!(backoff(T0, BACKOFF_TRANSFER, 0), T0);
        assert_eq!(backoff(T0, BACKOFF_TRANSFER, 1), T0 + 400);
        assert_eq!(backoff(T0, BACKOFF_TRANSFER, 3), T0 + 3600);
        assert_eq!(backoff(T0, BACKOFF_DELIVERY, 10), T0 + 1000);
        let mut rng = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..20000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let base = [BACKOFF_DELIVERY, BACKOFF_TRANSFER, 1][(rng % 3) as usize];
            let step = ((rng >> 8) % 40) as u32;
            let elapsed = (rng >> 16) % (10 * DAY);
            let now = if rng & 1 == 0 {
                T0 + elapsed
            } else {
                T0 - elapsed % 100
            };
            assert_eq!(
                next_try(T0, base, step, now),
                reference_next(T0, base, step, now),
                "base {base} step {step} now-T0 {}",
                now as i64 - T0 as i64
            );
        }
        // Saturates instead of overflowing.
        assert_eq!(backoff(u64::MAX - 5, BACKOFF_TRANSFER, u32::MAX), u64::MAX);
        assert!(next_try(0, 1, 0, u64::MAX - 1) >= u64::MAX - 1);
    }

    #[test]
    fn new_envelopes_are_due_now_and_in_order() {
        let mut s = sched();
        s.insert(evp(1, 2), NewEntry::new(Kind::Relay, T0 + 5, 4 * DAY))
            .expect("insert");
        s.insert(evp(1, 1), NewEntry::new(Kind::Local, T0, 4 * DAY))
            .expect("insert");
        s.insert(evp(2, 1), NewEntry::new(Kind::Bounce, T0 + 9, 7 * DAY))
            .expect("insert");
        check(&s);
        assert_eq!(s.next_wakeup(), Some(T0));
        assert_eq!(s.due(T0 + 5, 10), vec![evp(1, 1), evp(1, 2)]);
        assert_eq!(s.get(evp(1, 1)).map(|e| e.state), Some(State::InFlight));
        assert_eq!(s.next_wakeup(), Some(T0 + 9));
        assert_eq!(s.due(T0 + 100, 10), vec![evp(2, 1)]);
        assert_eq!(s.next_wakeup(), None);
        assert!(s.due(T0 + 1000, 10).is_empty());
        check(&s);
        assert!(s.done(evp(1, 1)));
        assert!(!s.done(evp(1, 1)));
        assert_eq!(s.len(), 2);
    }

    #[test]
    fn due_takes_at_most_max() {
        let mut s = sched();
        for n in 1..=10 {
            s.insert(
                evp(1, n),
                NewEntry::new(Kind::Local, T0 + u64::from(n), DAY),
            )
            .expect("insert");
        }
        assert_eq!(s.due(T0 + 100, 3), vec![evp(1, 1), evp(1, 2), evp(1, 3)]);
        assert_eq!(s.due(T0 + 100, 3), vec![evp(1, 4), evp(1, 5), evp(1, 6)]);
        assert_eq!(s.due(T0 + 100, 0), Vec::<u64>::new());
        check(&s);
    }

    #[test]
    fn temp_fail_backs_off_quadratically() {
        let mut s = sched();
        let id = evp(1, 1);
        s.insert(id, NewEntry::new(Kind::Relay, T0, 4 * DAY))
            .expect("insert");
        assert_eq!(s.due(T0, 10), vec![id]);
        // Not in flight twice; unknown ids are refused.
        assert_eq!(s.temp_fail(evp(9, 9), T0), None);
        let r = s.temp_fail(id, T0 + 10);
        assert_eq!(
            r,
            Some(Retry::Later {
                next_try: T0 + 400,
                retry: 1,
                warn: None
            })
        );
        assert_eq!(s.temp_fail(id, T0 + 10), None, "not in flight any more");
        check(&s);
        assert!(s.due(T0 + 399, 10).is_empty());
        assert_eq!(s.next_wakeup(), Some(T0 + 400));
        assert_eq!(s.due(T0 + 400, 10), vec![id]);
        // Second failure: 400 * 2² = 1600.
        match s.temp_fail(id, T0 + 401) {
            Some(Retry::Later {
                next_try, retry: 2, ..
            }) => assert_eq!(next_try, T0 + 1600),
            other => panic!("{other:?}"),
        }
        // A late attempt: the next try is the first backoff point after
        // now, not one already past.
        assert_eq!(s.due(T0 + 10_000, 10), vec![id]);
        match s.temp_fail(id, T0 + 10_000) {
            // 400 * 5² = 10000 is not after now; 400 * 6² is.
            Some(Retry::Later {
                next_try, retry: 3, ..
            }) => assert_eq!(next_try, T0 + 14_400),
            other => panic!("{other:?}"),
        }
        // Local deliveries back off from 10 s.
        let l = evp(2, 1);
        s.insert(l, NewEntry::new(Kind::Local, T0, DAY))
            .expect("insert");
        s.due(T0, 10);
        match s.temp_fail(l, T0 + 1) {
            Some(Retry::Later { next_try, .. }) => assert_eq!(next_try, T0 + 10),
            other => panic!("{other:?}"),
        }
        check(&s);
    }

    #[test]
    fn recovered_envelopes_keep_their_backoff() {
        let mut s = sched();
        let mut n = NewEntry::new(Kind::Relay, T0, 4 * DAY);
        n.retry = 3;
        s.insert(evp(1, 1), n).expect("insert");
        assert_eq!(s.get(evp(1, 1)).map(|e| e.next_try), Some(T0 + 3600));
    }

    #[test]
    fn expiry() {
        let mut s = sched();
        let (a, b) = (evp(1, 1), evp(1, 2));
        s.insert(a, NewEntry::new(Kind::Relay, T0, 4 * DAY))
            .expect("insert");
        s.insert(b, NewEntry::new(Kind::Relay, T0, 4 * DAY))
            .expect("insert");
        s.due(T0, 1);
        assert!(s.expired(T0 + 4 * DAY - 1, 10).is_empty());
        // b is pending: it expires at ctime + ttl exactly; a is in flight.
        assert_eq!(s.expired(T0 + 4 * DAY, 10), vec![b]);
        assert_eq!(s.get(b), None);
        // Once a's attempt fails, it expires at once and is never due.
        let _ = s.temp_fail(a, T0 + 4 * DAY + 1);
        assert!(s.next_wakeup().is_some_and(|t| t <= T0 + 4 * DAY + 1));
        assert!(s.due(T0 + 5 * DAY, 10).is_empty(), "expired is not due");
        assert_eq!(s.expired(T0 + 5 * DAY, 10), vec![a]);
        assert!(s.is_empty());
        check(&s);
    }

    #[test]
    fn delay_warnings_follow_the_intervals() {
        let mut s = Schedule::new(10, &[4 * H, H, 0, 0]);
        let id = evp(1, 1);
        s.insert(id, NewEntry::new(Kind::Relay, T0, 4 * DAY))
            .expect("insert");
        let mut now = T0;
        let mut warns = Vec::new();
        while now < T0 + DAY {
            if s.due(now, 1).is_empty() {
                now = s.next_wakeup().expect("pending");
                continue;
            }
            if let Some(Retry::Later { warn: Some(w), .. }) = s.temp_fail(id, now) {
                warns.push((w.delay, w.mark, w.ttl));
            }
        }
        // One notice per interval, in time order, each when the next try
        // lies beyond its mark.
        assert_eq!(
            warns,
            vec![(H, T0 + H, 4 * DAY), (4 * H, T0 + 4 * H, 4 * DAY)]
        );
        assert_eq!(s.get(id).map(|e| e.last_warn), Some(T0 + 4 * H));
        assert_eq!(s.needs_delay_warning(id, T0 + 3 * DAY), None);
    }

    #[test]
    fn no_delay_warning_for_bounces_or_refusing_senders() {
        let mut s = sched();
        let b = evp(1, 1);
        s.insert(b, NewEntry::new(Kind::Bounce, T0, 7 * DAY))
            .expect("insert");
        assert_eq!(s.needs_delay_warning(b, T0 + DAY), None);
        let mut n = NewEntry::new(Kind::Relay, T0, 4 * DAY);
        n.notify_delay = false;
        s.insert(evp(2, 1), n).expect("insert");
        assert_eq!(s.needs_delay_warning(evp(2, 1), T0 + DAY), None);
        let n = NewEntry::new(Kind::Relay, T0, 4 * DAY);
        s.insert(evp(3, 1), n).expect("insert");
        assert_eq!(s.needs_delay_warning(evp(3, 1), T0 + 4 * H - 1), None);
        let w = s.needs_delay_warning(evp(3, 1), T0 + 4 * H).expect("due");
        s.warned(evp(3, 1), w.mark);
        assert_eq!(s.needs_delay_warning(evp(3, 1), T0 + 5 * H), None);
    }

    #[test]
    fn from_envelope_reads_notify_and_bounce_flags() {
        use crate::spool::envelope::tests::sample;
        use crate::spool::EvpId;
        let id = EvpId::new(0x1a2b_3c4d_00f0_e1d2).expect("id");
        let e = sample(id);
        let n = NewEntry::from_envelope(&e);
        assert!(n.notify_delay && !n.is_bounce);
        assert_eq!((n.ctime, n.expire, n.retry), (e.ctime, e.expire, e.retry));
        let mut f = e.clone();
        f.notify = Notify::FAILURE;
        assert!(!NewEntry::from_envelope(&f).notify_delay);
        let mut f = e.clone();
        f.notify = Notify::default();
        assert!(
            NewEntry::from_envelope(&f).notify_delay,
            "default allows delays"
        );
        let mut f = e.clone();
        f.sender = String::new();
        assert!(!NewEntry::from_envelope(&f).notify_delay);
        let mut f = e;
        f.flags.insert(Flags::BOUNCE);
        let n = NewEntry::from_envelope(&f);
        assert!(n.is_bounce && !n.notify_delay);
    }

    #[test]
    fn pause_resume_schedule() {
        let mut s = sched();
        let (a, b, c) = (evp(1, 1), evp(1, 2), evp(2, 1));
        for id in [a, b, c] {
            s.insert(id, NewEntry::new(Kind::Relay, T0, 4 * DAY))
                .expect("insert");
        }
        assert_eq!(s.pause(Target::Message(1)), 2);
        assert_eq!(s.pause(Target::Envelope(a)), 0, "already paused");
        assert_eq!(s.pause(Target::Envelope(evp(9, 9))), 0, "unknown");
        check(&s);
        assert_eq!(s.due(T0, 10), vec![c]);
        // Suspended envelopes neither go nor expire.
        assert!(s.expired(T0 + 5 * DAY, 10).is_empty());
        assert_eq!(s.next_wakeup(), None);
        assert_eq!(s.resume(Target::Envelope(b)), 1);
        assert_eq!(s.due(T0, 10), vec![b]);
        // schedule: a paused envelope goes once and stays paused.
        assert_eq!(
            s.schedule(Target::All, T0 + 50),
            1,
            "in-flight ones skipped"
        );
        assert_eq!(s.due(T0 + 50, 10), vec![a]);
        let _ = s.temp_fail(a, T0 + 60);
        assert!(s.get(a).is_some_and(|e| e.suspended && !e.queued));
        assert!(s.due(T0 + DAY, 10).iter().all(|&id| id != a));
        assert_eq!(s.resume(Target::All), 1);
        assert_eq!(s.due(T0 + DAY, 10), vec![a]);
        check(&s);
        // A backed-off envelope is brought forward by schedule.
        let _ = s.temp_fail(a, T0 + DAY);
        assert!(s.due(T0 + DAY, 10).is_empty());
        assert_eq!(s.schedule(Target::Envelope(a), T0 + DAY), 1);
        assert_eq!(s.due(T0 + DAY, 10), vec![a]);
        check(&s);
    }

    #[test]
    fn list_in_turns_and_by_message() {
        let mut s = Schedule::new(100, &[]);
        for (m, n) in [(1u32, 3u32), (2, 2)] {
            for i in 1..=n {
                s.insert(evp(m, i), NewEntry::new(Kind::Local, 0, 100))
                    .unwrap();
            }
        }
        let (a, more) = s.list(0, None, 4);
        assert_eq!(a.len(), 4);
        assert!(more);
        let (b, more) = s.list(a[3].0, None, 4);
        assert_eq!(b.iter().map(|x| x.0).collect::<Vec<_>>(), vec![evp(2, 2)]);
        assert!(!more);
        let (m2, more) = s.list(0, Some(2), 10);
        assert_eq!(m2.len(), 2);
        assert!(!more);
        assert!(s.list(u64::MAX, None, 10).0.is_empty());
        assert!(s.list(evp(2, 2), Some(1), 10).0.is_empty());
    }

    #[test]
    fn pause_by_kind() {
        let mut s = sched();
        s.insert(evp(1, 1), NewEntry::new(Kind::Relay, T0, DAY))
            .expect("insert");
        s.insert(evp(1, 2), NewEntry::new(Kind::Local, T0 + 1, DAY))
            .expect("insert");
        s.pause_kind(Kind::Relay);
        assert!(s.is_paused(Kind::Relay));
        assert_eq!(s.next_wakeup(), Some(T0 + 1));
        assert_eq!(s.due(T0 + 10, 10), vec![evp(1, 2)]);
        // Expiry still runs for the paused kind.
        assert_eq!(s.next_wakeup(), Some(T0 + DAY));
        s.resume_kind(Kind::Relay);
        assert_eq!(s.due(T0 + 10, 10), vec![evp(1, 1)]);
    }

    #[test]
    fn remove_now_or_after_flight() {
        let mut s = sched();
        let (a, b, c) = (evp(1, 1), evp(1, 2), evp(2, 1));
        for id in [a, b, c] {
            s.insert(id, NewEntry::new(Kind::Local, T0, DAY))
                .expect("insert");
        }
        assert_eq!(s.due(T0, 1), vec![a]);
        let r = s.remove(Target::Message(1));
        assert_eq!(r.gone, vec![b]);
        assert_eq!(r.marked, 1);
        assert_eq!(s.remove(Target::Envelope(a)).marked, 0, "already marked");
        assert_eq!(s.temp_fail(a, T0 + 1), Some(Retry::Removed));
        assert_eq!(s.get(a), None);
        assert_eq!(s.remove(Target::All).gone, vec![c]);
        assert!(s.is_empty());
        check(&s);
    }

    #[test]
    fn bounded_and_no_duplicates() {
        let mut s = Schedule::new(2, &[]);
        s.insert(1 << 32 | 1, NewEntry::new(Kind::Local, T0, DAY))
            .expect("insert");
        assert_eq!(
            s.insert(1 << 32 | 1, NewEntry::new(Kind::Local, T0, DAY)),
            Err(InsertError::Duplicate)
        );
        s.insert(1 << 32 | 2, NewEntry::new(Kind::Local, T0, DAY))
            .expect("insert");
        assert_eq!(
            s.insert(1 << 32 | 3, NewEntry::new(Kind::Local, T0, DAY)),
            Err(InsertError::Full)
        );
        s.due(T0, 1);
        assert!(s.done(1 << 32 | 1));
        s.insert(1 << 32 | 3, NewEntry::new(Kind::Local, T0, DAY))
            .expect("room again");
        // No warn intervals: never a notice.
        s.due(T0, 10);
        assert!(matches!(
            s.temp_fail(1 << 32 | 2, T0 + 10 * DAY),
            Some(Retry::Later { warn: None, .. })
        ));
    }

    /// Random operations keep the indexes consistent.
    #[test]
    fn random_operations_keep_invariants() {
        let mut s = Schedule::new(64, &[H, 4 * H]);
        let mut rng = 0x2545_f491_4f6c_dd1du64;
        let mut now = T0;
        for _ in 0..20000 {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            let id = evp((rng % 4) as u32 + 1, ((rng >> 4) % 8) as u32 + 1);
            let kind = [Kind::Local, Kind::Relay, Kind::Bounce][((rng >> 8) % 3) as usize];
            now += (rng >> 12) % 600;
            match (rng >> 20) % 12 {
                0 | 1 => {
                    let _ = s.insert(id, NewEntry::new(kind, now, (rng >> 24) % (2 * DAY)));
                }
                2 | 3 => {
                    for d in s.due(now, 5) {
                        assert_eq!(s.get(d).map(|e| e.state), Some(State::InFlight));
                    }
                }
                4 => {
                    for x in s.expired(now, 5) {
                        assert_eq!(s.get(x), None);
                    }
                }
                5 | 6 => {
                    let _ = s.temp_fail(id, now);
                }
                7 => {
                    let _ = s.done(id);
                }
                8 => {
                    s.pause(Target::Envelope(id));
                }
                9 => {
                    s.resume(Target::Message((rng % 4) as u32 + 1));
                }
                10 => {
                    s.schedule(Target::Envelope(id), now);
                }
                _ => {
                    let _ = s.remove(Target::Envelope(id));
                }
            }
            check(&s);
            if let Some(t) = s.next_wakeup() {
                let e = s.by_try.iter().flatten().map(|&(t, _)| t);
                assert!(e.chain(s.by_expiry.iter().map(|&(t, _)| t)).all(|x| x >= t));
            }
        }
    }

    #[test]
    fn at_most_max_in_flight_of_a_kind_are_handed_out() {
        let mut s = Schedule::new(10_000, &[]);
        for n in 0..1500 {
            s.insert(evp(1, n), NewEntry::new(Kind::Relay, T0, 4 * DAY))
                .unwrap();
        }
        for n in 0..10 {
            s.insert(evp(2, n), NewEntry::new(Kind::Local, T0, 4 * DAY))
                .unwrap();
        }
        let first = s.due(T0, 5000);
        assert_eq!(
            first.len(),
            MAX_IN_FLIGHT + 10,
            "relay capped, local not held up"
        );
        assert_eq!(s.in_flight(), MAX_IN_FLIGHT + 10);
        assert!(s.due(T0, 5000).is_empty(), "no room");
        // Five land: five more may fly; a temporary failure lands too.
        for &id in first.iter().filter(|&&id| id >> 32 == 1).take(5) {
            assert!(s.done(id));
        }
        let id = *first
            .iter()
            .find(|&&id| id >> 32 == 1 && s.get(id).is_some())
            .unwrap();
        assert!(s.temp_fail(id, T0).is_some());
        assert_eq!(s.due(T0, 5000).len(), 6);
        assert_eq!(s.in_flight(), MAX_IN_FLIGHT + 10);
    }
}
