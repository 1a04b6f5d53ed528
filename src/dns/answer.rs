//! Deciding what to do with one DNS query: answer it from the configured
//! names, hand it to the upstream resolver, or refuse it. Messages are
//! parsed and built with hickory-proto.

use std::net::IpAddr;

use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA};
use hickory_proto::rr::{RData, Record, RecordType};

use super::DnsConfig;

/// The largest UDP answer sent to a client without EDNS (RFC 1035).
const CLASSIC_UDP: usize = 512;
/// The UDP payload size ossrelay advertises and honours at most (the DNS
/// flag day 2020 value, safe from fragmentation).
pub const EDNS_PAYLOAD: u16 = 1232;

/// What to do with a query.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Pass the query to the upstream resolver unchanged.
    Forward,
    /// Not even a DNS header: say nothing.
    Drop,
}

/// Whether a reply says NOERROR (the rcode, in the low 4 bits of byte 3).
pub fn is_no_error(reply: &[u8]) -> bool {
    reply.get(3).is_some_and(|b| b & 0x0f == 0)
}

/// Why a decision was made, for the log.
pub fn describe(query: &[u8]) -> String {
    match Message::from_vec(query) {
        Ok(m) => m
            .queries()
            .first()
            .map(|q| format!("{} {}", q.name(), q.query_type()))
            .unwrap_or_else(|| "(no question)".into()),
        Err(_) => "(malformed)".into(),
    }
}

fn error_reply(query: &[u8], code: ResponseCode) -> Decision {
    if query.len() < 12 {
        return Decision::Drop;
    }
    let id = u16::from_be_bytes([query[0], query[1]]);
    let msg = Message::error_msg(id, OpCode::Query, code);
    match msg.to_vec() {
        Ok(bytes) => Decision::Reply(bytes),
        Err(_) => Decision::Drop,
    }
}

/// Decides about `query`, received over TCP when `tcp` is set.
pub fn decide(cfg: &DnsConfig, query: &[u8], tcp: bool) -> Decision {
    let Ok(req) = Message::from_vec(query) else {
        return error_reply(query, ResponseCode::FormErr);
    };
    if req.message_type() != MessageType::Query {
        return Decision::Drop;
    }
    if req.op_code() != OpCode::Query {
        return error_reply(query, ResponseCode::NotImp);
    }
    let [question] = req.queries() else {
        return error_reply(query, ResponseCode::FormErr);
    };
    let name = question.name().to_ascii();
    if !cfg.names.iter().any(|p| p.matches(&name)) {
        return match cfg.upstream {
            Some(_) => Decision::Forward,
            None => reply(&req, ResponseCode::Refused, Vec::new(), tcp),
        };
    }
    let ttl = u32::try_from(cfg.ttl.as_secs()).unwrap_or(u32::MAX);
    let wanted = question.query_type();
    let answers: Vec<Record> = cfg
        .answer
        .iter()
        .filter_map(|ip| {
            let rdata = match (ip, wanted) {
                (IpAddr::V4(v4), RecordType::A | RecordType::ANY) => RData::A(A(*v4)),
                (IpAddr::V6(v6), RecordType::AAAA | RecordType::ANY) => RData::AAAA(AAAA(*v6)),
                _ => return None,
            };
            Some(Record::from_rdata(question.name().clone(), ttl, rdata))
        })
        .collect();
    // Our names never get NXDOMAIN: a type we have no data for is NODATA.
    reply(&req, ResponseCode::NoError, answers, tcp)
}

