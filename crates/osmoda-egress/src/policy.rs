//! The decision before any lookup: does a verified token, read together with the capabilities
//! the machine declares now, allow this host and port? A token can only narrow a declared
//! capability: a grant counts only while its capability is still declared, and only for names
//! and ports that both the token and the declaration allow (removing a capability from the
//! NixOS options disables every token minted for it).

use std::collections::BTreeMap;

use crate::host::{Host, Pattern, Target};
use crate::token::Claims;

/// A declared capability, parsed (from `egress.json`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Declared {
    /// Allowed name patterns.
    pub domains: Vec<Pattern>,
    /// Allowed ports.
    pub ports: Vec<u16>,
}

/// The declared capabilities by name.
pub type Capabilities = BTreeMap<String, Declared>;

/// Parses `egress.json`'s capabilities.
///
/// # Errors
/// The first pattern that does not parse, with its capability.
pub fn parse_capabilities(
    caps: &BTreeMap<String, osmoda_config::Capability>,
) -> Result<Capabilities, String> {
    caps.iter()
        .map(|(name, c)| {
            let domains = c
                .domains
                .iter()
                .map(|d| {
                    Pattern::parse(d)
                        .map_err(|e| format!("capabilities.{name}.domains: {d:?}: {e}"))
                })
                .collect::<Result<Vec<_>, _>>()?;
            Ok((
                name.clone(),
                Declared {
                    domains,
                    ports: c.ports.clone(),
                },
            ))
        })
        .collect()
}

/// Why the policy refused a target.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// No capability of the token (still declared) allows this name.
    Domain,
    /// A capability allows the name, but not this port.
    Port,
    /// An IP literal outside the allow ranges.
    IpLiteral,
    /// Every capability of the token has been removed from the options.
    Undeclared,
}

impl Refusal {
    /// Stable reason for logs, metrics and the ledger.
    pub fn as_str(&self) -> &'static str {
        match self {
            Refusal::Domain => "domain-not-granted",
            Refusal::Port => "port-not-granted",
            Refusal::IpLiteral => "ip-literal",
            Refusal::Undeclared => "capability-not-declared",
        }
    }
}

/// Which capability of `claims` allows `target`, judged against `declared`. An IP literal is
/// allowed only inside an allow range (`in_allow_range`), on a port some capability grants.
///
/// # Errors
/// The [`Refusal`].
pub fn authorize(
    claims: &Claims,
    declared: &Capabilities,
    target: &Target,
    in_allow_range: bool,
) -> Result<String, Refusal> {
    let live: Vec<_> = claims
        .caps
        .iter()
        .filter_map(|(name, g)| declared.get(name).map(|d| (name, g, d)))
        .collect();
    if live.is_empty() {
        return Err(Refusal::Undeclared);
    }
    let port_ok = |g: &crate::token::Grant, d: &Declared| {
        g.ports.contains(&target.port) && d.ports.contains(&target.port)
    };
    let name = match &target.host {
        Host::Ip(_) => {
            if !in_allow_range {
                return Err(Refusal::IpLiteral);
            }
            return live
                .iter()
                .find(|(_, g, d)| port_ok(g, d))
                .map(|(n, _, _)| (*n).clone())
                .ok_or(Refusal::Port);
        }
        Host::Name(n) => n,
    };
    let mut name_ok = false;
    for (cap, g, d) in live {
        let token_allows = g
            .domains
            .iter()
            .filter_map(|p| Pattern::parse(p).ok())
            .any(|p| p.matches(name));
        if token_allows && d.domains.iter().any(|p| p.matches(name)) {
            name_ok = true;
            if port_ok(g, d) {
                return Ok(cap.clone());
            }
        }
    }
    Err(if name_ok {
        Refusal::Port
    } else {
        Refusal::Domain
    })
}

