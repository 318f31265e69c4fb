//! `/etc/osmoda/keyd.json`: the wallet policy (default-deny) and the key-encryption secret.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The whole `keyd.json` file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeydConfig {
    /// File holding the key-encryption secret (a systemd credential path under NixOS).
    /// `None`: keyd generates a random secret in its state dir (mode 0600) on first start.
    pub secret_file: Option<PathBuf>,
    /// Most wallets keyd holds (`services.osmoda.keyd.maxWallets`); a create beyond it is
    /// refused (409), nothing is deleted. Absent: [`DEFAULT_MAX_WALLETS`].
    #[serde(default = "default_max_wallets")]
    pub max_wallets: u32,
    /// Signing policy.
    pub policy: Policy,
}

/// The wallet cap when `keyd.json` names none (the module's default too).
pub const DEFAULT_MAX_WALLETS: u32 = 1_000;

/// Highest `max_wallets` accepted: every wallet is a row, a sealed key and a receipt.
pub const MAX_MAX_WALLETS: u32 = 1_000_000;

fn default_max_wallets() -> u32 {
    DEFAULT_MAX_WALLETS
}

/// Signing policy. Anything not allowed here is denied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Policy {
    /// Allowed chains; a chain absent from this map cannot sign or send.
    #[serde(deserialize_with = "chain_map")]
    pub chains: BTreeMap<Chain, ChainPolicy>,
    /// Extra per-wallet limits, keyed by wallet label.
    pub wallets: BTreeMap<String, WalletPolicy>,
}

/// Reads `policy.chains` with its keys as strings first, so an error inside one chain's policy
/// names that chain (`policy.chains.ethereum: missing field \`chain_ids\``):
/// serde_path_to_error records a map key only when it is read as a string, not as an enum
/// variant. An unknown key is then refused with serde's own "unknown variant" text.
fn chain_map<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<Chain, ChainPolicy>, D::Error> {
    BTreeMap::<String, ChainPolicy>::deserialize(d)?
        .into_iter()
        .map(|(key, policy)| {
            let chain =
                Chain::deserialize(serde::de::value::StrDeserializer::<D::Error>::new(&key))?;
            Ok((chain, policy))
        })
        .collect()
}

/// Supported chains.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Chain {
    /// Ethereum and EVM chains (secp256k1, EIP-155).
    Ethereum,
    /// Solana (ed25519).
    Solana,
}

/// Limits for one chain. Amounts are in the chain's base unit (wei, lamports).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChainPolicy {
    /// Allowed EIP-155 chain ids (Ethereum); must be empty for Solana.
    pub chain_ids: Vec<u64>,
    /// Largest single transaction.
    pub per_tx_max: Amount,
    /// Total per UTC day over all wallets on this chain.
    pub daily_limit: Amount,
    /// Transactions above this need a human approval ticket; `None` = never.
    pub approval_threshold: Option<Amount>,
    /// Allowed recipients; `None` = any recipient.
    pub recipient_allowlist: Option<Vec<String>>,
    /// ERC-20 tokens that may be transferred or approved, keyed by contract address (0x + 40 hex,
    /// any case), with limits in the token's base units. A token absent here is denied. Ethereum
    /// only. Absent in the file = no tokens.
    #[serde(default)]
    pub tokens: BTreeMap<String, TokenPolicy>,
    /// EIP-712 domains whose typed data may be signed although keyd cannot judge what it
    /// authorises (a login, an order on one exchange). Typed data outside these domains is
    /// denied. Permits (EIP-2612, DAI, Permit2) are never allowed by a domain entry: they are
    /// judged like the `approve` they authorise, by `tokens`. Ethereum only. Absent = none.
    #[serde(default)]
    pub typed_data: Vec<TypedDataDomain>,
}

/// One EIP-712 domain keyd may sign typed data for: the pair (`chainId`,
/// `verifyingContract`) of the data's `domain`, optionally narrowed to some primary types.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TypedDataDomain {
    /// The domain's EIP-155 `chainId` (must be one of the chain's `chain_ids`).
    pub chain_id: u64,
    /// The domain's `verifyingContract` (0x + 40 hex, any case).
    pub verifying_contract: String,
    /// Allowed `primaryType` names (exact); `None` = any type of this domain.
    #[serde(default)]
    pub primary_types: Option<Vec<String>>,
}

