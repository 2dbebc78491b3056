//! A stand-in for envoyproxy/ratelimit with its Redis backend: the same gRPC
//! protocol (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`)
//! and the same counting, so the filter's global mode is tested against what
//! production runs. What it copies from envoyproxy/ratelimit
//! (src/config/config_impl.go, src/limiter/, src/redis/fixed_cache_impl.go):
//!
//! - a request for a domain the service is not configured with gets OK with
//!   no limit applied;
//! - a descriptor's `limit` override is the limit, with no per-key config;
//!   a descriptor without one matches nothing here (no rules file) and gets
//!   OK with no limit;
//! - fixed windows aligned to the wall clock: the Redis key is
//!   `<domain>_<key>_<value>_…_<window start in unix seconds>`, counted with
//!   `INCRBY hits` and `EXPIRE <unit in seconds>` in one pipeline;
//! - over the limit when the count after this request exceeds it (the hit is
//!   counted either way); `limit_remaining` is what is left after it and
//!   `duration_until_reset` the rest of the window;
//! - `hits_addend` 0 means 1.
//!
//! Redis unreachable or failing: the call fails with gRPC UNAVAILABLE, as
//! envoyproxy/ratelimit's does, and the next call connects again.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use envoy_types::pb::envoy::extensions::common::ratelimit::v3::RateLimitDescriptor;
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
    rate_limit::Unit, Code, DescriptorStatus, RateLimit,
};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_service_server::{
    RateLimitService, RateLimitServiceServer,
};
use envoy_types::pb::envoy::service::ratelimit::v3::{RateLimitRequest, RateLimitResponse};
use redis::aio::MultiplexedConnection;
use tokio::net::TcpListener;
use tokio::sync::Mutex;
use tonic::{Request, Response, Status};

/// How long one Redis step (connect, or the pipeline) may take before the
/// call fails: well under the filter's own timeout is not needed, only a bound.
const REDIS_TIMEOUT: Duration = Duration::from_millis(500);

pub struct Limiter {
    domain: String,
    redis: redis::Client,
    connection: Mutex<Option<MultiplexedConnection>>,
}

impl Limiter {
    pub fn new(domain: String, redis_url: &str) -> Result<Self, String> {
        let redis =
            redis::Client::open(redis_url).map_err(|e| format!("--redis {redis_url}: {e}"))?;
        Ok(Limiter {
            domain,
            redis,
            connection: Mutex::new(None),
        })
    }

    /// The shared connection, connecting when there is none.
    async fn connection(&self) -> Result<MultiplexedConnection, Status> {
        let mut slot = self.connection.lock().await;
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let connect = self.redis.get_multiplexed_async_connection();
        let fresh = tokio::time::timeout(REDIS_TIMEOUT, connect)
            .await
            .map_err(|_| unavailable("redis connect timed out"))?
            .map_err(|e| unavailable(&format!("redis connect: {e}")))?;
        *slot = Some(fresh.clone());
        Ok(fresh)
    }

    /// `INCRBY` + `EXPIRE` in one pipeline; the count after this request.
    async fn increment(&self, key: &str, hits: u64, expire_s: u64) -> Result<u64, Status> {
        let mut conn = self.connection().await?;
        let mut pipe = redis::pipe();
        pipe.cmd("INCRBY").arg(key).arg(hits);
        pipe.cmd("EXPIRE").arg(key).arg(expire_s).ignore();
        let step = pipe.query_async::<(u64,)>(&mut conn);
        let outcome = match tokio::time::timeout(REDIS_TIMEOUT, step).await {
            Ok(Ok((after,))) => return Ok(after),
            Ok(Err(e)) => format!("redis: {e}"),
            Err(_) => "redis timed out".to_string(),
        };
        // Drop the connection so the next call connects again.
        *self.connection.lock().await = None;
        Err(unavailable(&outcome))
    }

    async fn status(
        &self,
        domain_known: bool,
        descriptor: &RateLimitDescriptor,
        hits: u64,
        now_s: u64,
    ) -> Result<DescriptorStatus, Status> {
        let limit = match (domain_known, descriptor.limit.as_ref()) {
            (true, Some(limit)) => limit,
            _ => return Ok(not_limited()),
        };
        let Some(unit_s) = unit_seconds(limit.unit) else {
            return Ok(not_limited());
        };
        let window_start = now_s / unit_s * unit_s;
        let key = cache_key(&self.domain, descriptor, window_start);
        let after = self.increment(&key, hits, unit_s).await?;
        let allowed = after <= u64::from(limit.requests_per_unit);
        let remaining = u64::from(limit.requests_per_unit).saturating_sub(after);
        Ok(DescriptorStatus {
            code: if allowed { Code::Ok } else { Code::OverLimit } as i32,
            current_limit: Some(RateLimit {
                name: String::new(),
                requests_per_unit: limit.requests_per_unit,
                unit: limit.unit,
            }),
            limit_remaining: u32::try_from(remaining).unwrap_or(u32::MAX),
            duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                seconds: i64::try_from(window_start + unit_s - now_s).unwrap_or(i64::MAX),
                nanos: 0,
            }),
            quota: None,
        })
    }
}

