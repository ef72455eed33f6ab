//! The sans-I/O core: a query's wire form, and the checks and parsing of a
//! reply to it. The `domain` crate does all encoding and decoding; this
//! file decides which replies are ours and keeps a bounded, owned copy of
//! the records we use, so nothing borrowed from untrusted bytes escapes.

#![forbid(unsafe_code)]

use std::net::{Ipv4Addr, Ipv6Addr};

use domain::base::iana::{Class, Opcode, Rcode, Rtype};
use domain::base::name::{Name, ParsedName};
use domain::base::{Message, MessageBuilder};
use domain::rdata::{Aaaa, Cname, Mx, A};

use super::conf::normalize;
use super::DnsError;

/// Records kept from one reply's answer section; the rest are ignored. An
/// MX set or address list longer than this is useless to a relay.
pub const MAX_RECORDS: usize = 64;

/// The record types we ask for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QType {
    Mx,
    A,
    Aaaa,
}

impl QType {
    fn rtype(self) -> Rtype {
        match self {
            QType::Mx => Rtype::MX,
            QType::A => Rtype::A,
            QType::Aaaa => Rtype::AAAA,
        }
    }
}

/// The data of a record we use, owned, names in [`normalize`]d form.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RData {
    Mx { preference: u16, exchange: String },
    A(Ipv4Addr),
    Aaaa(Ipv6Addr),
    Cname(String),
}

/// One answer record: its (normalized) owner and its data.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rr {
    pub owner: String,
    pub data: RData,
}

/// How the server answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    /// NOERROR: the records (maybe none: NODATA) are in `records`.
    Ok,
    /// NXDOMAIN: the (last) name does not exist.
    NoName,
    /// SERVFAIL, REFUSED and the rest: ask another server, else retry later.
    Failed(u8),
}

/// A parsed reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Answer {
    pub status: Status,
    pub records: Vec<Rr>,
}

/// What to do with a datagram received for a query.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not a reply to this query (wrong id, question or flags): drop it and
    /// keep waiting, as it may be forged or late.
    Ignore,
    /// Ours, but truncated: ask again over TCP.
    Truncated,
    /// Ours, but its body does not parse: try the next server.
    Malformed,
    /// Ours.
    Answer(Answer),
}

/// One question, ready to send, with what is needed to match its reply.
#[derive(Debug, Clone)]
pub struct Query {
    id: u16,
    qname: String,
    qtype: QType,
    wire: Vec<u8>,
}

impl Query {
    /// Builds a recursive query for `name` (absolute; a trailing dot is
    /// optional) with message id `id`.
    pub fn new(name: &str, qtype: QType, id: u16) -> Result<Query, DnsError> {
        let bad = || DnsError::Invalid(name.to_string());
        if name.is_empty() || name == "." {
            return Err(bad());
        }
        let dname = Name::<Vec<u8>>::vec_from_str(name).map_err(|_| bad())?;
        let mut builder = MessageBuilder::new_vec();
        builder.header_mut().set_id(id);
        builder.header_mut().set_rd(true);
        let mut q = builder.question();
        q.push((&dname, qtype.rtype(), Class::IN))
            .map_err(|_| bad())?;
        Ok(Query {
            id,
            qname: normalize(&dname.to_string()),
            qtype,
            wire: q.finish(),
        })
    }

    /// The message to send (over TCP, prefixed by its 16-bit length).
    pub fn wire(&self) -> &[u8] {
        &self.wire
    }

    /// The name asked for, normalized.
    pub fn qname(&self) -> &str {
        &self.qname
    }

    /// The type asked for.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// Judges a received message. Total: any byte string gives a verdict.
    pub fn accept(&self, reply: &[u8]) -> Verdict {
        let Ok(msg) = Message::from_octets(reply) else {
            return Verdict::Ignore;
        };
        let h = msg.header();
        if h.id() != self.id || !h.qr() || h.opcode() != Opcode::QUERY {
            return Verdict::Ignore;
        }
        // The question must be echoed exactly: one entry, same name, type
        // and class. This, the id and the source port are what stand
        // between us and off-path forgery.
        let Ok(q) = msg.sole_question() else {
            return Verdict::Ignore;
        };
        if q.qtype() != self.qtype.rtype()
            || q.qclass() != Class::IN
            || normalize(&q.qname().to_string()) != self.qname
        {
            return Verdict::Ignore;
        }
        if h.tc() {
            return Verdict::Truncated;
        }
        let status = match h.rcode() {
            Rcode::NOERROR => Status::Ok,
            Rcode::NXDOMAIN => Status::NoName,
            other => Status::Failed(other.to_int()),
        };
        match records(&msg) {
            Some(records) => Verdict::Answer(Answer { status, records }),
            None => Verdict::Malformed,
        }
    }
}

