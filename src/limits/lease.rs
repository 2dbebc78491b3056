//! `rate_limit.mode: global` at close to local cost: an Envoy process (a
//! replica) asks the rate limit service to count a *lease* of several hits at
//! once (`hits_addend`), admits the lease's requests from its shared data
//! without asking, and asks again when it is spent. The service counts a
//! lease before any of it is spent, so the fleet never admits more than the
//! limit; leases shrink to one hit as the budget the replica last heard of
//! nears zero, so what a refused or stranded lease loses stays small.
//!
//! It also keeps what an outage needs: what the service last said was left,
//! the share of it this replica may admit while the service cannot answer,
//! and what it admitted meanwhile (counted by the service on the next ask).
//!
//! The state is per process and per key, in a fixed table of shared-data
//! slots, changed with compare-and-swap. Everything here but [`LeaseTable`]
//! is pure, so the fleet can be simulated (`src/tests/fleet_simulation.rs`).

use super::cas;
use super::local::{tag, window_end, WINDOW_SECONDS};
use crate::host::Host;
use crate::tables::slots::SlotTable;
use crate::types::Window;

const SLOT_PREFIX: &str = "hokusai_auth.v1.lease.";
const UNKNOWN: u64 = u64::MAX;
/// A replica leases at most this fraction of its share of what it last
/// heard was left: small leases near the end keep the fleet's loss small.
const SHARE_DIVISOR: u64 = 8;
const WORDS: usize = 10;
/// A lease is renewed once what is held is at most 1/RENEW_WHEN of the next.
const RENEW_WHEN: u64 = 4;

/// How large a lease a replica takes, and its share in an outage.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseRule {
    /// Envoy processes counting the same keys.
    pub replicas: u64,
    /// The largest lease; 1: every request asks the service.
    pub max_lease: u64,
    /// How long an ask may be in flight (the call's timeout).
    pub ask_ms: u64,
}

impl LeaseRule {
    /// The lease to ask for, `known` being what the service last said was
    /// left (UNKNOWN: nothing heard this window).
    pub fn size(&self, known: u64) -> u64 {
        if known == UNKNOWN {
            return 1;
        }
        let share = known / self.replicas.max(1).saturating_mul(SHARE_DIVISOR);
        share.clamp(1, self.max_lease.max(1))
    }

    /// What this replica may admit while the service cannot answer: its
    /// share of what the fleet had left when last heard (else of the
    /// limit), less what the other replicas have likely spent since: as
    /// much each as this one, traffic being spread over the replicas.
    fn outage_share(&self, lease: &Lease) -> u64 {
        let replicas = self.replicas.max(1);
        let left = if lease.known == UNKNOWN {
            lease.limit
        } else {
            lease.known
        };
        let by_others = lease.spent.saturating_mul(replicas - 1);
        left.saturating_sub(by_others) / replicas
    }
}

/// One key's account in this replica, for one window and one limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    owner: u64,
    window: u64,
    limit: u64,
    /// Counted by the service, not yet spent here.
    tokens: u64,
    /// What the service last said was left (UNKNOWN: nothing heard).
    known: u64,
    /// The service refused: the window is spent for the whole fleet.
    over: bool,
    /// Admitted during an outage, not yet counted by the service.
    owed: u64,
    /// What an outage may still admit here (UNKNOWN: no outage).
    outage_left: u64,
    /// Admitted from leases since the service was last heard.
    spent: u64,
    /// A lease of more than one hit is being asked for until then.
    asking_until_ms: u64,
}

/// Which key, in which window, against which limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Account {
    owner: u64,
    window: u64,
    limit: u64,
}

impl Account {
    /// `owner` (the key's `key_id`, else its digest) in `scope`.
    pub fn new(scope: &str, owner: &[u8], limit: u64, now_s: u64) -> Self {
        Self {
            owner: tag(scope, owner),
            window: now_s / WINDOW_SECONDS,
            limit,
        }
    }

