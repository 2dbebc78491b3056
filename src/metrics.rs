//! The filter's Envoy stats. Envoy shows them as `wasmcustom.<name>`.

/// Counters, one per decision and cache or callout outcome.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Counter {
    Public,
    Allowed,
    DeniedBadRequest,
    DeniedUnauthenticated,
    DeniedInvalidKey,
    DeniedForbidden,
    DeniedRateLimited,
    DeniedAuthRateLimited,
    Unavailable,
    CacheHit,
    CacheMiss,
    CacheStaleServed,
    SingleFlightWait,
    SingleFlightAbandoned,
    Callout,
    CalloutErrorDispatch,
    CalloutErrorNoReply,
    CalloutErrorStatus,
    CalloutErrorTooLarge,
    CalloutErrorNotJsonObject,
    CalloutErrorBadFields,
}

pub const COUNTERS: [Counter; 21] = [
    Counter::Public,
    Counter::Allowed,
    Counter::DeniedBadRequest,
    Counter::DeniedUnauthenticated,
    Counter::DeniedInvalidKey,
    Counter::DeniedForbidden,
    Counter::DeniedRateLimited,
    Counter::DeniedAuthRateLimited,
    Counter::Unavailable,
    Counter::CacheHit,
    Counter::CacheMiss,
    Counter::CacheStaleServed,
    Counter::SingleFlightWait,
    Counter::SingleFlightAbandoned,
    Counter::Callout,
    Counter::CalloutErrorDispatch,
    Counter::CalloutErrorNoReply,
    Counter::CalloutErrorStatus,
    Counter::CalloutErrorTooLarge,
    Counter::CalloutErrorNotJsonObject,
    Counter::CalloutErrorBadFields,
];

/// Histogram of callout latency in milliseconds.
pub const CALLOUT_LATENCY: &str = "hokusai_auth.callout_latency_ms";

impl Counter {
    pub fn name(self) -> &'static str {
        match self {
            Self::Public => "hokusai_auth.public",
            Self::Allowed => "hokusai_auth.allowed",
            Self::DeniedBadRequest => "hokusai_auth.denied.bad_request",
            Self::DeniedUnauthenticated => "hokusai_auth.denied.unauthenticated",
            Self::DeniedInvalidKey => "hokusai_auth.denied.invalid_key",
            Self::DeniedForbidden => "hokusai_auth.denied.forbidden",
            Self::DeniedRateLimited => "hokusai_auth.denied.rate_limited",
            Self::DeniedAuthRateLimited => "hokusai_auth.denied.auth_rate_limited",
            Self::Unavailable => "hokusai_auth.denied.unavailable",
            Self::CacheHit => "hokusai_auth.cache.hit",
            Self::CacheMiss => "hokusai_auth.cache.miss",
            Self::CacheStaleServed => "hokusai_auth.cache.stale_served",
            Self::SingleFlightWait => "hokusai_auth.single_flight.wait",
            Self::SingleFlightAbandoned => "hokusai_auth.single_flight.abandoned",
            Self::Callout => "hokusai_auth.callout.total",
            Self::CalloutErrorDispatch => "hokusai_auth.callout.error.dispatch",
            Self::CalloutErrorNoReply => "hokusai_auth.callout.error.no_reply",
            Self::CalloutErrorStatus => "hokusai_auth.callout.error.bad_status",
            Self::CalloutErrorTooLarge => "hokusai_auth.callout.error.too_large",
            Self::CalloutErrorNotJsonObject => "hokusai_auth.callout.error.not_json_object",
            Self::CalloutErrorBadFields => "hokusai_auth.callout.error.bad_fields",
        }
    }

    pub fn index(self) -> usize {
        self as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_counter_is_listed_once_in_order() {
        for (i, c) in COUNTERS.iter().enumerate() {
            assert_eq!(c.index(), i);
        }
        let mut names: Vec<_> = COUNTERS.iter().map(|c| c.name()).collect();
        names.sort();
        names.dedup();
        assert_eq!(names.len(), COUNTERS.len());
    }
}
