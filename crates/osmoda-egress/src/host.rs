//! Host names as the proxy compares them: CONNECT targets parsed strictly, names normalised
//! (case, one trailing dot, IDNA to punycode), patterns matched on label boundaries only.
//!
//! A target is either a name or an IP literal. Anything a resolver or a URL parser could read
//! as an address but that is not written in the one canonical form (`2130706433`, `0x7f.1`,
//! `0177.0.0.1`, `127.1`) is refused as [`HostError::NumericName`], never looked up: the WHATWG
//! URL parser treats a host whose last label is numeric as IPv4, and so do many resolvers.

use std::net::IpAddr;

/// Largest host name, in bytes, after normalisation (RFC 1035).
pub const MAX_NAME: usize = 253;

/// Why a target or pattern was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// Not `host:port` / `[v6]:port`, or the port is missing, 0 or not a number.
    #[error("invalid CONNECT target {0:?}: expected host:port or [ipv6]:port")]
    Authority(String),
    /// Contains a character no host name has (`@`, `/`, `%`, space, brackets, ...).
    #[error("invalid host {0:?}: only letters, digits, '-' and '.' are allowed in a name")]
    Chars(String),
    /// IDNA processing failed or a label is empty/too long.
    #[error("invalid host name {0:?}")]
    Name(String),
    /// The last label is numeric: an address in a non-canonical form.
    #[error("host {0:?} is a numeric address in a non-canonical form; refused")]
    NumericName(String),
}

/// A parsed CONNECT target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    /// The normalised host.
    pub host: Host,
    /// Destination port (never 0).
    pub port: u16,
}

/// A normalised host.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Host {
    /// A DNS name: lower case ASCII (IDNA A-labels), no trailing dot.
    Name(String),
    /// An IP literal (`1.2.3.4` or `[2001:db8::1]`), exactly as `std` parses it.
    Ip(IpAddr),
}

impl std::fmt::Display for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Host::Name(n) => f.write_str(n),
            Host::Ip(IpAddr::V6(a)) => write!(f, "[{a}]"),
            Host::Ip(a) => write!(f, "{a}"),
        }
    }
}

/// Parses the request target of a CONNECT (`authority-form`, RFC 9110 §9.3.6).
///
/// # Errors
/// [`HostError`] for anything but a valid host and a port 1-65535.
pub fn parse_target(authority: &str) -> Result<Target, HostError> {
    let bad = || HostError::Authority(clip(authority));
    let (host, port) = if let Some(rest) = authority.strip_prefix('[') {
        let (v6, port) = rest.split_once("]:").ok_or_else(bad)?;
        let ip: std::net::Ipv6Addr = v6.parse().map_err(|_| bad())?;
        (Host::Ip(IpAddr::V6(ip)), port)
    } else {
        let (host, port) = authority.rsplit_once(':').ok_or_else(bad)?;
        (normalise(host)?, port)
    };
    if port.is_empty() || port.len() > 5 || !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok(Target { host, port })
}

/// Normalises a host written without brackets: an IPv4 literal in canonical dotted form, or a
/// name (lower case, one trailing dot removed, IDNA to A-labels, every label 1-63 bytes).
///
/// # Errors
/// [`HostError::Chars`], [`HostError::Name`] or [`HostError::NumericName`].
pub fn normalise(host: &str) -> Result<Host, HostError> {
    if let Ok(v4) = host.parse::<std::net::Ipv4Addr>() {
        return Ok(Host::Ip(IpAddr::V4(v4)));
    }
    if host.is_empty()
        || host.len() > 4 * MAX_NAME
        || host
            .chars()
            .any(|c| c.is_ascii() && !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
    {
        return Err(HostError::Chars(clip(host)));
    }
    let trimmed = host.strip_suffix('.').unwrap_or(host);
    let ascii = idna::domain_to_ascii_strict(trimmed).map_err(|_| HostError::Name(clip(host)))?;
    // IDNA mapping can produce characters outside the LDH set (full stops from ideographic
    // dots are mapped to '.', which is fine; anything else is not).
    if ascii.is_empty()
        || ascii.len() > MAX_NAME
        || !ascii
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
        || ascii
            .split('.')
            .any(|l| l.is_empty() || l.len() > 63 || l.starts_with('-') || l.ends_with('-'))
    {
        return Err(HostError::Name(clip(host)));
    }
    let last = ascii.rsplit('.').next().unwrap_or_default();
    let hexish = last
        .strip_prefix("0x")
        .is_some_and(|h| h.bytes().all(|b| b.is_ascii_hexdigit()));
    if last.bytes().all(|b| b.is_ascii_digit()) || hexish {
        return Err(HostError::NumericName(clip(host)));
    }
    Ok(Host::Name(ascii))
}

/// A domain pattern of a capability: an exact name or `*.` + name (any name ending in
/// `.` + name; the apex itself is not matched).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Pattern {
    wildcard: bool,
    name: String,
}