/// Limits for one ERC-20 token, in the token's base units (no decimals applied). `transfer`
/// and `approve` amounts both count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenPolicy {
    /// Largest single transfer or approval.
    pub per_tx_max: Amount,
    /// Total per UTC day over all wallets for this token on this chain.
    pub daily_limit: Amount,
    /// Above this a human approval ticket is needed; `None` = never.
    pub approval_threshold: Option<Amount>,
}

/// Limits for one wallet (by label), on top of its chain's limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WalletPolicy {
    /// Total per UTC day for this wallet.
    pub daily_limit: Amount,
    /// Allowed recipients for this wallet; `None` = the chain's list applies.
    pub recipient_allowlist: Option<Vec<String>>,
}

/// An amount in base units, written in JSON as a decimal string (wei exceed 2^53 and Nix ints).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Amount(pub u128);

impl fmt::Display for Amount {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

impl std::str::FromStr for Amount {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() || !s.bytes().all(|b| b.is_ascii_digit()) {
            return Err(format!(
                "amount {s:?} must be a decimal string of base units, e.g. \"1000\""
            ));
        }
        s.parse::<u128>()
            .map(Amount)
            .map_err(|_| format!("amount {s:?} does not fit in 128 bits"))
    }
}

impl Serialize for Amount {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_string())
    }
}

impl<'de> Deserialize<'de> for Amount {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

impl KeydConfig {
    /// Semantic checks: the wallet cap in range, chain ids only for Ethereum, limits consistent.
    ///
    /// # Errors
    /// Returns a message with the JSON path of the first bad value.
    pub fn validate(&self) -> Result<(), String> {
        if !(1..=MAX_MAX_WALLETS).contains(&self.max_wallets) {
            return Err(format!(
                "max_wallets {} must be 1 to {MAX_MAX_WALLETS}",
                self.max_wallets
            ));
        }
        for (chain, p) in &self.policy.chains {
            let at = format!("policy.chains.{}", chain.as_str());
            match chain {
                Chain::Ethereum if p.chain_ids.is_empty() => {
                    return Err(format!(
                        "{at}.chain_ids must list at least one EIP-155 chain id"
                    ))
                }
                Chain::Solana if !p.chain_ids.is_empty() => {
                    return Err(format!("{at}.chain_ids must be empty for solana"))
                }
                _ => {}
            }
            if p.per_tx_max > p.daily_limit {
                return Err(format!(
                    "{at}.per_tx_max ({}) exceeds daily_limit ({})",
                    p.per_tx_max, p.daily_limit
                ));
            }
            if *chain == Chain::Solana && !p.tokens.is_empty() {
                return Err(format!(
                    "{at}.tokens must be empty: ERC-20 token limits are for ethereum"
                ));
            }
            if *chain == Chain::Solana && !p.typed_data.is_empty() {
                return Err(format!(
                    "{at}.typed_data must be empty: EIP-712 domains are for ethereum"
                ));
            }
            for (i, d) in p.typed_data.iter().enumerate() {
                let at = format!("{at}.typed_data[{i}]");
                if !is_eth_address(&d.verifying_contract) {
                    return Err(format!(
                        "{at}.verifying_contract {:?} is not a contract address (0x and 40 hex digits)",
                        d.verifying_contract
                    ));
                }
                if !p.chain_ids.contains(&d.chain_id) {
                    return Err(format!(
                        "{at}.chain_id {} is not in chain_ids {:?}: it could never be used",
                        d.chain_id, p.chain_ids
                    ));
                }
                if d.primary_types.as_ref().is_some_and(Vec::is_empty) {
                    return Err(format!(
                        "{at}.primary_types is empty: list the allowed types, or null for any"
                    ));
                }
            }
            for (i, a) in p.recipient_allowlist.iter().flatten().enumerate() {
                if !is_address(*chain, a) {
                    return Err(format!(
                        "{at}.recipient_allowlist[{i}] {a:?} is not {}: an entry that is not an address never matches",
                        address_shape(*chain)
                    ));
                }
            }
            for (addr, t) in &p.tokens {
                if !is_eth_address(addr) {
                    return Err(format!(
                        "{at}.tokens.{addr:?} is not a contract address (0x and 40 hex digits)"
                    ));
                }
                if p.tokens
                    .keys()
                    .filter(|a| a.eq_ignore_ascii_case(addr))
                    .count()
                    > 1
                {
                    return Err(format!(
                        "{at}.tokens lists {addr} twice (addresses compare case-insensitively)"
                    ));
                }
                if t.per_tx_max > t.daily_limit {
                    return Err(format!(
                        "{at}.tokens.{addr}.per_tx_max ({}) exceeds daily_limit ({})",
                        t.per_tx_max, t.daily_limit
                    ));
                }
            }
        }
        // A wallet's label does not say its chain: an entry must be an address of either.
        for (label, w) in &self.policy.wallets {
            for (i, a) in w.recipient_allowlist.iter().flatten().enumerate() {
                if !is_address(Chain::Ethereum, a) && !is_address(Chain::Solana, a) {
                    return Err(format!(
                        "policy.wallets.{label}.recipient_allowlist[{i}] {a:?} is neither {} nor {}: an entry that is not an address never matches",
                        address_shape(Chain::Ethereum),
                        address_shape(Chain::Solana)
                    ));
                }
            }
        }
        Ok(())
    }
}

/// Whether `s` is an address on `chain` (what a recipient allowlist entry must be).
fn is_address(chain: Chain, s: &str) -> bool {
    match chain {
        Chain::Ethereum => is_eth_address(s),
        Chain::Solana => {
            let mut key = [0u8; 32];
            matches!(bs58::decode(s).onto(&mut key), Ok(32))
        }
    }
}

fn address_shape(chain: Chain) -> &'static str {
    match chain {
        Chain::Ethereum => "an Ethereum address (0x and 40 hex digits)",
        Chain::Solana => "a Solana address (base58 of 32 bytes)",
    }
}

