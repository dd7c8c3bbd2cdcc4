//! Checkers: how the driver notices that the lab let a user down, even when
//! every request "succeeded".
//!
//! A 200 is not the end of the story. Three anomalies a scaling tutorial warns
//! about are invisible to an HTTP status code, so each virtual user remembers
//! what it has been told and compares:
//!
//! - **Session loss.** A user logged in, then a later request is answered by a
//!   server that does not know it (401, or a `/me` naming someone else). That
//!   happens when sessions live in one server's memory and the next request
//!   lands on another server, or that server died. The user logs in again and
//!   goes on, like a real person would, grumbling.
//! - **Stale read.** A user deposited money, the bank said "done", and a moment
//!   later the balance it reads back is lower than the sum of its own
//!   acknowledged deposits. Nobody else touches that account, so the read came
//!   from a replica that had not yet applied the write: asynchronous
//!   replication lag, seen by the one person who can tell.
//! - **Lost write.** At the end, every bank account is read once more, from the
//!   primary. Acknowledged money that is not there was lost: the primary said
//!   "committed" and then forgot (for instance a failover to a replica that had
//!   not received it). Deposits whose outcome was unknown (a timeout, a 5xx, a
//!   connection that broke after sending) are tracked apart: they may or may
//!   not have happened, so they never count as acknowledged, and finding them
//!   missing is not a lost write.

/// Every bank deposit moves this many cents. A fixed amount turns "money
/// missing" into "deposits missing": 150 cents short means 3 lost writes.
pub const DEPOSIT_CENTS: i64 = 50;

/// What one answer to a logged-in user's request says about its session.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SessionVerdict {
    /// The server knew the user.
    Known,
    /// The server did not know the user: the session was lost.
    Lost,
    /// No conclusion (an error that says nothing about sessions, e.g. a 502).
    Unclear,
}

/// Judges an answer given to a user who believes it is logged in.
///
/// `answered_user` is the `user` field of a 2xx body, when there is one.
pub fn judge_session(
    status: u16,
    expected_user: &str,
    answered_user: Option<&str>,
) -> SessionVerdict {
    match status {
        401 => SessionVerdict::Lost,
        200..=299 => match answered_user {
            Some(u) if u == expected_user => SessionVerdict::Known,
            // A body that names someone else or no one: the server does not
            // know this user.
            Some(_) => SessionVerdict::Lost,
            None => SessionVerdict::Unclear,
        },
        _ => SessionVerdict::Unclear,
    }
}

/// What happened to one deposit, as far as its user can tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteOutcome {
    /// The bank answered 2xx: the money must be there from now on.
    Acknowledged,
    /// Certainly not applied: no connection, or a 4xx refusal.
    Failed,
    /// Maybe applied: timeout, 5xx, or the connection broke after sending.
    Unknown,
}

/// One bank user's own bookkeeping of its account.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Ledger {
    /// Sum of acknowledged deposits, in cents.
    pub acknowledged_cents: i64,
    pub acknowledged: u64,
    /// Sum of deposits whose outcome is unknown, in cents.
    pub unknown_cents: i64,
    pub unknown: u64,
    /// A deposit sent and not yet answered (counted as unknown if the run
    /// ends before its answer comes).
    pub in_flight_cents: i64,
}

impl Ledger {
    /// Notes a deposit about to be sent.
    pub fn sending(&mut self, cents: i64) {
        self.in_flight_cents = cents;
    }

    /// Notes how the deposit that was in flight ended.
    pub fn settle(&mut self, outcome: WriteOutcome) {
        let cents = std::mem::take(&mut self.in_flight_cents);
        match outcome {
            WriteOutcome::Acknowledged => {
                self.acknowledged_cents += cents;
                self.acknowledged += 1;
            }
            WriteOutcome::Unknown => {
                self.unknown_cents += cents;
                self.unknown += 1;
            }
            WriteOutcome::Failed => {}
        }
    }

    /// A read is stale when it shows less than what this user was told is
    /// already there. `balance` is what the read returned (a missing account
    /// counts as 0).
    pub fn is_stale(&self, balance: i64) -> bool {
        balance < self.acknowledged_cents
    }

    /// The final audit, given the balance read from the primary.
    pub fn audit(&self, primary_balance: i64) -> AuditVerdict {
        let unknown_total = self.unknown_cents + self.in_flight_cents;
        let missing = (self.acknowledged_cents - primary_balance).max(0);
        let surplus = (primary_balance - self.acknowledged_cents).max(0);
        // Had every deposit of unknown outcome landed, this much of the
        // acknowledged money would be missing: a loss the unknown ones hide.
        let hidden = (self.acknowledged_cents + unknown_total - primary_balance)
            .clamp(0, self.acknowledged_cents);
        AuditVerdict {
            missing_cents: missing,
            // Round up: 1 cent missing still means a deposit is gone.
            lost_writes: deposits(missing),
            possibly_lost: deposits(hidden),
            unknown_applied_cents: surplus.min(unknown_total),
            unexplained_cents: (surplus - unknown_total).max(0),
        }
    }
}

/// Cents to deposits, rounded up: 1 cent missing still means a deposit.
fn deposits(cents: i64) -> u64 {
    u64::try_from((cents + DEPOSIT_CENTS - 1) / DEPOSIT_CENTS).unwrap_or(0)
}