impl Pattern {
    /// Parses and normalises a pattern the way targets are normalised.
    ///
    /// # Errors
    /// When the name part is not a valid host name (IP literals are not patterns: use an
    /// allow range).
    pub fn parse(text: &str) -> Result<Pattern, HostError> {
        let (wildcard, rest) = match text.strip_prefix("*.") {
            Some(r) => (true, r),
            None => (false, text),
        };
        match normalise(rest)? {
            Host::Name(name) => Ok(Pattern { wildcard, name }),
            Host::Ip(_) => Err(HostError::Name(clip(text))),
        }
    }

    /// Does this pattern allow the normalised name `host`? Wildcards match whole labels only:
    /// `*.example.com` allows `a.example.com` and `a.b.example.com`, never `example.com` or
    /// `badexample.com`.
    pub fn matches(&self, host: &str) -> bool {
        if self.wildcard {
            host.len() > self.name.len() + 1
                && host.ends_with(&self.name)
                && host.as_bytes()[host.len() - self.name.len() - 1] == b'.'
        } else {
            host == self.name
        }
    }

    /// Is every name this pattern allows also allowed by `wider`? (Minting can only narrow.)
    pub fn within(&self, wider: &Pattern) -> bool {
        match (self.wildcard, wider.wildcard) {
            (false, _) => wider.matches(&self.name),
            (true, true) => self.name == wider.name || wider.matches(&self.name),
            (true, false) => false,
        }
    }
}

impl std::fmt::Display for Pattern {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.wildcard {
            f.write_str("*.")?;
        }
        f.write_str(&self.name)
    }
}

/// At most 100 characters of hostile input, for messages and logs.
pub(crate) fn clip(s: &str) -> String {
    s.chars()
        .take(100)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(s: &str) -> Result<String, HostError> {
        match parse_target(s)?.host {
            Host::Name(n) => Ok(n),
            Host::Ip(ip) => Ok(format!("ip:{ip}")),
        }
    }

    #[test]
    fn targets_normalise() {
        for (input, want) in [
            ("Example.COM:443", "example.com"),
            ("example.com.:443", "example.com"),
            ("bücher.example:443", "xn--bcher-kva.example"),
            ("xn--bcher-kva.example:443", "xn--bcher-kva.example"),
            ("127.0.0.1:443", "ip:127.0.0.1"),
            ("[::1]:443", "ip:::1"),
            ("[::ffff:127.0.0.1]:443", "ip:::ffff:127.0.0.1"),
        ] {
            assert_eq!(name(input).as_deref(), Ok(want), "{input}");
        }
    }

    #[test]
    fn bad_targets_refused() {
        for input in [
            "example.com",
            "example.com:",
            "example.com:0",
            "example.com:65536",
            "example.com:+443",
            "example.com:443 ",
            "[[example.com]]:443",
            "[example.com]:443",
            "example.com@127.0.0.1:443",
            "user@example.com:443",
            "exa mple.com:443",
            "example..com:443",
            ".example.com:443",
            "example.com..:443",
            "-a.example.com:443",
            "example.com/x:443",
            "exam%70le.com:443",
            "*.example.com:443",
            ":443",
            "[::1]443",
            "[::1%lo]:443",
            "2130706433:443",
            "0x7f.1:443",
            "0x7f000001:443",
            "0177.0.0.1:443",
            "127.1:443",
            "127.0.1:443",
            "1.2.3.4.5:443",
            "a.0x1f:443",
        ] {
            assert!(parse_target(input).is_err(), "{input} was accepted");
        }
    }

    #[test]
    fn wildcards_on_label_boundaries() {
        let p = Pattern::parse("*.Example.com").unwrap();
        assert!(p.matches("a.example.com"));
        assert!(p.matches("a.b.example.com"));
        assert!(!p.matches("example.com"));
        assert!(!p.matches("badexample.com"));
        assert!(!p.matches("example.com.evil.net"));
        let exact = Pattern::parse("api.github.com.").unwrap();
        assert!(exact.matches("api.github.com"));
        assert!(!exact.matches("x.api.github.com"));
        assert!(Pattern::parse("*").is_err());
        assert!(Pattern::parse("a.*.b").is_err());
        assert!(Pattern::parse("10.0.0.1").is_err());
    }

    #[test]
    fn narrowing() {
        let p = |s| Pattern::parse(s).unwrap();
        assert!(p("api.github.com").within(&p("*.github.com")));
        assert!(p("*.api.github.com").within(&p("*.github.com")));
        assert!(p("*.github.com").within(&p("*.github.com")));
        assert!(!p("*.github.com").within(&p("api.github.com")));
        assert!(!p("github.com").within(&p("*.github.com")));
        assert!(!p("*.com").within(&p("*.github.com")));
    }
}