    /// The key's limit per hour.
    pub fn limit(&self) -> u64 {
        self.limit
    }

    fn reset_at(&self) -> u64 {
        window_end(self.window.saturating_mul(WINDOW_SECONDS))
    }

    fn window(&self, remaining: u64, allowed: bool) -> Window {
        Window {
            limit: self.limit,
            remaining,
            reset_at: self.reset_at(),
            allowed,
        }
    }
}

/// A call to make: count `lease` hits for this request and its successors,
/// and `owed` for requests an outage admitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Ask {
    pub account: Account,
    pub lease: u64,
    pub owed: u64,
}

impl Ask {
    pub fn hits(&self) -> u64 {
        self.lease.saturating_add(self.owed)
    }
}

/// What a request gets before any call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Take {
    /// Admitted from the lease.
    Admit(Window),
    /// The service said this window is spent.
    Refuse(Window),
    Ask(Ask),
}

impl Lease {
    /// The account's state in `bytes`, or a fresh one.
    pub fn read(bytes: Option<&[u8]>, account: &Account) -> Self {
        bytes
            .and_then(decode)
            .filter(|l| {
                l.owner == account.owner && l.window == account.window && l.limit == account.limit
            })
            .unwrap_or(Lease {
                owner: account.owner,
                window: account.window,
                limit: account.limit,
                tokens: 0,
                known: UNKNOWN,
                over: false,
                owed: 0,
                outage_left: UNKNOWN,
                spent: 0,
                asking_until_ms: 0,
            })
    }

    /// A request arrives.
    pub fn take(&mut self, account: &Account, rule: &LeaseRule, now_ms: u64) -> Take {
        let asking = now_ms < self.asking_until_ms;
        let lease = if asking { 1 } else { rule.size(self.known) };
        // Renewed ahead: one request asks for the next lease while a
        // quarter of this one is left, so that the others spend what is
        // held meanwhile instead of asking for one hit each.
        let renew = lease > 1 && self.tokens.saturating_mul(RENEW_WHEN) <= lease;
        if renew && !self.over {
            return Take::Ask(self.ask(account, lease, rule, now_ms));
        }
        if let Some(window) = self.spend(account) {
            return Take::Admit(window);
        }
        if self.over {
            return Take::Refuse(account.window(0, false));
        }
        Take::Ask(self.ask(account, lease, rule, now_ms))
    }

    fn ask(&mut self, account: &Account, lease: u64, rule: &LeaseRule, now_ms: u64) -> Ask {
        // One lease in flight per replica: others ask for one hit.
        if lease > 1 {
            self.asking_until_ms = now_ms.saturating_add(rule.ask_ms);
        }
        Ask {
            account: *account,
            lease,
            owed: std::mem::take(&mut self.owed),
        }
    }

    /// Admits a request from the hits held, if any.
    fn spend(&mut self, account: &Account) -> Option<Window> {
        if self.tokens == 0 {
            return None;
        }
        self.tokens -= 1;
        self.spent = self.spent.saturating_add(1);
        Some(account.window(self.estimate(), true))
    }

    /// The service counted the ask and had `remaining` left after it: the
    /// request is admitted, the rest of the lease kept.
    pub fn granted(&mut self, ask: &Ask, remaining: u64) -> Window {
        self.ask_over(ask);
        self.tokens = self.tokens.saturating_add(ask.lease.saturating_sub(1));
        self.known = remaining;
        self.spent = 0;
        self.over = false;
        self.outage_left = UNKNOWN;
        ask.account.window(self.estimate(), true)
    }

    /// The service counted the ask over the limit: the window is spent, but
    /// for the hits held (counted before), which admit this request first.
    pub fn refused(&mut self, ask: &Ask) -> Window {
        self.ask_over(ask);
        self.known = 0;
        self.spent = 0;
        self.over = true;
        self.outage_left = UNKNOWN;
        self.spend(&ask.account)
            .unwrap_or_else(|| ask.account.window(0, false))
    }

