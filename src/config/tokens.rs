//! Inbound bearer tokens -> tenant. Tokens are kept only as SHA-256 digests and the final comparison is
//! constant-time, so neither lookup time nor memory reveals a token.

use sha2::{Digest, Sha256};
use std::collections::HashMap;
use subtle::ConstantTimeEq;

#[derive(Default)]
pub(crate) struct TokenTable {
    by_digest: HashMap<[u8; 32], usize>,
}

impl std::fmt::Debug for TokenTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenTable({} tokens)", self.by_digest.len())
    }
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

impl TokenTable {
    /// Adds a token for a tenant; returns the tenant index already holding it, if any.
    pub(crate) fn insert(&mut self, token: &str, tenant: usize) -> Result<(), usize> {
        match self.by_digest.entry(digest(token)) {
            std::collections::hash_map::Entry::Occupied(e) => Err(*e.get()),
            std::collections::hash_map::Entry::Vacant(e) => {
                e.insert(tenant);
                Ok(())
            }
        }
    }

    pub(crate) fn lookup(&self, token: &str) -> Option<usize> {
        let wanted = digest(token);
        // The map finds a candidate by digest (which reveals nothing about the token); the constant-time
        // check is belt and braces against a hasher that short-circuits.
        self.by_digest
            .get_key_value(&wanted)
            .filter(|(stored, _)| bool::from(stored.ct_eq(&wanted)))
            .map(|(_, tenant)| *tenant)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_only_exact_tokens() {
        let mut t = TokenTable::default();
        t.insert("token-for-acme-0001", 0).unwrap();
        t.insert("token-for-beta-0001", 1).unwrap();
        assert_eq!(t.lookup("token-for-acme-0001"), Some(0));
        assert_eq!(t.lookup("token-for-beta-0001"), Some(1));
        assert_eq!(t.lookup("token-for-acme-000"), None);
        assert_eq!(t.lookup(""), None);
        assert_eq!(t.insert("token-for-acme-0001", 1), Err(0));
    }
}
