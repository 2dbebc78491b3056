//! The filter's Envoy stats, as one table: Envoy shows each counter as
//! `wasmcustom.hokusai_auth.<name>`.

macro_rules! counters {
    ($($counter:ident => $name:literal,)*) => {
        /// Counters, one per decision and cache or callout outcome.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum Counter {
            $($counter,)*
        }

        impl Counter {
            /// Every counter, in declaration order (`index` is the position).
            pub const ALL: &'static [Counter] = &[$(Counter::$counter,)*];

            pub fn name(self) -> &'static str {
                match self {
                    $(Counter::$counter => concat!("hokusai_auth.", $name),)*
                }
            }
        }
    };
}

counters! {
    Public => "public",
    NotEnforced => "not_enforced",
    Anonymous => "anonymous",
    Allowed => "allowed",
    Whoami => "whoami",
    UnknownEndpoint => "endpoint.unknown",
    DeniedBadRequest => "denied.bad_request",
    DeniedUnauthenticated => "denied.unauthenticated",
    DeniedInvalidKey => "denied.invalid_key",
    DeniedForbidden => "denied.forbidden",
    DeniedRateLimited => "denied.rate_limited",
    DeniedAuthRateLimited => "denied.auth_rate_limited",
    Unavailable => "denied.unavailable",
    CacheHit => "cache.hit",
    CacheMiss => "cache.miss",
    CacheStaleServed => "cache.stale_served",
    CacheRefresh => "cache.refresh",
    CacheRefreshFailed => "cache.refresh_failed",
    SingleFlightWait => "single_flight.wait",
    SingleFlightAbandoned => "single_flight.abandoned",
    Callout => "callout.total",
    CalloutErrorDispatch => "callout.error.dispatch",
    CalloutErrorNoReply => "callout.error.no_reply",
    CalloutErrorStatus => "callout.error.bad_status",
    CalloutErrorTooLarge => "callout.error.too_large",
    CalloutErrorNotJsonObject => "callout.error.not_json_object",
    CalloutErrorBadFields => "callout.error.bad_fields",
    RateLimitCall => "ratelimit.call",
    RateLimitLeased => "ratelimit.leased",
    RateLimitError => "ratelimit.error",
    RateLimitNotApplied => "ratelimit.not_applied",
    RateLimitFallbackLocal => "ratelimit.fallback.local",
    RateLimitFallbackAllow => "ratelimit.fallback.allow",
    RateLimitFallbackDeny => "ratelimit.fallback.deny",
}

/// Histogram of callout latency in milliseconds.
pub const CALLOUT_LATENCY: &str = "hokusai_auth.callout_latency_ms";

impl Counter {
    pub fn index(self) -> usize {
        self as usize
    }
}

/// A kind of stat a host defines.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatKind {
    Counter,
    Histogram,
}

/// The ids a host gave the filter's stats (`I`: its own id type), each
/// counter at its `Counter::index`; None where the host refused one.
#[derive(Debug)]
pub struct StatIds<I> {
    counters: Vec<Option<I>>,
    latency: Option<I>,
}

impl<I: Copy> StatIds<I> {
    /// Defines every stat with the host's `define`.
    pub fn define(mut define: impl FnMut(StatKind, &str) -> Option<I>) -> Self {
        StatIds {
            counters: Counter::ALL
                .iter()
                .map(|c| define(StatKind::Counter, c.name()))
                .collect(),
            latency: define(StatKind::Histogram, CALLOUT_LATENCY),
        }
    }

    pub fn counter(&self, c: Counter) -> Option<I> {
        self.counters.get(c.index()).copied().flatten()
    }

    pub fn latency(&self) -> Option<I> {
        self.latency
    }

    /// Every counter's id, in `Counter::ALL` order.
    pub fn counters(&self) -> impl Iterator<Item = Option<I>> + '_ {
        self.counters.iter().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_listed_once_in_order() {
        for (i, c) in Counter::ALL.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let mut names: Vec<_> = Counter::ALL.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), Counter::ALL.len());
        assert_eq!(
            Counter::Unavailable.name(),
            "hokusai_auth.denied.unavailable"
        );
    }

    #[test]
    fn stat_ids_follow_the_counter_table() {
        let mut names = Vec::new();
        let ids = StatIds::define(|kind, name| {
            names.push((kind, name.to_string()));
            (name != Counter::Allowed.name()).then_some(names.len())
        });
        assert_eq!(names.len(), Counter::ALL.len() + 1);
        assert_eq!(names.last().map(|n| n.0), Some(StatKind::Histogram));
        assert_eq!(ids.counter(Counter::Allowed), None, "refused by the host");
        assert_eq!(ids.counter(Counter::Public), Some(1));
        assert_eq!(ids.latency(), Some(names.len()));
        assert_eq!(ids.counters().count(), Counter::ALL.len());
    }
}