    /// The service did not answer: the request is admitted from the hits
    /// held, if any (None: none held).
    pub fn unanswered(&mut self, ask: &Ask) -> Option<Window> {
        self.ask_over(ask);
        self.owed = self.owed.saturating_add(ask.owed);
        self.spend(&ask.account)
    }

    /// Nothing held and the service not answering, under `failure_mode:
    /// local`: admitted from this replica's share of what was likely left
    /// (counted by the service on the next ask), or refused.
    pub fn share_outage(&mut self, account: &Account, rule: &LeaseRule) -> Window {
        if self.over {
            return account.window(0, false);
        }
        if self.outage_left == UNKNOWN {
            self.outage_left = rule.outage_share(self);
        }
        if self.outage_left == 0 {
            return account.window(0, false);
        }
        self.outage_left -= 1;
        self.owed = self.owed.saturating_add(1);
        account.window(self.outage_left, true)
    }

    fn ask_over(&mut self, ask: &Ask) {
        if ask.lease > 1 {
            self.asking_until_ms = 0;
        }
    }

    /// What this replica knows is left for the fleet: what the service
    /// last said plus what this replica holds.
    fn estimate(&self) -> u64 {
        let known = if self.known == UNKNOWN { 0 } else { self.known };
        known.saturating_add(self.tokens)
    }

    pub fn encode(&self) -> Vec<u8> {
        [
            self.owner,
            self.window,
            self.limit,
            self.tokens,
            self.known,
            u64::from(self.over),
            self.owed,
            self.outage_left,
            self.spent,
            self.asking_until_ms,
        ]
        .iter()
        .flat_map(|v| v.to_le_bytes())
        .collect()
    }
}

fn decode(b: &[u8]) -> Option<Lease> {
    if b.len() != WORDS * 8 {
        return None;
    }
    let word = |i: usize| -> Option<u64> {
        Some(u64::from_le_bytes(
            b.get(i * 8..i * 8 + 8)?.try_into().ok()?,
        ))
    };
    Some(Lease {
        owner: word(0)?,
        window: word(1)?,
        limit: word(2)?,
        tokens: word(3)?,
        known: word(4)?,
        over: word(5)? != 0,
        owed: word(6)?,
        outage_left: word(7)?,
        spent: word(8)?,
        asking_until_ms: word(9)?,
    })
}

/// The replica's leases, one slot per key (a newer key takes a slot over).
pub struct LeaseTable {
    slots: SlotTable,
}

impl LeaseTable {
    pub fn new(slots: u32) -> Self {
        Self {
            slots: SlotTable::new(SLOT_PREFIX, slots),
        }
    }

