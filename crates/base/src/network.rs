use std::fmt;

use crate::hash::hash256;

/// Which mesh a node belongs to: py2p's `protocol(subnet, encryption)`.
///
/// Nodes of different networks cannot complete a handshake. The 32-byte pre-shared key of the
/// Noise handshake is the secret if one is given (a private mesh), else it is derived from the
/// name (a public subnet: anyone who knows the name can join). The [`Network::id`] is a hash of
/// the key, never the key itself, and is mixed into every signature so that a message signed for
/// one network is worthless in another.
#[derive(Clone, PartialEq, Eq)]
pub struct Network {
    name: String,
    psk: [u8; 32],
    id: [u8; 32],
}

impl Network {
    /// A public network: its key is derived from its name.
    pub fn named(name: impl Into<String>) -> Self {
        let name = name.into();
        let psk = hash256("rs2p/v1/network-psk", &[name.as_bytes()]);
        Self::with_psk(name, psk)
    }

    /// A private network: only nodes that hold `secret` can join.
    pub fn private(name: impl Into<String>, secret: [u8; 32]) -> Self {
        let name = name.into();
        let psk = hash256("rs2p/v1/network-secret", &[name.as_bytes(), &secret]);
        Self::with_psk(name, psk)
    }

    fn with_psk(name: String, psk: [u8; 32]) -> Self {
        let id = hash256("rs2p/v1/network-id", &[&psk]);
        Self { name, psk, id }
    }

    /// The network's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The network id: a hash of the pre-shared key, safe to show and to sign over.
    pub fn id(&self) -> &[u8; 32] {
        &self.id
    }

    pub(crate) fn psk(&self) -> &[u8; 32] {
        &self.psk
    }
}

impl Default for Network {
    /// The network named `"rs2p"`.
    fn default() -> Self {
        Self::named("rs2p")
    }
}

impl fmt::Debug for Network {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Network({:?}, id {})",
            self.name,
            hex::encode(&self.id[..4])
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_secrets_separate_networks() {
        assert_eq!(Network::named("a"), Network::named("a"));
        assert_ne!(Network::named("a").id(), Network::named("b").id());
        assert_ne!(
            Network::named("a").id(),
            Network::private("a", [1; 32]).id()
        );
        assert_ne!(
            Network::private("a", [1; 32]).id(),
            Network::private("a", [2; 32]).id()
        );
        let n = Network::named("a");
        assert_ne!(n.id(), n.psk(), "the id never reveals the key");
    }
}