#[tonic::async_trait]
impl RateLimitService for Limiter {
    async fn should_rate_limit(
        &self,
        request: Request<RateLimitRequest>,
    ) -> Result<Response<RateLimitResponse>, Status> {
        let request = request.into_inner();
        let domain_known = request.domain == self.domain;
        let hits = u64::from(request.hits_addend.max(1));
        let now_s = unix_now();
        let mut statuses = Vec::with_capacity(request.descriptors.len());
        for descriptor in &request.descriptors {
            statuses.push(self.status(domain_known, descriptor, hits, now_s).await?);
        }
        let over = statuses.iter().any(|s| s.code == Code::OverLimit as i32);
        Ok(Response::new(RateLimitResponse {
            overall_code: if over { Code::OverLimit } else { Code::Ok } as i32,
            statuses,
            ..Default::default()
        }))
    }
}

/// The Redis key, as envoyproxy/ratelimit builds it (no key prefix).
fn cache_key(domain: &str, descriptor: &RateLimitDescriptor, window_start: u64) -> String {
    let mut key = format!("{domain}_");
    for entry in &descriptor.entries {
        key.push_str(&entry.key);
        key.push('_');
        key.push_str(&entry.value);
        key.push('_');
    }
    key.push_str(&window_start.to_string());
    key
}

/// envoyproxy/ratelimit's unit dividers; None for UNKNOWN.
fn unit_seconds(unit: i32) -> Option<u64> {
    match Unit::try_from(unit).ok()? {
        Unit::Second => Some(1),
        Unit::Minute => Some(60),
        Unit::Hour => Some(3600),
        Unit::Day => Some(86_400),
        Unit::Week => Some(604_800),
        Unit::Month => Some(2_592_000),
        Unit::Year => Some(31_536_000),
        Unit::Unknown => None,
    }
}

fn not_limited() -> DescriptorStatus {
    DescriptorStatus {
        code: Code::Ok as i32,
        ..Default::default()
    }
}

fn unavailable(why: &str) -> Status {
    eprintln!("hokusai-standin ratelimit: {why}");
    Status::unavailable(why.to_string())
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Serves the protocol on `listener` over HTTP/2 until the process stops.
pub async fn serve(listener: TcpListener, limiter: Limiter) -> Result<(), String> {
    // TCP_NODELAY, as envoyproxy/ratelimit has it (Go sets it on every TCP
    // connection). `serve_with_incoming` ignores the builder's `tcp_nodelay`
    // and `TcpIncoming::from` leaves it off, so Nagle held a reply behind a
    // small h2 frame written just before it (a WINDOW_UPDATE) until Envoy's
    // delayed ACK, about 40 ms later.
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    tonic::transport::Server::builder()
        .add_service(RateLimitServiceServer::new(limiter))
        .serve_with_incoming(incoming)
        .await
        .map_err(|e| format!("rate limit service: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3::rate_limit_descriptor::{
        Entry, RateLimitOverride,
    };

    fn descriptor(limit: Option<u32>) -> RateLimitDescriptor {
        RateLimitDescriptor {
            entries: vec![
                Entry {
                    key: "scope".into(),
                    value: "platform@auth".into(),
                },
                Entry {
                    key: "key_id".into(),
                    value: "k_1".into(),
                },
            ],
            limit: limit.map(|n| RateLimitOverride {
                requests_per_unit: n,
                unit: Unit::Hour as i32,
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_key_is_envoyproxy_ratelimits() {
        assert_eq!(
            cache_key("hokusai-mlflow", &descriptor(None), 1_700_000_000),
            "hokusai-mlflow_scope_platform@auth_key_id_k_1_1700000000"
        );
    }

    #[test]
    fn units_are_its_dividers() {
        assert_eq!(unit_seconds(Unit::Hour as i32), Some(3600));
        assert_eq!(unit_seconds(Unit::Week as i32), Some(604_800));
        assert_eq!(unit_seconds(0), None);
        assert_eq!(unit_seconds(99), None);
    }

    /// Without Redis: an unknown domain or a descriptor without an override
    /// gets OK and no limit, and never touches Redis (the URL is dead).
    #[tokio::test]
    async fn no_override_or_another_domain_is_not_limited() {
        let limiter = Limiter::new("hokusai-mlflow".into(), "redis://127.0.0.1:1/").unwrap();
        for (domain_known, d) in [(false, descriptor(Some(1))), (true, descriptor(None))] {
            let s = limiter.status(domain_known, &d, 1, 1000).await.unwrap();
            assert_eq!(s.code, Code::Ok as i32);
            assert_eq!(s.current_limit, None);
        }
    }

    #[tokio::test]
    async fn redis_down_is_unavailable() {
        let limiter = Limiter::new("hokusai-mlflow".into(), "redis://127.0.0.1:1/").unwrap();
        let err = limiter
            .status(true, &descriptor(Some(5)), 1, 1000)
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable);
    }
}
