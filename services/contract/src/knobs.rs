//! The knobs more than one program understands.
//!
//! A student sets `--lb sticky` on the CLI; the CLI writes `strategy =
//! "sticky"` into the balancer's file; the balancer reads it back. The same
//! goes for where sessions live and where reads go, which the CLI hands the
//! app through its environment. Each knob is one enum here, with one
//! spelling for every place it is written (the CLI flag, lab.toml, the
//! balancer's file, the app's environment, JSON), so the two ends cannot
//! drift apart.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// A value that is not one of a knob's spellings; the message lists them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown {knob} {value:?}: expected one of {expected}")]
pub struct UnknownValue {
    /// Which knob, e.g. `strategy`.
    pub knob: &'static str,
    /// What was given.
    pub value: String,
    /// Every valid spelling, comma-separated.
    pub expected: String,
}

macro_rules! knob {
    (
        $(#[$meta:meta])*
        $name:ident as $knob:literal {
            $( $(#[$vmeta:meta])* $variant:ident = $text:literal ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, Hash)]
        #[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
        // Read through `FromStr`, so a wrong value gets the same message
        // in a TOML file, a JSON body and the environment.
        #[serde(rename_all = "kebab-case", try_from = "String")]
        pub enum $name {
            $( $(#[$vmeta])* $variant ),+
        }

        impl $name {
            /// Every value, in the order the docs list them.
            pub const ALL: [$name; [$($text),+].len()] = [$($name::$variant),+];

            /// The one spelling used everywhere.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $text),+
                }
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl TryFrom<String> for $name {
            type Error = UnknownValue;

            fn try_from(s: String) -> Result<Self, UnknownValue> {
                s.parse()
            }
        }

        impl FromStr for $name {
            type Err = UnknownValue;

            fn from_str(s: &str) -> Result<Self, UnknownValue> {
                Self::ALL
                    .into_iter()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| UnknownValue {
                        knob: $knob,
                        value: s.to_owned(),
                        expected: Self::ALL.map(|v| v.as_str()).join(", "),
                    })
            }
        }
    };
}

knob! {
    /// How the balancer picks a server for each request.
    Strategy as "strategy" {
        /// Each server in turn.
        RoundRobin = "round-robin",
        /// The server with the fewest requests in flight.
        LeastConn = "least-conn",
        /// A hash of the client's address: the same client, the same server.
        IpHash = "ip-hash",
        /// A cookie names the server the client first reached.
        Sticky = "sticky",
    }
}

knob! {
    /// Where a logged-in user's state lives.
    Sessions as "session store" {
        /// In the memory of the server that created it: lost elsewhere.
        Memory = "memory",
        /// In Redis, shared by every server.
        Redis = "redis",
        /// In a signed token the browser carries.
        Jwt = "jwt",
    }
}

knob! {
    /// Where the app reads account balances from.
    Reads as "reads" {
        /// Every read on the primary: always fresh, one machine does all the work.
        Primary = "primary",
        /// Reads spread over the replicas: more capacity, possibly stale.
        Replicas = "replicas",
    }
}

knob! {
    /// Whether the primary waits for its replicas before confirming a commit.
    Replication as "replication" {
        /// Confirm at once; replicas catch up later (fast, may be stale).
        Async = "async",
        /// Confirm only once every replica has applied the change.
        Sync = "sync",
    }
}

knob! {
    /// A feature switched on or off.
    Toggle as "switch" {
        /// Switched on.
        On = "on",
        /// Switched off.
        Off = "off",
    }
}

// Written by hand: the macro serves enums with and without a default.
#[allow(clippy::derivable_impls)]
impl Default for Strategy {
    fn default() -> Self {
        Strategy::RoundRobin
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Sessions {
    fn default() -> Self {
        Sessions::Memory
    }
}

#[allow(clippy::derivable_impls)]
impl Default for Replication {
    fn default() -> Self {
        Replication::Async
    }
}

impl Toggle {
    /// `true` for on.
    pub fn is_on(self) -> bool {
        self == Toggle::On
    }

    /// On for `true`.
    pub fn from_bool(on: bool) -> Toggle {
        if on {
            Toggle::On
        } else {
            Toggle::Off
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_spelling_reads_back() {
        for s in Strategy::ALL {
            assert_eq!(s.as_str().parse::<Strategy>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for s in Sessions::ALL {
            assert_eq!(s.as_str().parse::<Sessions>().unwrap(), s);
        }
    }

    #[test]
    fn a_wrong_value_lists_the_right_ones() {
        let e = "reddis".parse::<Sessions>().unwrap_err().to_string();
        assert_eq!(
            e,
            "unknown session store \"reddis\": expected one of memory, redis, jwt"
        );
    }
}