    /// Applies `step` to the account's state, stored with compare-and-swap.
    /// Err: the slot stayed contended and nothing was stored.
    pub fn update<H: Host, R>(
        &self,
        host: &H,
        account: &Account,
        step: impl Fn(&mut Lease) -> R,
    ) -> Result<R, R> {
        let key = self.slots.key(account.owner);
        cas::update(host, &key, |bytes| {
            let before = Lease::read(bytes, account);
            let mut after = before;
            let result = step(&mut after);
            let changed = after != before || bytes.is_none();
            (changed.then(|| after.encode()), result)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const RULE: LeaseRule = LeaseRule {
        replicas: 3,
        max_lease: 100,
        ask_ms: 20,
    };

    fn account(limit: u64) -> Account {
        Account::new("s", b"k_1", limit, 10 * WINDOW_SECONDS + 5)
    }

    fn fresh(a: &Account) -> Lease {
        Lease::read(None, a)
    }

    /// What the filter does when the service does not answer, under
    /// `failure_mode: local`.
    fn failed(l: &mut Lease, x: &Ask) -> Window {
        l.unanswered(x)
            .unwrap_or_else(|| l.share_outage(&x.account, &RULE))
    }

    fn ask(take: Take) -> Ask {
        match take {
            Take::Ask(a) => a,
            other => panic!("not an ask: {other:?}"),
        }
    }

    #[test]
    fn the_first_ask_is_one_hit_then_a_share_of_what_is_left() {
        let rule = LeaseRule {
            max_lease: 1_000,
            ..RULE
        };
        let a = account(10_000);
        let mut l = fresh(&a);
        let first = ask(l.take(&a, &rule, 0));
        assert_eq!((first.lease, first.owed), (1, 0));
        let w = l.granted(&first, 9_999);
        assert_eq!((w.remaining, w.allowed), (9_999, true));
        let second = ask(l.take(&a, &rule, 1));
        assert_eq!(second.lease, 9_999 / 24);
        let w = l.granted(&second, 9_999 - 416);
        assert_eq!(w.remaining, 9_999 - 1, "what is left counts what is held");
        // Spent from the lease until a quarter of the next one is left.
        let next = rule.size(9_999 - 416);
        let mut held = 415;
        while held * 4 > next {
            match l.take(&a, &rule, 2) {
                Take::Admit(w) => assert_eq!(w.remaining, 9_999 - 416 + held - 1),
                other => panic!("{other:?}"),
            }
            held -= 1;
        }
        let renewal = ask(l.take(&a, &rule, 3));
        assert_eq!((renewal.lease, l.tokens), (next, held));
        // Meanwhile the others spend what is held.
        assert!(matches!(l.take(&a, &rule, 4), Take::Admit(_)));
        l.granted(&renewal, 9_999 - 416 - next);
        assert_eq!(l.tokens, held - 1 + next - 1);
    }

    #[test]
    fn leases_shrink_to_one_hit_and_stop_at_max_lease() {
        assert_eq!(RULE.size(UNKNOWN), 1);
        assert_eq!(RULE.size(47), 1);
        assert_eq!(RULE.size(48), 2);
        assert_eq!(RULE.size(0), 1);
        assert_eq!(RULE.size(1_000_000), 100);
        let one = LeaseRule {
            max_lease: 1,
            ..RULE
        };
        assert_eq!(one.size(1_000_000), 1);
    }

    #[test]
    fn a_second_ask_beside_a_lease_in_flight_is_one_hit() {
        let a = account(10_000);
        let mut l = fresh(&a);
        let first = ask(l.take(&a, &RULE, 0));
        l.granted(&first, 9_000);
        let big = ask(l.take(&a, &RULE, 100));
        assert!(big.lease > 1);
        assert_eq!(ask(l.take(&a, &RULE, 110)).lease, 1, "within ask_ms");
        assert!(ask(l.take(&a, &RULE, 121)).lease > 1, "the first timed out");
        l.granted(&big, 8_000);
        assert!(matches!(l.take(&a, &RULE, 122), Take::Admit(_)));
    }

    #[test]
    fn hits_held_are_spent_when_the_service_refuses_or_fails() {
        let a = account(10_000);
        let mut l = fresh(&a);
        let x = ask(l.take(&a, &RULE, 0));
        l.granted(&x, 9_000);
        let big = ask(l.take(&a, &RULE, 1));
        l.granted(&big, 4_000);
        l.tokens = 3;
        let renewal = ask(l.take(&a, &RULE, 2));
        assert!(l.refused(&renewal).allowed, "a hit held admits it");
        assert_eq!(l.tokens, 2);
        assert!(matches!(l.take(&a, &RULE, 3), Take::Admit(_)));
        assert!(matches!(l.take(&a, &RULE, 3), Take::Admit(_)));
        assert!(matches!(l.take(&a, &RULE, 3), Take::Refuse(_)));
        let mut l = fresh(&a);
        let x = ask(l.take(&a, &RULE, 0));
        l.granted(&x, 9_000);
        let big = ask(l.take(&a, &RULE, 1));
        l.granted(&big, 4_000);
        l.tokens = 1;
        let renewal = ask(l.take(&a, &RULE, 2));
        assert!(l.unanswered(&renewal).is_some());
        assert_eq!(l.unanswered(&renewal), None, "none held");
    }

    #[test]
    fn a_refusal_spends_the_window_without_more_calls() {
        let a = account(40);
        let mut l = fresh(&a);
        let x = ask(l.take(&a, &RULE, 0));
        let w = l.refused(&x);
        assert!(!w.allowed && w.remaining == 0);
        assert_eq!(w.reset_at, 11 * WINDOW_SECONDS);
        assert!(matches!(l.take(&a, &RULE, 1), Take::Refuse(w) if !w.allowed));
    }

    #[test]
    fn an_outage_admits_this_replicas_share_of_what_was_left_then_owes_it() {
        let a = account(40);
        let mut l = fresh(&a);
        let x = ask(l.take(&a, &RULE, 0));
        l.granted(&x, 30);
        let mut admitted = 0;
        for t in 1..=20 {
            let x = ask(l.take(&a, &RULE, t));
            if failed(&mut l, &x).allowed {
                admitted += 1;
            }
        }
        assert_eq!(admitted, 10, "30 left over 3 replicas");
        let back = ask(l.take(&a, &RULE, 30));
        assert_eq!((back.lease, back.owed), (1, 10));
        l.granted(&back, 19);
        assert_eq!(l.owed, 0);
        assert_eq!(l.outage_left, UNKNOWN, "heard again: the outage is over");
    }

    #[test]
    fn an_outage_share_leaves_out_what_the_others_likely_spent_since() {
        let rule = LeaseRule {
            max_lease: 1_000,
            ..RULE
        };
        let a = account(10_000);
        let mut l = fresh(&a);
        let x = ask(l.take(&a, &rule, 0));
        l.granted(&x, 9_000);
        let lease = ask(l.take(&a, &rule, 1));
        assert_eq!(lease.lease, 375);
        l.granted(&lease, 8_000);
        for _ in 0..100 {
            assert!(matches!(l.take(&a, &rule, 2), Take::Admit(_)));
        }
        // Tokens spent, say, and the service gone: 100 spent here since it
        // was heard, likely 100 by each other replica: 7,800 left, a third
        // here besides the 274 tokens held.
        l.tokens = 0;
        let y = ask(l.take(&a, &rule, 3));
        failed(&mut l, &y);
        assert_eq!(l.outage_left, 7_800 / 3 - 1);
    }

    #[test]
    fn owed_hits_go_back_when_the_ask_fails_again() {
        let a = account(40);
        let mut l = fresh(&a);
        let x = ask(l.take(&a, &RULE, 0));
        failed(&mut l, &x);
        let y = ask(l.take(&a, &RULE, 1));
        assert_eq!(y.owed, 1);
        failed(&mut l, &y);
        assert_eq!(l.owed, 2);
    }

    #[test]
    fn an_outage_before_anything_was_heard_shares_the_limit() {
        let a = account(40);
        let mut l = fresh(&a);
        let admitted = (0..20)
            .filter(|t| {
                let x = ask(l.take(&a, &RULE, *t));
                failed(&mut l, &x).allowed
            })
            .count();
        assert_eq!(admitted, 13);
    }

    #[test]
    fn another_window_key_or_limit_starts_afresh_and_junk_reads_as_nothing() {
        let a = account(40);
        let mut l = fresh(&a);
        let x = ask(l.take(&a, &RULE, 0));
        l.refused(&x);
        let bytes = l.encode();
        assert_eq!(Lease::read(Some(&bytes), &a), l);
        let next_hour = Account::new("s", b"k_1", 40, 11 * WINDOW_SECONDS);
        let other_key = Account::new("s", b"k_2", 40, 10 * WINDOW_SECONDS);
        let raised = account(400);
        for b in [next_hour, other_key, raised] {
            assert_eq!(Lease::read(Some(&bytes), &b), fresh(&b));
        }
        assert_eq!(Lease::read(Some(b"junk"), &a), fresh(&a));
    }
}
