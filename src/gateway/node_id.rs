//! The identity of a gateway node.

use std::fmt;

/// Identifies one gateway node: 16 random bytes (UUID v4), announced in HELLO.
///
/// Ordering is the byte order of the id: when two nodes dial each other at once, the gateway
/// keeps the connection chosen by the lower node id, and both ends must agree on "lower".
///
/// ```
/// use rxplus::gateway::NodeId;
///
/// let id = NodeId::from_bytes([0xab; 16]);
/// assert_eq!(id.to_string(), "abababababababababababababababab");
/// assert_eq!(id.to_string().parse::<NodeId>()?, id);
/// assert!("ab-ab".parse::<NodeId>().is_err());
/// # Ok::<(), rxplus::Error>(())
/// ```
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId([u8; 16]);

impl NodeId {
    /// A fresh random id (UUID v4).
    pub fn random() -> Self {
        NodeId(*uuid::Uuid::new_v4().as_bytes())
    }
    /// The id with these bytes.
    pub const fn from_bytes(bytes: [u8; 16]) -> Self {
        NodeId(bytes)
    }
    /// The id's bytes, as sent on the wire.
    pub const fn as_bytes(&self) -> &[u8; 16] {
        &self.0
    }
}

impl From<uuid::Uuid> for NodeId {
    fn from(u: uuid::Uuid) -> Self {
        NodeId(*u.as_bytes())
    }
}

impl From<[u8; 16]> for NodeId {
    fn from(bytes: [u8; 16]) -> Self {
        NodeId(bytes)
    }
}

/// 32 lowercase hex digits, no separators.
impl fmt::Display for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

/// `NodeId(<32 hex digits>)`.
impl fmt::Debug for NodeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NodeId({self})")
    }
}

/// Parses exactly 32 hex digits (either case), what [`Display`](fmt::Display) prints. No
/// hyphens or braces: one spelling per id keeps ids comparable as text in logs and configs.
impl std::str::FromStr for NodeId {
    type Err = crate::Error;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || crate::Error::config("node_id", format!("{s:?}: expected 32 hex digits"));
        let digits = s.as_bytes();
        if digits.len() != 32 {
            return Err(bad());
        }
        let mut out = [0u8; 16];
        for (byte, pair) in out.iter_mut().zip(digits.chunks_exact(2)) {
            let (hi, lo) = match pair {
                [hi, lo] => (hex_value(*hi), hex_value(*lo)),
                _ => (None, None),
            };
            match (hi, lo) {
                (Some(hi), Some(lo)) => *byte = (hi << 4) | lo,
                _ => return Err(bad()),
            }
        }
        Ok(NodeId(out))
    }
}

fn hex_value(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_and_from_str_round_trip() {
        for _ in 0..1000 {
            let id = NodeId::random();
            let text = id.to_string();
            assert_eq!(text.len(), 32);
            assert!(text
                .bytes()
                .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
            assert_eq!(text.parse::<NodeId>().unwrap(), id);
        }
    }

    #[test]
    fn display_debug_and_conversions() {
        let mut bytes = [0u8; 16];
        for (i, b) in bytes.iter_mut().enumerate() {
            *b = (i as u8) * 17;
        }
        let id = NodeId::from_bytes(bytes);
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        assert_eq!(
            format!("{id:?}"),
            "NodeId(00112233445566778899aabbccddeeff)"
        );
        assert_eq!(id.as_bytes(), &bytes);
        assert_eq!(NodeId::from(bytes), id);
        assert_eq!(NodeId::from(uuid::Uuid::from_bytes(bytes)), id);
        assert_eq!(
            NodeId::from(uuid::Uuid::from_u128(0xfeed)).to_string(),
            "0000000000000000000000000000feed"
        );
    }

    #[test]
    fn uppercase_and_mixed_case_are_accepted() {
        let id: NodeId = "00112233445566778899AABBCCDDEEFF".parse().unwrap();
        assert_eq!(id.to_string(), "00112233445566778899aabbccddeeff");
        let mixed: NodeId = "00112233445566778899aAbBcCdDeEfF".parse().unwrap();
        assert_eq!(mixed, id);
    }

    #[test]
    fn malformed_input_errs() {
        let ok = "00112233445566778899aabbccddeeff";
        let mut bad: Vec<String> = vec![
            String::new(),
            "0".into(),
            ok[..31].into(),
            format!("{ok}0"),
            format!("{ok}00"),
            "00112233-4455-6677-8899-aabbccddeeff".into(),
            "{00112233445566778899aabbccddeeff}".into(),
            "0011223344556677889 aabbccddeeff".into(),
            " 0112233445566778899aabbccddeeff".into(),
            "0x112233445566778899aabbccddeeff".into(),
            "g0112233445566778899aabbccddeeff".into(),
            "+0112233445566778899aabbccddeeff".into(),
            // 32 bytes but not 32 characters: multi-byte UTF-8 must not be split or accepted.
            "é0112233445566778899aabbccddeef".into(),
            "00112233445566778899aabbccddeeé".into(),
        ];
        // Every position, every non-hex ASCII character class.
        for i in 0..32 {
            for c in ['g', 'G', 'z', '-', ' ', ':', '/', '@', '`', '\0'] {
                let mut s: Vec<char> = ok.chars().collect();
                s[i] = c;
                bad.push(s.into_iter().collect());
            }
        }
        for s in &bad {
            match s.parse::<NodeId>() {
                Err(crate::Error::Config { field, reason }) => {
                    assert_eq!(field, "node_id");
                    assert_eq!(reason, format!("{s:?}: expected 32 hex digits"));
                }
                other => panic!("{s:?} gave {other:?}"),
            }
        }
    }

    #[test]
    fn ordering_is_byte_order() {
        let a = NodeId::from_bytes([0; 16]);
        let mut hi_first = [0u8; 16];
        hi_first[0] = 1;
        let mut hi_last = [0u8; 16];
        hi_last[15] = 0xff;
        let b = NodeId::from_bytes(hi_last);
        let c = NodeId::from_bytes(hi_first);
        assert!(a < b && b < c);
        for _ in 0..1000 {
            let x = NodeId::random();
            let y = NodeId::random();
            assert_eq!(x.cmp(&y), x.as_bytes().cmp(y.as_bytes()));
            // The text form sorts the same way (fixed width, lowercase).
            assert_eq!(x.cmp(&y), x.to_string().cmp(&y.to_string()));
        }
    }
}
