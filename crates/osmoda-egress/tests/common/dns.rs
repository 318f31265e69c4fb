//! A tiny authoritative DNS server on loopback (UDP and TCP) answering from a fixed zone,
//! built with hickory-proto. CNAMEs are answered with the chain and the final records, as a
//! recursive resolver would.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;

use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::{A, AAAA, CNAME};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One record of the zone.
#[derive(Debug, Clone)]
pub enum Rec {
    Ip(IpAddr),
    Cname(&'static str),
}

pub type Zone = HashMap<String, Vec<Rec>>;

fn key(n: &Name) -> String {
    n.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

fn answer(zone: &Zone, query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let q = msg.queries().first()?.clone();
    let mut resp = Message::new();
    resp.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(msg.op_code())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .set_authoritative(true);
    resp.add_query(q.clone());
    let mut name = q.name().clone();
    let mut found = false;
    for _ in 0..8 {
        let Some(recs) = zone.get(&key(&name)) else {
            break;
        };
        found = true;
        let mut next = None;
        for r in recs {
            match r {
                Rec::Cname(t) => {
                    let target = Name::from_str(&format!("{t}.")).ok()?;
                    resp.add_answer(Record::from_rdata(
                        name.clone(),
                        5,
                        RData::CNAME(CNAME(target.clone())),
                    ));
                    next = Some(target);
                }
                Rec::Ip(IpAddr::V4(a)) if q.query_type() == RecordType::A => {
                    resp.add_answer(Record::from_rdata(name.clone(), 5, RData::A(A(*a))));
                }
                Rec::Ip(IpAddr::V6(a)) if q.query_type() == RecordType::AAAA => {
                    resp.add_answer(Record::from_rdata(name.clone(), 5, RData::AAAA(AAAA(*a))));
                }
                Rec::Ip(_) => {}
            }
        }
        match next {
            Some(n) => name = n,
            None => break,
        }
    }
    if !found {
        resp.set_response_code(ResponseCode::NXDomain);
    }
    resp.to_vec().ok()
}

/// Serves `zone` on `127.0.0.1:<port>` (UDP and TCP, same port) until the runtime ends.
pub async fn serve(zone: Zone) -> SocketAddr {
    let udp = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = udp.local_addr().unwrap();
    let tcp = tokio::net::TcpListener::bind(addr).await.unwrap();
    let zone = std::sync::Arc::new(zone);
    let z = zone.clone();
    tokio::spawn(async move {
        let mut buf = [0u8; 1500];
        while let Ok((n, from)) = udp.recv_from(&mut buf).await {
            if let Some(out) = answer(&z, &buf[..n]) {
                let _ = udp.send_to(&out, from).await;
            }
        }
    });
    tokio::spawn(async move {
        while let Ok((mut s, _)) = tcp.accept().await {
            let z = zone.clone();
            tokio::spawn(async move {
                let mut len = [0u8; 2];
                while s.read_exact(&mut len).await.is_ok() {
                    let mut q = vec![0u8; usize::from(u16::from_be_bytes(len))];
                    if s.read_exact(&mut q).await.is_err() {
                        return;
                    }
                    let Some(out) = answer(&z, &q) else { return };
                    let Ok(l) = u16::try_from(out.len()) else {
                        return;
                    };
                    let _ = s.write_all(&l.to_be_bytes()).await;
                    let _ = s.write_all(&out).await;
                }
            });
        }
    });
    addr
}