/// Checks that a mint request only narrows `declared`: every requested pattern lies within a
/// declared pattern of the same capability and every port is declared.
///
/// # Errors
/// A message naming the first pattern or port that widens the declaration.
pub fn check_narrowing(
    cap: &str,
    declared: &Declared,
    domains: &[String],
    ports: &[u16],
) -> Result<(), String> {
    for d in domains {
        let p = Pattern::parse(d).map_err(|e| format!("{cap}: {d:?}: {e}"))?;
        if !declared.domains.iter().any(|w| p.within(w)) {
            return Err(format!(
                "{cap}: {d:?} is not within the declared domains ({}); a token can only narrow its capability",
                declared
                    .domains
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
        }
    }
    for p in ports {
        if !declared.ports.contains(p) {
            return Err(format!(
                "{cap}: port {p} is not declared (declared: {:?}); a token can only narrow its capability",
                declared.ports
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::parse_target;
    use crate::token::Grant;

    fn claims(caps: &[(&str, &[&str], &[u16])]) -> Claims {
        Claims {
            v: 1,
            id: "0".repeat(32),
            sub: "t".into(),
            iat: 1,
            exp: 2,
            caps: caps
                .iter()
                .map(|(n, d, p)| {
                    (
                        n.to_string(),
                        Grant {
                            domains: d.iter().map(|s| s.to_string()).collect(),
                            ports: p.to_vec(),
                        },
                    )
                })
                .collect(),
        }
    }

    fn declared(caps: &[(&str, &[&str], &[u16])]) -> Capabilities {
        caps.iter()
            .map(|(n, d, p)| {
                (
                    n.to_string(),
                    Declared {
                        domains: d.iter().map(|s| Pattern::parse(s).unwrap()).collect(),
                        ports: p.to_vec(),
                    },
                )
            })
            .collect()
    }

    #[test]
    fn token_and_declaration_both_allow() {
        let decl = declared(&[("gh", &["*.github.com"], &[443, 22])]);
        let c = claims(&[("gh", &["api.github.com"], &[443])]);
        let t = |s| parse_target(s).unwrap();
        assert_eq!(
            authorize(&c, &decl, &t("API.github.com.:443"), false),
            Ok("gh".into())
        );
        assert_eq!(
            authorize(&c, &decl, &t("api.github.com:22"), false),
            Err(Refusal::Port)
        );
        assert_eq!(
            authorize(&c, &decl, &t("raw.github.com:443"), false),
            Err(Refusal::Domain)
        );
        assert_eq!(
            authorize(&c, &decl, &t("1.2.3.4:443"), false),
            Err(Refusal::IpLiteral)
        );
        assert_eq!(
            authorize(&c, &decl, &t("1.2.3.4:443"), true),
            Ok("gh".into())
        );
        // A token wider than the declaration (forged claims are refused earlier; this is a
        // declaration narrowed after minting) is cut down to the declaration.
        let wide = claims(&[("gh", &["*.github.com", "evil.net"], &[443, 8080])]);
        assert_eq!(
            authorize(&wide, &decl, &t("evil.net:443"), false),
            Err(Refusal::Domain)
        );
        assert_eq!(
            authorize(&wide, &decl, &t("api.github.com:8080"), false),
            Err(Refusal::Port)
        );
        let none = declared(&[]);
        assert_eq!(
            authorize(&c, &none, &t("api.github.com:443"), false),
            Err(Refusal::Undeclared)
        );
    }

    #[test]
    fn minting_only_narrows() {
        let decl = &declared(&[("gh", &["*.github.com"], &[443])])["gh"];
        assert!(check_narrowing("gh", decl, &["api.github.com".into()], &[443]).is_ok());
        assert!(check_narrowing("gh", decl, &["*.github.com".into()], &[443]).is_ok());
        assert!(check_narrowing("gh", decl, &["github.com".into()], &[443]).is_err());
        assert!(check_narrowing("gh", decl, &["*.com".into()], &[443]).is_err());
        assert!(check_narrowing("gh", decl, &["api.github.com".into()], &[22]).is_err());
    }
}