type Parsed<'a> = ParsedName<&'a [u8]>;

/// The IN-class MX, A, AAAA and CNAME records of the answer section, at
/// most [`MAX_RECORDS`]; None if the section does not parse.
fn records(msg: &Message<&[u8]>) -> Option<Vec<Rr>> {
    let mut out = Vec::new();
    for rr in msg.answer().ok()? {
        if out.len() >= MAX_RECORDS {
            break;
        }
        let rr = rr.ok()?;
        if rr.class() != Class::IN {
            continue;
        }
        let owner = normalize(&rr.owner().to_string());
        let data = match rr.rtype() {
            Rtype::MX => {
                let r = rr.to_record::<Mx<Parsed<'_>>>().ok()??;
                let exchange = r.data().exchange();
                RData::Mx {
                    preference: r.data().preference(),
                    // The root name (null MX) becomes "".
                    exchange: if exchange.is_root() {
                        String::new()
                    } else {
                        normalize(&exchange.to_string())
                    },
                }
            }
            Rtype::A => RData::A(rr.to_record::<A>().ok()??.data().addr()),
            Rtype::AAAA => RData::Aaaa(rr.to_record::<Aaaa>().ok()??.data().addr()),
            Rtype::CNAME => {
                let r = rr.to_record::<Cname<Parsed<'_>>>().ok()??;
                RData::Cname(normalize(&r.data().cname().to_string()))
            }
            _ => continue,
        };
        out.push(Rr { owner, data });
    }
    Some(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use domain::base::Ttl;

    /// Builds a reply to `query` (as a server would) with the given
    /// header tweaks and answer records; for tests here and in transport.
    pub(crate) fn reply(
        query: &[u8],
        id: Option<u16>,
        rcode: Rcode,
        tc: bool,
        answers: &[(&str, RData)],
    ) -> Vec<u8> {
        let q = Message::from_octets(query).unwrap();
        let mut b = MessageBuilder::new_vec();
        b.header_mut().set_id(id.unwrap_or(q.header().id()));
        b.header_mut().set_qr(true);
        b.header_mut().set_rd(true);
        b.header_mut().set_ra(true);
        b.header_mut().set_tc(tc);
        b.header_mut().set_rcode(rcode);
        let mut qb = b.question();
        for question in q.question() {
            qb.push(question.unwrap()).unwrap();
        }
        let mut ab = qb.answer();
        for (owner, data) in answers {
            let owner = Name::<Vec<u8>>::vec_from_str(owner).unwrap();
            let ttl = Ttl::from_secs(60);
            let name = |s: &str| {
                Name::<Vec<u8>>::vec_from_str(if s.is_empty() { "." } else { s }).unwrap()
            };
            match data {
                RData::Mx {
                    preference,
                    exchange,
                } => ab
                    .push((&owner, Class::IN, ttl, Mx::new(*preference, name(exchange))))
                    .unwrap(),
                RData::A(a) => ab.push((&owner, Class::IN, ttl, A::new(*a))).unwrap(),
                RData::Aaaa(a) => ab.push((&owner, Class::IN, ttl, Aaaa::new(*a))).unwrap(),
                RData::Cname(c) => ab
                    .push((&owner, Class::IN, ttl, Cname::new(name(c))))
                    .unwrap(),
            }
        }
        ab.finish()
    }

    fn mx(p: u16, h: &str) -> RData {
        RData::Mx {
            preference: p,
            exchange: h.into(),
        }
    }

    #[test]
    fn query_round_trip() {
        let q = Query::new("Example.COM.", QType::Mx, 0x1234).unwrap();
        assert_eq!(q.qname(), "example.com");
        assert_eq!(&q.wire()[..2], &[0x12, 0x34]);
        let r = reply(
            q.wire(),
            None,
            Rcode::NOERROR,
            false,
            &[
                ("example.com", mx(10, "mx1.example.com")),
                ("example.com", mx(0, "")),
                ("mx1.example.com", RData::A("192.0.2.1".parse().unwrap())),
                (
                    "mx1.example.com",
                    RData::Aaaa("2001:db8::1".parse().unwrap()),
                ),
                ("www.example.com", RData::Cname("Example.com.".into())),
            ],
        );
        let Verdict::Answer(a) = q.accept(&r) else {
            panic!("not accepted");
        };
        assert_eq!(a.status, Status::Ok);
        assert_eq!(a.records.len(), 5);
        assert_eq!(a.records[0].data, mx(10, "mx1.example.com"));
        assert_eq!(a.records[1].data, mx(0, ""));
        assert_eq!(a.records[4].data, RData::Cname("example.com".into()));
        assert_eq!(a.records[4].owner, "www.example.com");
    }

    #[test]
    fn foreign_replies_are_ignored() {
        let q = Query::new("example.com", QType::A, 7).unwrap();
        let wrong_id = reply(q.wire(), Some(8), Rcode::NOERROR, false, &[]);
        assert_eq!(q.accept(&wrong_id), Verdict::Ignore);
        let other = Query::new("example.net", QType::A, 7).unwrap();
        let wrong_q = reply(other.wire(), None, Rcode::NOERROR, false, &[]);
        assert_eq!(q.accept(&wrong_q), Verdict::Ignore);
        let other = Query::new("example.com", QType::Aaaa, 7).unwrap();
        let wrong_t = reply(other.wire(), None, Rcode::NOERROR, false, &[]);
        assert_eq!(q.accept(&wrong_t), Verdict::Ignore);
        // Our own query echoed back is not a reply (QR clear).
        assert_eq!(q.accept(q.wire()), Verdict::Ignore);
        assert_eq!(q.accept(&[]), Verdict::Ignore);
    }

    #[test]
    fn status_and_truncation() {
        let q = Query::new("example.com", QType::A, 9).unwrap();
        let tc = reply(q.wire(), None, Rcode::NOERROR, true, &[]);
        assert_eq!(q.accept(&tc), Verdict::Truncated);
        let nx = reply(q.wire(), None, Rcode::NXDOMAIN, false, &[]);
        assert!(matches!(
            q.accept(&nx),
            Verdict::Answer(Answer {
                status: Status::NoName,
                ..
            })
        ));
        let sf = reply(q.wire(), None, Rcode::SERVFAIL, false, &[]);
        assert!(matches!(
            q.accept(&sf),
            Verdict::Answer(Answer {
                status: Status::Failed(2),
                ..
            })
        ));
    }

    #[test]
    fn records_are_bounded() {
        let q = Query::new("example.com", QType::A, 1).unwrap();
        let many: Vec<(&str, RData)> = (0..200u32)
            .map(|i| ("example.com", RData::A(Ipv4Addr::from(i))))
            .collect();
        let r = reply(q.wire(), None, Rcode::NOERROR, false, &many);
        let Verdict::Answer(a) = q.accept(&r) else {
            panic!("not accepted");
        };
        assert_eq!(a.records.len(), MAX_RECORDS);
    }

    #[test]
    fn invalid_names() {
        assert!(Query::new("", QType::Mx, 1).is_err());
        assert!(Query::new(".", QType::Mx, 1).is_err());
        assert!(Query::new(&"a".repeat(64), QType::Mx, 1).is_err());
        assert!(Query::new(&"abc.".repeat(70), QType::Mx, 1).is_err());
    }

    #[test]
    fn total_on_mangled_replies() {
        let q = Query::new("example.com", QType::Mx, 0x4242).unwrap();
        let good = reply(
            q.wire(),
            None,
            Rcode::NOERROR,
            false,
            &[
                ("example.com", mx(10, "mx1.example.com")),
                ("example.com", RData::Cname("x.example.com".into())),
            ],
        );
        let mut x: u64 = 0x2545_f491_4f6c_dd1d;
        for _ in 0..5000 {
            let mut m = good.clone();
            for _ in 0..3 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                let i = (x as usize) % m.len();
                m[i] = (x >> 32) as u8;
            }
            let cut = (x >> 40) as usize % (m.len() + 1);
            let _ = q.accept(&m);
            let _ = q.accept(&m[..cut]);
        }
    }
}