fn reply(req: &Message, code: ResponseCode, answers: Vec<Record>, tcp: bool) -> Decision {
    let mut msg = Message::new();
    msg.set_id(req.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(code == ResponseCode::NoError)
        .set_recursion_desired(req.recursion_desired())
        .set_recursion_available(false)
        .set_response_code(code);
    msg.add_queries(req.queries().to_vec());
    let limit = match req.extensions() {
        Some(edns) => {
            let mut ours = Edns::new();
            ours.set_max_payload(EDNS_PAYLOAD);
            msg.set_edns(ours);
            usize::from(edns.max_payload().clamp(512, EDNS_PAYLOAD))
        }
        None => CLASSIC_UDP,
    };
    let full = {
        let mut m = msg.clone();
        m.add_answers(answers);
        m.to_vec()
    };
    match full {
        Ok(bytes) if tcp || bytes.len() <= limit => Decision::Reply(bytes),
        // Too big for this UDP client: send the question with TC set, so
        // it retries over TCP.
        _ => {
            msg.set_truncated(true);
            msg.to_vec().map_or(Decision::Drop, Decision::Reply)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pattern::HostPattern;
    use hickory_proto::op::Query;
    use hickory_proto::rr::Name;
    use std::str::FromStr;

    fn cfg(answer: &[&str], upstream: bool) -> DnsConfig {
        DnsConfig {
            listen: "127.0.0.1:0".parse().unwrap(),
            names: vec![
                HostPattern::parse("oss.example").unwrap(),
                HostPattern::parse("*.oss.example").unwrap(),
            ],
            answer: answer.iter().map(|a| a.parse().unwrap()).collect(),
            ttl: std::time::Duration::from_secs(60),
            upstream: upstream.then(|| "127.0.0.1:53".parse().unwrap()),
            acl: crate::acl::Acl::default(),
        }
    }

    fn query(name: &str, t: RecordType, edns: bool) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(4242).set_recursion_desired(true);
        m.add_query(Query::query(Name::from_str(name).unwrap(), t));
        if edns {
            m.set_edns(Edns::new());
        }
        m.to_vec().unwrap()
    }

    fn parse(d: Decision) -> Message {
        match d {
            Decision::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn configured_names_get_the_relay_address_and_nodata() {
        let c = cfg(&["172.31.10.171", "fd00::1"], false);
        let m = parse(decide(
            &c,
            &query("new-bucket-123.oss.example.", RecordType::A, false),
            false,
        ));
        assert_eq!(m.id(), 4242);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.answers().len(), 1);
        assert_eq!(
            m.answers()[0].data(),
            &RData::A(A("172.31.10.171".parse().unwrap()))
        );
        let m = parse(decide(
            &c,
            &query("OSS.example.", RecordType::AAAA, true),
            false,
        ));
        assert_eq!(m.answers().len(), 1);
        assert!(m.extensions().is_some(), "EDNS answered with EDNS");
        let m = parse(decide(
            &c,
            &query("x.oss.example.", RecordType::MX, false),
            false,
        ));
        assert_eq!(
            (m.response_code(), m.answers().len()),
            (ResponseCode::NoError, 0)
        );
    }

    #[test]
    fn other_names_are_refused_or_forwarded() {
        let q = query("example.com.", RecordType::A, false);
        let m = parse(decide(&cfg(&["10.0.0.1"], false), &q, false));
        assert_eq!(m.response_code(), ResponseCode::Refused);
        assert_eq!(
            decide(&cfg(&["10.0.0.1"], true), &q, false),
            Decision::Forward
        );
    }

    #[test]
    fn malformed_packets_get_formerr_or_nothing() {
        let c = cfg(&["10.0.0.1"], false);
        assert_eq!(decide(&c, b"\x01\x02", false), Decision::Drop);
        let mut junk = vec![0x12, 0x34];
        junk.extend_from_slice(&[0xff; 20]);
        let m = parse(decide(&c, &junk, false));
        assert_eq!((m.id(), m.response_code()), (0x1234, ResponseCode::FormErr));
    }

    #[test]
    fn big_answers_are_truncated_over_udp_only() {
        let many: Vec<String> = (1..=60).map(|i| format!("10.0.0.{i}")).collect();
        let refs: Vec<&str> = many.iter().map(String::as_str).collect();
        let c = cfg(&refs, false);
        let q = query("oss.example.", RecordType::A, false);
        let m = parse(decide(&c, &q, false));
        assert!(m.truncated() && m.answers().is_empty());
        let m = parse(decide(&c, &q, true));
        assert!(!m.truncated());
        assert_eq!(m.answers().len(), 60);
    }
}
