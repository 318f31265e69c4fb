//! Which addresses the proxy may dial: only globally routable unicast, judged after
//! [`IpAddr::to_canonical`] against explicit ranges (IANA special-purpose registries for IPv4
//! and IPv6), so an IPv4 address cannot hide inside an IPv6 form.

use std::net::IpAddr;

use ipnet::IpNet;

/// Why an address may not be dialled (its class); `None` from [`classify`] means allowed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// `0.0.0.0/8`, `::`.
    Unspecified,
    /// `127.0.0.0/8`, `::1`.
    Loopback,
    /// RFC 1918 and `fc00::/7` (unique local).
    Private,
    /// `169.254.0.0/16` (incl. the cloud metadata address), `fe80::/10`.
    LinkLocal,
    /// `100.64.0.0/10` (carrier-grade NAT; also cloud metadata on some providers).
    SharedCgnat,
    /// `224.0.0.0/4`, `ff00::/8`.
    Multicast,
    /// `255.255.255.255`.
    Broadcast,
    /// Documentation ranges (`192.0.2.0/24`, `198.51.100.0/24`, `203.0.113.0/24`,
    /// `2001:db8::/32`, `3fff::/20`).
    Documentation,
    /// Reserved or special-purpose (`240.0.0.0/4`, `192.0.0.0/24`, `198.18.0.0/15`, ORCHID,
    /// discard, site-local, anything outside `2000::/3`).
    Reserved,
    /// Translation and tunnel prefixes that embed an IPv4 address: NAT64 `64:ff9b::/96` and
    /// `64:ff9b:1::/48`, 6to4 `2002::/16`, Teredo `2001::/32`.
    Embedded,
    /// IPv4-mapped `::ffff:0:0/96` or IPv4-compatible `::/96` as written on the wire.
    V4InV6,
}

impl Class {
    /// A short stable name for logs, metrics and the ledger.
    pub fn as_str(self) -> &'static str {
        match self {
            Class::Unspecified => "unspecified",
            Class::Loopback => "loopback",
            Class::Private => "private",
            Class::LinkLocal => "link-local",
            Class::SharedCgnat => "cgnat",
            Class::Multicast => "multicast",
            Class::Broadcast => "broadcast",
            Class::Documentation => "documentation",
            Class::Reserved => "reserved",
            Class::Embedded => "ipv4-embedding",
            Class::V4InV6 => "ipv4-in-ipv6",
        }
    }
}

const V4: &[(&str, Class)] = &[
    ("0.0.0.0/8", Class::Unspecified),
    ("10.0.0.0/8", Class::Private),
    ("100.64.0.0/10", Class::SharedCgnat),
    ("127.0.0.0/8", Class::Loopback),
    ("169.254.0.0/16", Class::LinkLocal),
    ("172.16.0.0/12", Class::Private),
    ("192.0.0.0/24", Class::Reserved),
    ("192.0.2.0/24", Class::Documentation),
    ("192.88.99.0/24", Class::Reserved),
    ("192.168.0.0/16", Class::Private),
    ("198.18.0.0/15", Class::Reserved),
    ("198.51.100.0/24", Class::Documentation),
    ("203.0.113.0/24", Class::Documentation),
    ("224.0.0.0/4", Class::Multicast),
    ("255.255.255.255/32", Class::Broadcast),
    ("240.0.0.0/4", Class::Reserved),
];

const V6: &[(&str, Class)] = &[
    ("::/128", Class::Unspecified),
    ("::1/128", Class::Loopback),
    ("::ffff:0:0/96", Class::V4InV6),
    ("::/96", Class::V4InV6),
    ("64:ff9b::/96", Class::Embedded),
    ("64:ff9b:1::/48", Class::Embedded),
    ("100::/64", Class::Reserved),
    ("2001::/32", Class::Embedded),
    ("2001:db8::/32", Class::Documentation),
    ("2002::/16", Class::Embedded),
    ("2001::/23", Class::Reserved),
    ("3fff::/20", Class::Documentation),
    ("5f00::/16", Class::Reserved),
    ("fc00::/7", Class::Private),
    ("fe80::/10", Class::LinkLocal),
    ("fec0::/10", Class::Reserved),
    ("ff00::/8", Class::Multicast),
];

type Table = Vec<(IpNet, Class)>;

fn table(t: &'static [(&'static str, Class)]) -> Table {
    t.iter()
        .filter_map(|(n, c)| n.parse().ok().map(|n| (n, *c)))
        .collect()
}

fn tables() -> &'static (Table, Table) {
    static T: std::sync::OnceLock<(Table, Table)> = std::sync::OnceLock::new();
    T.get_or_init(|| (table(V4), table(V6)))
}

