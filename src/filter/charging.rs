//! `rate_limit.mode: global`: once its key is accepted, a request is
//! admitted from this process's lease of the key's hits, or refused if the
//! service said the window is spent, or else the rate limit service is asked
//! to count a new lease (`limits::lease`), one `ShouldRateLimit` call. A
//! stream that led a key-service callout also asks for the streams that
//! waited on it, from its own context (the only one the SDK will route the
//! replies to), and lives until those replies are in: its own outcome waits
//! for them.

use super::{Charge, ChargeCall, Decided, Outcome, State, Stream, Waiter};
use crate::config::FailureMode;
use crate::host::Host;
use crate::limits::global::{self, Answer};
use crate::limits::lease::{Account, Ask, Lease, Take};
use crate::observability::metrics::Counter;
use crate::outcome::denial::Denial;
use crate::types::GrpcCall;
use crate::verdict::key_service::Identity;
use std::borrow::Cow;
use std::rc::Rc;

/// gRPC status OK.
const GRPC_OK: u32 = 0;
/// A `RateLimitResponse` for one descriptor is a few dozen bytes.
const MAX_REPLY_BYTES: usize = 4096;
/// How many bytes of the key's digest name a key without a `key_id`.
const OWNER_HASH_BYTES: usize = 8;

impl ChargeCall {
    /// Hands the reply (None: no answer) to the stream it charges.
    fn hand_reply<H: Host>(&self, host: &H, reply: Option<Vec<u8>>) {
        let Some(stream) = self.stream.upgrade() else {
            return;
        };
        if !host.switch_to(self.member) {
            return;
        }
        if let Ok(mut s) = stream.try_borrow_mut() {
            s.charged(host, reply);
        };
    }
}

impl Stream {
    /// Admits or refuses from this process's lease, or says what to ask.
    pub(super) fn take_lease<H: Host>(&mut self, host: &H, id: Rc<Identity>) -> Decided {
        let worker = Rc::clone(&self.worker);
        let Some(limit) = worker.cfg.policy_at(self.policy).rate_limit.as_ref() else {
            return Decided::Now(Ok(id));
        };
        let Some(global) = limit.global.as_ref() else {
            return Decided::Now(Ok(id));
        };
        let per_hour = id.rate_limit_per_hour.unwrap_or(limit.default_per_hour);
        let now_s = self.now_ms / 1000;
        let account = Account::new(&limit.scope, self.owner(&id).as_bytes(), per_hour, now_s);
        let now_ms = self.now_ms;
        let taken = worker.leases.update(host, &account, |l: &mut Lease| {
            l.take(&account, &global.lease, now_ms)
        });
        let ask = match taken {
            Ok(Take::Admit(window)) => {
                host.count(Counter::RateLimitLeased);
                self.window = Some(window);
                return Decided::Now(Ok(id));
            }
            Ok(Take::Refuse(window)) => {
                return Decided::Now(Err(Denial::RateLimited { window, now_s }));
            }
            Ok(Take::Ask(ask)) => ask,
            // Nothing was stored: one hit, counted by the service, is safe.
            Err(_) => Ask {
                account,
                lease: 1,
                owed: 0,
            },
        };
        Decided::Charge(Charge { id, ask })
    }

    /// Asks the rate limit service to charge this request, from this
    /// stream's context; if it cannot be asked, the failure mode decides.
    pub(super) fn charge_globally<H: Host>(
        &mut self,
        host: &H,
        charge: Charge,
        resumed: bool,
    ) -> super::Flow {
        self.state = State::Charging(charge);
        if let Some(token) = self.send_charge(host) {
            self.hold(token, self.id, self.me.clone());
            return super::Flow::Pause;
        }
        let State::Charging(charge) = std::mem::replace(&mut self.state, State::Done) else {
            return super::Flow::Pause;
        };
        host.count(Counter::RateLimitError);
        let outcome = self.uncharged(host, charge);
        if resumed {
            self.act_or_defer(host, outcome);
            super::Flow::Pause
        } else {
            self.act(host, outcome, false)
        }
    }

    /// Asks, from this (the current) context, for the waiters a callout's
    /// verdict left to be charged.
    pub(super) fn charge_for_waiters<H: Host>(&mut self, host: &H, waiters: Vec<(u32, Waiter)>) {
        for (ctx, waiter) in waiters {
            let Some(stream) = waiter.upgrade() else {
                continue;
            };
            let token = match stream.try_borrow() {
                Ok(s) => s.send_charge(host),
                Err(_) => continue,
            };
            match token {
                Some(token) => {
                    self.held += 1;
                    self.hold(token, ctx, waiter);
                }
                None => {
                    let call = ChargeCall {
                        owner: self.id,
                        member: ctx,
                        stream: waiter,
                    };
                    call.hand_reply(host, None);
                    host.switch_to(self.id);
                }
            }
        }
    }

    fn hold(&self, token: u32, member: u32, stream: Waiter) {
        let call = ChargeCall {
            owner: self.id,
            member,
            stream,
        };
        self.worker.charges.borrow_mut().insert(token, call);
    }

    /// Sends the `ShouldRateLimit` call charging this (Charging) stream, from
    /// whichever context is current.
    fn send_charge<H: Host>(&self, host: &H) -> Option<u32> {
        let State::Charging(charge) = &self.state else {
            return None;
        };
        let worker = Rc::clone(&self.worker);
        let limit = worker.cfg.policy_at(self.policy).rate_limit.as_ref()?;
        let global = limit.global.as_ref()?;
        let message = global::request(
            &global.domain,
            &limit.scope,
            &self.owner(&charge.id),
            charge.ask.account.limit(),
            charge.ask.hits(),
        );
        host.count(Counter::RateLimitCall);
        let token = host.dispatch_grpc(&GrpcCall {
            cluster: &global.cluster,
            target: &global.target,
            service: global::SERVICE,
            method: global::METHOD,
            message: &message,
            timeout: global.timeout,
        });
        if token.is_none() {
            log::warn!(
                "hokusai-auth: rate limit service cluster '{}' refused the call",
                global.cluster
            );
        }
        token
    }