/// `0x` followed by exactly 40 hex digits (any case).
fn is_eth_address(s: &str) -> bool {
    s.strip_prefix("0x")
        .is_some_and(|h| h.len() == 40 && h.bytes().all(|b| b.is_ascii_hexdigit()))
}

impl ChainPolicy {
    /// The limits of the ERC-20 token at `contract` (compared case-insensitively).
    pub fn token(&self, contract: &str) -> Option<&TokenPolicy> {
        self.tokens
            .iter()
            .find(|(a, _)| a.eq_ignore_ascii_case(contract))
            .map(|(_, t)| t)
    }
}

impl Chain {
    /// The JSON name of the chain.
    pub fn as_str(self) -> &'static str {
        match self {
            Chain::Ethereum => "ethereum",
            Chain::Solana => "solana",
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn amount_roundtrip_and_errors() {
        let a: Amount = serde_json::from_str(r#""340282366920938463463374607431768211455""#)
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.0, u128::MAX);
        assert_eq!(
            serde_json::to_string(&Amount(5)).unwrap_or_default(),
            r#""5""#
        );
        for bad in [
            r#""-1""#,
            r#""1.5""#,
            r#""""#,
            "12",
            r#""340282366920938463463374607431768211456""#,
        ] {
            assert!(serde_json::from_str::<Amount>(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn ethereum_needs_chain_ids_and_sane_limits() {
        let json = r#"{"secret_file":null,"policy":{"chains":{"ethereum":{"chain_ids":[],
            "per_tx_max":"1","daily_limit":"2","approval_threshold":null,"recipient_allowlist":null}},
            "wallets":{}}}"#;
        let c: KeydConfig = serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.validate().unwrap_err().contains("chain_ids"));
        let json = json
            .replace("[]", "[1]")
            .replace(r#""per_tx_max":"1""#, r#""per_tx_max":"3""#);
        let c: KeydConfig = serde_json::from_str(&json).unwrap_or_else(|e| panic!("{e}"));
        assert!(c.validate().unwrap_err().contains("exceeds daily_limit"));
    }

    #[test]
    fn recipient_allowlist_entries_are_addresses() {
        let with = |chain: &str, ids: &str, list: &str, wallet: &str| -> Result<(), String> {
            let json = format!(
                r#"{{"secret_file":null,"policy":{{"chains":{{"{chain}":{{"chain_ids":{ids},
                "per_tx_max":"1","daily_limit":"2","approval_threshold":null,
                "recipient_allowlist":{list}}}}},"wallets":{{"ops":{{"daily_limit":"1","recipient_allowlist":{wallet}}}}}}}}}"#
            );
            serde_json::from_str::<KeydConfig>(&json)
                .map_err(|e| e.to_string())?
                .validate()
        };
        let eth = "0x3535353535353535353535353535353535353535";
        let sol = "FVen3X669xLzsi6N2V91DoiyzHzg1uAgqiT8jZ9nS96Z";
        let list = |a: &str| format!("[\"{a}\"]");
        assert_eq!(with("ethereum", "[1]", &list(eth), &list(sol)), Ok(()));
        assert_eq!(with("solana", "[]", &list(sol), &list(eth)), Ok(()));
        assert_eq!(with("solana", "[]", "null", "null"), Ok(()));
        for (chain, ids, bad) in [
            ("ethereum", "[1]", "0xdead"),
            ("ethereum", "[1]", "hello"),
            ("ethereum", "[1]", sol),
            ("solana", "[]", eth),
            ("solana", "[]", "not base58!"),
            (
                "solana",
                "[]",
                "11111111111111111111111111111111111111111111111",
            ),
        ] {
            let e = with(chain, ids, &list(bad), "null").unwrap_err();
            assert!(
                e.contains(&format!("policy.chains.{chain}.recipient_allowlist[0]"))
                    && e.contains("never matches"),
                "{bad}: {e}"
            );
        }
        let e = with(
            "ethereum",
            "[1]",
            "null",
            &format!("[\"{eth}\", \"0xdead\"]"),
        )
        .unwrap_err();
        assert!(
            e.contains("policy.wallets.ops.recipient_allowlist[1]"),
            "{e}"
        );
    }

    #[test]
    fn token_entries_are_checked() {
        let with = |chain: &str, ids: &str, tokens: &str| -> Result<(), String> {
            let json = format!(
                r#"{{"secret_file":null,"policy":{{"chains":{{"{chain}":{{"chain_ids":{ids},
                "per_tx_max":"1","daily_limit":"2","approval_threshold":null,
                "recipient_allowlist":null,"tokens":{tokens}}}}},"wallets":{{}}}}}}"#
            );
            serde_json::from_str::<KeydConfig>(&json)
                .map_err(|e| e.to_string())?
                .validate()
        };
        let tok = |addr: &str, per_tx: &str| {
            format!(
                r#"{{"{addr}":{{"per_tx_max":"{per_tx}","daily_limit":"10","approval_threshold":null}}}}"#
            )
        };
        let usdc = "0xA0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48";
        assert_eq!(with("ethereum", "[1]", &tok(usdc, "10")), Ok(()));
        let err = |r: Result<(), String>| r.unwrap_err();
        assert!(err(with("ethereum", "[1]", &tok(usdc, "11"))).contains("exceeds daily_limit"));
        assert!(err(with("solana", "[]", &tok(usdc, "1"))).contains("ethereum"));
        for bad in [
            "0x01",
            "A0b86991c6218b36c1d19D4a2e9Eb0cE3606eB48",
            "0xZ0b86991c6218b36c1d19D4a2e9Eb0cE3606eB4",
        ] {
            assert!(
                err(with("ethereum", "[1]", &tok(bad, "1"))).contains("not a contract address"),
                "{bad}"
            );
        }
        let twice = format!(
            r#"{{"{usdc}":{{"per_tx_max":"1","daily_limit":"1","approval_threshold":null}},"{}":{{"per_tx_max":"1","daily_limit":"1","approval_threshold":null}}}}"#,
            usdc.to_ascii_lowercase()
        );
        assert!(err(with("ethereum", "[1]", &twice)).contains("twice"));
        // A token policy with an unknown field is refused, like every other key.
        let typo = r#"{"0xa0b86991c6218b36c1d19d4a2e9eb0ce3606eb48":{"per_tx_max":"1","daily_limit":"1","approval_threshold":null,"decimals":6}}"#;
        assert!(err(with("ethereum", "[1]", typo)).contains("decimals"));
    }

    #[test]
    fn typed_data_domains_are_checked() {
        let with = |chain: &str, ids: &str, domains: &str| -> Result<(), String> {
            let json = format!(
                r#"{{"secret_file":null,"policy":{{"chains":{{"{chain}":{{"chain_ids":{ids},
                "per_tx_max":"1","daily_limit":"2","approval_threshold":null,
                "recipient_allowlist":null,"typed_data":{domains}}}}},"wallets":{{}}}}}}"#
            );
            serde_json::from_str::<KeydConfig>(&json)
                .map_err(|e| e.to_string())?
                .validate()
        };
        let seaport = "0x0000000000000068F116a894984e2DB1123eB395";
        let d = |id: u64, addr: &str, types: &str| {
            format!(
                r#"[{{"chain_id":{id},"verifying_contract":"{addr}","primary_types":{types}}}]"#
            )
        };
        assert_eq!(with("ethereum", "[1]", &d(1, seaport, "null")), Ok(()));
        assert_eq!(
            with("ethereum", "[1]", &d(1, seaport, r#"["OrderComponents"]"#)),
            Ok(())
        );
        let err = |r: Result<(), String>| r.unwrap_err();
        assert!(err(with("ethereum", "[1]", &d(5, seaport, "null"))).contains("chain_ids"));
        assert!(err(with("ethereum", "[1]", &d(1, "0x01", "null"))).contains("not a contract"));
        assert!(err(with("ethereum", "[1]", &d(1, seaport, "[]"))).contains("primary_types"));
        assert!(err(with("solana", "[]", &d(1, seaport, "null"))).contains("ethereum"));
        let typo = r#"[{"chain_id":1,"verifying_contract":"0x0000000000000068F116a894984e2DB1123eB395","primaryTypes":null}]"#;
        assert!(err(with("ethereum", "[1]", typo)).contains("primaryTypes"));
    }

    #[test]
    fn unknown_chain_rejected() {
        let e = serde_json::from_str::<Chain>(r#""bitcoin""#)
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown variant `bitcoin`"), "{e}");
    }

    /// Every load error names where it is, the chain included: the map's keys are enum
    /// variants, which serde_path_to_error alone names `?`.
    #[test]
    fn errors_inside_a_chain_name_the_chain() {
        let path = std::path::Path::new("/etc/osmoda/keyd.json");
        let at = |json: &str| match crate::parse::<KeydConfig>(path, json) {
            Err(crate::ConfigError::Parse { field, message, .. }) => format!("{field}: {message}"),
            other => panic!("expected a parse error, got {other:?}"),
        };
        let missing = r#"{"secret_file":null,"policy":{"wallets":{},"chains":{"solana":
            {"per_tx_max":"1","daily_limit":"1","approval_threshold":null,"recipient_allowlist":null}}}}"#;
        assert_eq!(
            at(missing),
            "policy.chains.solana: missing field `chain_ids`"
        );
        let wrong = missing.replace(r#""per_tx_max":"1""#, r#""chain_ids":[],"per_tx_max":7"#);
        assert!(
            at(&wrong).starts_with("policy.chains.solana.per_tx_max: "),
            "{}",
            at(&wrong)
        );
        let unknown = missing
            .replace("solana", "bitcoin")
            .replace(r#""per_tx_max""#, r#""chain_ids":[],"per_tx_max""#);
        let e = at(&unknown);
        assert!(
            e.starts_with("policy.chains: unknown variant `bitcoin`"),
            "{e}"
        );
        assert!(!e.contains('?'), "{e}");
    }
}
