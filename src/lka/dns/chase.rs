//! Following CNAMEs: a small state machine fed one answer at a time, so
//! the blocking driver and a future event-driven one share it. The chain
//! length is bounded across all the queries of one look-up, which also
//! ends loops (a -> b -> a) however the records are spread over replies.

#![forbid(unsafe_code)]

use super::conf::normalize;
use super::message::{Answer, QType, RData, Status};
use super::DnsError;

/// CNAME links followed in one look-up before giving up.
pub const MAX_CNAME: usize = 8;

/// Where a chase stands after an answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Step {
    /// Ask again, for [`Chase::name`] (the chain left this answer).
    Follow,
    /// The end of the chain: its name and the records of the asked type
    /// there (empty: the name exists but has none, NODATA).
    Done { canonical: String, data: Vec<RData> },
}

/// One look-up of `qtype` for a name, through its CNAMEs.
#[derive(Debug, Clone)]
pub struct Chase {
    original: String,
    name: String,
    qtype: QType,
    hops: usize,
}

impl Chase {
    /// Starts at `name`.
    pub fn new(name: &str, qtype: QType) -> Chase {
        Chase {
            original: normalize(name),
            name: normalize(name),
            qtype,
            hops: 0,
        }
    }

    /// The name to ask about next.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The type asked.
    pub fn qtype(&self) -> QType {
        self.qtype
    }

    /// Consumes the answer to the question for [`Chase::name`].
    pub fn feed(&mut self, answer: &Answer) -> Result<Step, DnsError> {
        match answer.status {
            Status::Ok => {}
            Status::NoName => return Err(DnsError::NoSuchDomain(self.original.clone())),
            Status::Failed(rc) => {
                return Err(DnsError::Temporary(format!("{}: rcode {rc}", self.name)))
            }
        }
        let start = self.name.clone();
        loop {
            let data: Vec<RData> = answer
                .records
                .iter()
                .filter(|r| r.owner == self.name && self.wanted(&r.data))
                .map(|r| r.data.clone())
                .collect();
            if !data.is_empty() {
                return Ok(self.done(data));
            }
            let target = answer.records.iter().find_map(|r| match &r.data {
                RData::Cname(t) if r.owner == self.name => Some(t.clone()),
                _ => None,
            });
            let Some(target) = target else { break };
            self.hops += 1;
            if self.hops > MAX_CNAME {
                return Err(DnsError::CnameChain(self.original.clone()));
            }
            self.name = target;
        }
        if self.name == start {
            // No records and no CNAME for the name asked: NODATA.
            Ok(self.done(Vec::new()))
        } else {
            // The reply ended the chain on a name it gave nothing for:
            // the server may not have chased it; ask for it directly.
            Ok(Step::Follow)
        }
    }

    fn wanted(&self, data: &RData) -> bool {
        matches!(
            (self.qtype, data),
            (QType::Mx, RData::Mx { .. }) | (QType::A, RData::A(_)) | (QType::Aaaa, RData::Aaaa(_))
        )
    }

    fn done(&self, data: Vec<RData>) -> Step {
        Step::Done {
            canonical: self.name.clone(),
            data,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lka::dns::message::Rr;

    fn ok(records: &[(&str, RData)]) -> Answer {
        Answer {
            status: Status::Ok,
            records: records
                .iter()
                .map(|(o, d)| Rr {
                    owner: o.to_string(),
                    data: d.clone(),
                })
                .collect(),
        }
    }

    fn cname(t: &str) -> RData {
        RData::Cname(t.into())
    }

    #[test]
    fn chain_in_one_answer() {
        let mut c = Chase::new("A.example.", QType::A);
        let ip = RData::A("192.0.2.1".parse().unwrap());
        let a = ok(&[
            ("a.example", cname("b.example")),
            ("b.example", cname("c.example")),
            ("c.example", ip.clone()),
            ("other.example", RData::A("192.0.2.2".parse().unwrap())),
        ]);
        assert_eq!(
            c.feed(&a).unwrap(),
            Step::Done {
                canonical: "c.example".into(),
                data: vec![ip]
            }
        );
    }

    #[test]
    fn chain_across_answers() {
        let mut c = Chase::new("a.example", QType::Mx);
        assert_eq!(
            c.feed(&ok(&[("a.example", cname("b.example"))])).unwrap(),
            Step::Follow
        );
        assert_eq!(c.name(), "b.example");
        assert_eq!(
            c.feed(&ok(&[])).unwrap(),
            Step::Done {
                canonical: "b.example".into(),
                data: vec![]
            }
        );
    }

    #[test]
    fn loops_and_long_chains_are_cut() {
        let mut c = Chase::new("a.example", QType::A);
        let looped = ok(&[
            ("a.example", cname("b.example")),
            ("b.example", cname("a.example")),
        ]);
        assert!(matches!(c.feed(&looped), Err(DnsError::CnameChain(_))));

        // One link per reply, forever: cut after MAX_CNAME.
        let mut c = Chase::new("n0.example", QType::A);
        let mut follows = 0;
        let err = loop {
            let owner = c.name().to_string();
            let n: usize = owner[1..owner.find('.').unwrap()].parse().unwrap();
            match c.feed(&ok(&[(&owner, cname(&format!("n{}.example", n + 1)))])) {
                Ok(Step::Follow) => follows += 1,
                Ok(step) => panic!("{step:?}"),
                Err(e) => break e,
            }
        };
        assert_eq!(follows, MAX_CNAME);
        assert!(matches!(err, DnsError::CnameChain(_)));
    }

    #[test]
    fn statuses() {
        let mut c = Chase::new("a.example", QType::A);
        let nx = Answer {
            status: Status::NoName,
            records: vec![],
        };
        assert!(matches!(c.feed(&nx), Err(DnsError::NoSuchDomain(d)) if d == "a.example"));
        let sf = Answer {
            status: Status::Failed(2),
            records: vec![],
        };
        assert!(matches!(c.feed(&sf), Err(DnsError::Temporary(_))));
    }
}
