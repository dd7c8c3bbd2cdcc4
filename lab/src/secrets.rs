//! Per-lab secrets: the database and Redis passwords and the key that signs
//! sessions. They are random, made at a lab's first `up`, and kept as a label
//! on the lab's network, so the CLI stays stateless and no lab anywhere
//! shares a default password with another.

use rand::distr::{Alphanumeric, SampleString};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Clone, Debug, PartialEq, Eq)]
pub struct Secrets {
    pub db_password: String,
    pub redis_password: String,
    pub session_secret: String,
}

impl Secrets {
    pub fn generate() -> Secrets {
        let mut rng = rand::rng();
        Secrets {
            db_password: Alphanumeric.sample_string(&mut rng, 24),
            redis_password: Alphanumeric.sample_string(&mut rng, 24),
            session_secret: Alphanumeric.sample_string(&mut rng, 64),
        }
    }

    pub fn to_label(&self) -> String {
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn from_label(s: &str) -> Option<Secrets> {
        serde_json::from_str(s).ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_lab_gets_its_own() {
        let a = Secrets::generate();
        let b = Secrets::generate();
        assert_ne!(a, b);
        assert!(a.session_secret.len() >= 32);
        assert_eq!(Secrets::from_label(&a.to_label()), Some(a));
    }
}