/// The class that forbids dialling `addr`, or `None` when it is globally routable unicast.
///
/// IPv6 forms are judged twice: as written (`::ffff:127.0.0.1` is [`Class::V4InV6`]) and,
/// after [`IpAddr::to_canonical`], as the IPv4 address they carry; the first class found wins.
pub fn classify(addr: IpAddr) -> Option<Class> {
    let (v4, v6) = tables();
    let canonical = addr.to_canonical();
    if canonical.is_ipv4() {
        if let Some(c) = v4.iter().find(|(n, _)| n.contains(&canonical)).map(|x| x.1) {
            return Some(c);
        }
    }
    if let IpAddr::V6(a) = addr {
        // The most specific listed range wins (Teredo inside 2001::/23, say).
        let hit = v6
            .iter()
            .filter(|(n, _)| n.contains(&addr))
            .max_by_key(|(n, _)| n.prefix_len())
            .map(|x| x.1);
        if hit.is_some() {
            return hit;
        }
        // Global unicast is 2000::/3; everything else is unassigned or special.
        if a.segments()[0] & 0xe000 != 0x2000 {
            return Some(Class::Reserved);
        }
    }
    None
}

/// An operator's exception list (`allowRanges`): addresses in these ranges may be dialled
/// whatever their class, and IP-literal targets in them are accepted.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct AllowRanges(Vec<IpNet>);

impl AllowRanges {
    /// Parses CIDR ranges (`10.1.0.0/16`, `fd00::/8`, `127.0.0.2/32`).
    ///
    /// # Errors
    /// The first entry that is not a CIDR range, with its index.
    pub fn parse<S: AsRef<str>>(ranges: &[S]) -> Result<AllowRanges, String> {
        ranges
            .iter()
            .enumerate()
            .map(|(i, r)| {
                r.as_ref().parse::<IpNet>().map_err(|_| {
                    format!(
                        "allow_ranges[{i}]: {:?} is not a CIDR range like 10.1.0.0/16",
                        r.as_ref()
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
            .map(AllowRanges)
    }

    /// Is `addr` (or its canonical IPv4 form) inside one of the ranges?
    pub fn contains(&self, addr: IpAddr) -> bool {
        let c = addr.to_canonical();
        self.0.iter().any(|n| n.contains(&addr) || n.contains(&c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(addr: &str, want: Option<Class>) {
        let ip: IpAddr = addr.parse().unwrap();
        assert_eq!(classify(ip), want, "{addr}");
    }

    #[test]
    fn denied_classes() {
        use Class::*;
        for (a, c) in [
            ("0.0.0.0", Unspecified),
            ("0.1.2.3", Unspecified),
            ("127.0.0.1", Loopback),
            ("127.255.0.9", Loopback),
            ("10.0.0.1", Private),
            ("172.16.0.1", Private),
            ("172.31.255.255", Private),
            ("192.168.1.1", Private),
            ("169.254.169.254", LinkLocal),
            ("100.64.0.1", SharedCgnat),
            ("100.100.100.200", SharedCgnat),
            ("224.0.0.1", Multicast),
            ("239.255.255.250", Multicast),
            ("255.255.255.255", Broadcast),
            ("240.0.0.1", Reserved),
            ("192.0.0.170", Reserved),
            ("198.18.0.1", Reserved),
            ("192.0.2.1", Documentation),
            ("198.51.100.7", Documentation),
            ("203.0.113.9", Documentation),
            ("::", Unspecified),
            ("::1", Loopback),
            ("::ffff:127.0.0.1", Loopback),
            ("::ffff:7f00:1", Loopback),
            ("::ffff:8.8.8.8", V4InV6),
            ("::127.0.0.1", V4InV6),
            ("::8.8.8.8", V4InV6),
            ("64:ff9b::a00:1", Embedded),
            ("64:ff9b::808:808", Embedded),
            ("64:ff9b:1::1", Embedded),
            ("2002:a00:1::1", Embedded),
            ("2001:0:4136:e378:8000:63bf:3fff:fdd2", Embedded),
            ("2001:db8::1", Documentation),
            ("2001:2::1", Reserved),
            ("fc00::1", Private),
            ("fd12:3456::1", Private),
            ("fe80::1", LinkLocal),
            ("fec0::1", Reserved),
            ("ff02::1", Multicast),
            ("100::1", Reserved),
            ("4000::1", Reserved),
            ("::2", V4InV6),
        ] {
            check(a, Some(c));
        }
    }

    #[test]
    fn public_allowed() {
        for a in [
            "8.8.8.8",
            "1.1.1.1",
            "172.32.0.1",
            "100.128.0.1",
            "192.169.0.1",
            "2606:4700::1111",
            "2a00:1450:4001::1",
        ] {
            check(a, None);
        }
    }

    #[test]
    fn allow_ranges() {
        let r = AllowRanges::parse(&["127.0.0.2/32", "fd00::/8"]).unwrap();
        assert!(r.contains("127.0.0.2".parse().unwrap()));
        assert!(r.contains("::ffff:127.0.0.2".parse().unwrap()));
        assert!(!r.contains("127.0.0.1".parse().unwrap()));
        assert!(r.contains("fd00::5".parse().unwrap()));
        assert!(AllowRanges::parse(&["10.0.0.1"]).is_err());
        assert!(AllowRanges::parse(&["nope/8"]).is_err());
    }
}