    /// Whom the service charges: the `key_id`, else a short hash of the key
    /// (borrowed where it can be: a request spent from a lease needs no copy).
    fn owner<'a>(&self, id: &'a Identity) -> Cow<'a, str> {
        match (&id.key_id, &self.digest) {
            (Some(k), _) => Cow::Borrowed(k),
            (None, Some(d)) => {
                Cow::Owned(hex::encode(d.get(..OWNER_HASH_BYTES).unwrap_or_default()))
            }
            (None, None) => Cow::Borrowed(""),
        }
    }

    /// A rate limit call's reply reached this context.
    pub fn on_charge_reply<H: Host>(&mut self, host: &H, token: u32, status: u32, size: usize) {
        let Some(call) = self.worker.charges.borrow_mut().remove(&token) else {
            return;
        };
        let reply = (status == GRPC_OK && size <= MAX_REPLY_BYTES)
            .then(|| host.grpc_reply(size, MAX_REPLY_BYTES));
        if call.member == self.id {
            self.charged(host, reply);
            return;
        }
        call.hand_reply(host, reply);
        host.switch_to(self.id);
        self.held = self.held.saturating_sub(1);
        if self.held == 0 {
            if let Some(outcome) = self.deferred.take() {
                self.act(host, outcome, true);
            }
        }
    }

    /// What the service's reply (None: none) says of this stream.
    fn charged<H: Host>(&mut self, host: &H, reply: Option<Vec<u8>>) {
        let State::Charging(charge) = std::mem::replace(&mut self.state, State::Done) else {
            return;
        };
        self.now_ms = host.now_ms();
        let now_s = self.now_ms / 1000;
        let answer = reply
            .as_deref()
            .and_then(|body| global::answer(body, charge.ask.account.limit(), now_s));
        let leases = &self.worker.leases;
        let ask = charge.ask;
        let outcome = match answer {
            Some(Answer::Charged(service)) if service.allowed => {
                let held =
                    leases.update(host, &ask.account, |l| l.granted(&ask, service.remaining));
                self.window = Some(held.unwrap_or_else(|w| w));
                Ok(charge.id)
            }
            Some(Answer::Charged(window)) => {
                // A hit held (counted before) still admits the request.
                let held = leases.update(host, &ask.account, |l| l.refused(&ask));
                match held {
                    Ok(w) if w.allowed => {
                        self.window = Some(w);
                        Ok(charge.id)
                    }
                    _ => Err(Denial::RateLimited { window, now_s }),
                }
            }
            Some(Answer::NotLimited) => {
                host.count(Counter::RateLimitNotApplied);
                Ok(charge.id)
            }
            None => {
                host.count(Counter::RateLimitError);
                self.uncharged(host, charge)
            }
        };
        self.act_or_defer(host, outcome);
    }

    /// The rate limit service did not charge the request: a hit this
    /// process holds admits it, else the route's `failure_mode` decides;
    /// `local` admits from this process's share of what the fleet had left
    /// when the service was last heard.
    pub(super) fn uncharged<H: Host>(&mut self, host: &H, charge: Charge) -> Outcome {
        let worker = Rc::clone(&self.worker);
        let Some(global) = worker
            .cfg
            .policy_at(self.policy)
            .rate_limit
            .as_ref()
            .and_then(|l| l.global.as_ref())
        else {
            return Ok(charge.id);
        };
        let ask = charge.ask;
        // Hits held were counted before: they admit the request first.
        let held = worker
            .leases
            .update(host, &ask.account, |l| l.unanswered(&ask));
        if let Ok(Some(window)) = held {
            self.window = Some(window);
            return Ok(charge.id);
        }
        match global.failure_mode {
            FailureMode::Local => {
                host.count(Counter::RateLimitFallbackLocal);
                let shared = worker.leases.update(host, &ask.account, |l| {
                    l.share_outage(&ask.account, &global.lease)
                });
                let window = shared.unwrap_or_else(|w| w);
                if !window.allowed {
                    let now_s = self.now_ms / 1000;
                    return Err(Denial::RateLimited { window, now_s });
                }
                self.window = Some(window);
                Ok(charge.id)
            }
            FailureMode::Allow => {
                host.count(Counter::RateLimitFallbackAllow);
                Ok(charge.id)
            }
            FailureMode::Deny => {
                host.count(Counter::RateLimitFallbackDeny);
                Err(Denial::LimitUnavailable)
            }
        }
    }

    /// This context is going away: Envoy cancels its calls, so the streams
    /// they charged get the failure mode's outcome now.
    pub(super) fn abandon_charges<H: Host>(&mut self, host: &H) {
        let me = self.id;
        let calls: Vec<ChargeCall> = {
            let mut charges = self.worker.charges.borrow_mut();
            if charges.is_empty() {
                return;
            }
            let mine: Vec<u32> = charges
                .iter()
                .filter(|(_, c)| c.owner == me)
                .map(|(t, _)| *t)
                .collect();
            mine.iter().filter_map(|t| charges.remove(t)).collect()
        };
        let others: Vec<&ChargeCall> = calls.iter().filter(|c| c.member != me).collect();
        for call in &others {
            call.hand_reply(host, None);
        }
        if !others.is_empty() {
            host.switch_to(me);
        }
        self.held = 0;
        self.deferred = None;
    }
}