/// What the audit concludes about one account.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum AccountAudit {
    /// Every acknowledged deposit is there.
    Ok,
    /// Acknowledged money is missing: a lost write, certainly.
    Lost,
    /// Nothing acknowledged is certainly missing, but deposits of unknown
    /// outcome could hide a loss (one landed where an acknowledged one
    /// vanished): the balance alone cannot tell.
    Unknown,
}

/// The result of comparing one account on the primary with its ledger.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AuditVerdict {
    /// Acknowledged money that is not on the primary.
    pub missing_cents: i64,
    /// Acknowledged deposits missing (at least this many).
    pub lost_writes: u64,
    /// Acknowledged deposits that may be missing (at most this many): the
    /// lost ones, plus those that deposits of unknown outcome could hide.
    pub possibly_lost: u64,
    /// Money beyond the acknowledged sum, explained by deposits whose outcome
    /// was unknown (they did happen after all).
    pub unknown_applied_cents: i64,
    /// Money nobody can explain (someone else wrote to the account).
    pub unexplained_cents: i64,
}

impl AuditVerdict {
    /// Ok, lost or unknown.
    pub fn class(&self) -> AccountAudit {
        if self.lost_writes > 0 {
            AccountAudit::Lost
        } else if self.possibly_lost > 0 {
            AccountAudit::Unknown
        } else {
            AccountAudit::Ok
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_loss_is_401_or_a_stranger() {
        assert_eq!(judge_session(200, "u1", Some("u1")), SessionVerdict::Known);
        assert_eq!(judge_session(401, "u1", None), SessionVerdict::Lost);
        assert_eq!(judge_session(200, "u1", Some("u2")), SessionVerdict::Lost);
        assert_eq!(judge_session(502, "u1", None), SessionVerdict::Unclear);
        assert_eq!(judge_session(200, "u1", None), SessionVerdict::Unclear);
        assert_eq!(judge_session(404, "u1", None), SessionVerdict::Unclear);
    }

    #[test]
    fn stale_read_compares_with_acknowledged_deposits_only() {
        let mut l = Ledger::default();
        l.sending(DEPOSIT_CENTS);
        l.settle(WriteOutcome::Acknowledged);
        l.sending(DEPOSIT_CENTS);
        l.settle(WriteOutcome::Unknown);
        l.sending(DEPOSIT_CENTS);
        l.settle(WriteOutcome::Failed);
        assert_eq!(l.acknowledged_cents, 50);
        assert_eq!(l.unknown_cents, 50);
        assert!(l.is_stale(0), "a missing account reads as 0: stale");
        assert!(!l.is_stale(50));
        // The unknown deposit may or may not show: neither is stale.
        assert!(!l.is_stale(100));
    }

    #[test]
    fn audit_counts_lost_writes_and_tolerates_unknown_ones() {
        let mut l = Ledger::default();
        for _ in 0..4 {
            l.sending(DEPOSIT_CENTS);
            l.settle(WriteOutcome::Acknowledged);
        }
        l.sending(DEPOSIT_CENTS);
        l.settle(WriteOutcome::Unknown);
        // Everything there, the unknown deposit too.
        let v = l.audit(250);
        assert_eq!(v.lost_writes, 0);
        assert_eq!(v.unknown_applied_cents, 50);
        assert_eq!(v.unexplained_cents, 0);
        assert_eq!(v.class(), AccountAudit::Ok);
        // 200: either the unknown deposit did not land (nothing lost), or
        // it landed and an acknowledged one vanished. The balance cannot
        // tell: unknown, not ok and not lost.
        let v = l.audit(200);
        assert_eq!((v.lost_writes, v.possibly_lost), (0, 1));
        assert_eq!(v.class(), AccountAudit::Unknown);
        // Two acknowledged deposits missing, maybe three.
        let v = l.audit(100);
        assert_eq!(v.lost_writes, 2);
        assert_eq!(v.possibly_lost, 3);
        assert_eq!(v.missing_cents, 100);
        assert_eq!(v.class(), AccountAudit::Lost);
        // An account that does not exist on the primary lost everything.
        assert_eq!(l.audit(0).lost_writes, 4);
        assert_eq!(l.audit(0).possibly_lost, 4);
        // Money from nowhere is reported, not hidden.
        assert_eq!(l.audit(400).unexplained_cents, 150);
    }

    #[test]
    fn a_failover_that_loses_acknowledged_deposits_is_a_loss() {
        // Async replication, the replica cut off, 10 deposits acknowledged
        // by the old primary, then the stale replica promoted: it has the
        // first 4 only.
        let mut l = Ledger::default();
        for _ in 0..10 {
            l.sending(DEPOSIT_CENTS);
            l.settle(WriteOutcome::Acknowledged);
        }
        let v = l.audit(4 * DEPOSIT_CENTS);
        assert_eq!(v.lost_writes, 6);
        assert_eq!(v.class(), AccountAudit::Lost);
        // Sync replication: the new primary has every acknowledged one.
        assert_eq!(l.audit(10 * DEPOSIT_CENTS).class(), AccountAudit::Ok);
    }

    #[test]
    fn a_deposit_still_in_flight_at_the_end_is_unknown() {
        let mut l = Ledger::default();
        l.sending(DEPOSIT_CENTS);
        l.settle(WriteOutcome::Acknowledged);
        l.sending(DEPOSIT_CENTS);
        let v = l.audit(100);
        assert_eq!(v.lost_writes, 0);
        assert_eq!(v.unknown_applied_cents, 50);
        assert_eq!(v.unexplained_cents, 0);
    }
}
