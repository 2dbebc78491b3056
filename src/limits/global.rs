//! Envoy's rate limit service protocol
//! (`envoy.service.ratelimit.v3.RateLimitService/ShouldRateLimit`), the part
//! the filter speaks: one descriptor per request, naming the limit scope and
//! the key (by `key_id`, else a hash: never the key), with the key's own
//! hourly limit as the descriptor's limit override. The messages are declared
//! here by hand with only the fields used (the wire format skips the rest);
//! a test checks them against the generated ones of `envoy-types`.

use crate::types::Window;
use prost::Message;

pub const SERVICE: &str = "envoy.service.ratelimit.v3.RateLimitService";
pub const METHOD: &str = "ShouldRateLimit";

/// `envoy.type.v3.RateLimitUnit.HOUR`.
const HOUR: i32 = 3;
/// `RateLimitResponse.Code`.
const OK: i32 = 1;
const OVER_LIMIT: i32 = 2;

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitRequest {
    #[prost(string, tag = "1")]
    pub domain: String,
    #[prost(message, repeated, tag = "2")]
    pub descriptors: Vec<RateLimitDescriptor>,
    #[prost(uint32, tag = "3")]
    pub hits_addend: u32,
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitDescriptor {
    #[prost(message, repeated, tag = "1")]
    pub entries: Vec<Entry>,
    #[prost(message, optional, tag = "2")]
    pub limit: Option<LimitOverride>,
}

#[derive(Clone, PartialEq, Message)]
pub struct Entry {
    #[prost(string, tag = "1")]
    pub key: String,
    #[prost(string, tag = "2")]
    pub value: String,
}

#[derive(Clone, PartialEq, Message)]
pub struct LimitOverride {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

#[derive(Clone, PartialEq, Message)]
pub struct RateLimitResponse {
    #[prost(int32, tag = "1")]
    pub overall_code: i32,
    #[prost(message, repeated, tag = "2")]
    pub statuses: Vec<DescriptorStatus>,
}

#[derive(Clone, PartialEq, Message)]
pub struct DescriptorStatus {
    #[prost(int32, tag = "1")]
    pub code: i32,
    #[prost(message, optional, tag = "2")]
    pub current_limit: Option<CurrentLimit>,
    #[prost(uint32, tag = "3")]
    pub limit_remaining: u32,
    #[prost(message, optional, tag = "4")]
    pub duration_until_reset: Option<Duration>,
}

#[derive(Clone, PartialEq, Message)]
pub struct CurrentLimit {
    #[prost(uint32, tag = "1")]
    pub requests_per_unit: u32,
    #[prost(int32, tag = "2")]
    pub unit: i32,
}

/// `google.protobuf.Duration`.
#[derive(Clone, PartialEq, Message)]
pub struct Duration {
    #[prost(int64, tag = "1")]
    pub seconds: i64,
    #[prost(int32, tag = "2")]
    pub nanos: i32,
}

/// `envoy.config.core.v3.GrpcService`, only `envoy_grpc`.
#[derive(Clone, PartialEq, Message)]
pub struct GrpcService {
    #[prost(message, optional, tag = "1")]
    pub envoy_grpc: Option<EnvoyGrpc>,
}

#[derive(Clone, PartialEq, Message)]
pub struct EnvoyGrpc {
    #[prost(string, tag = "1")]
    pub cluster_name: String,
}

/// The gRPC target of `cluster`, serialized: Envoy reads a plain cluster name
/// only when the string does not parse as a `GrpcService`, which some names
/// do. None unless ASCII and short (the SDK passes it as a `&str`, and one
/// length byte keeps it so).
pub fn target(cluster: &str) -> Option<String> {
    if !cluster.is_ascii() || cluster.len() > 100 {
        return None;
    }
    let bytes = GrpcService {
        envoy_grpc: Some(EnvoyGrpc {
            cluster_name: cluster.to_string(),
        }),
    }
    .encode_to_vec();
    String::from_utf8(bytes).ok()
}

/// The request body: `hits` of `owner` in `scope` against `per_hour`.
pub fn request(domain: &str, scope: &str, owner: &str, per_hour: u64, hits: u64) -> Vec<u8> {
    RateLimitRequest {
        domain: domain.to_string(),
        descriptors: vec![RateLimitDescriptor {
            entries: vec![entry("scope", scope), entry("key_id", owner)],
            limit: Some(LimitOverride {
                requests_per_unit: u32::try_from(per_hour).unwrap_or(u32::MAX),
                unit: HOUR,
            }),
        }],
        hits_addend: u32::try_from(hits).unwrap_or(u32::MAX),
    }
    .encode_to_vec()
}

fn entry(key: &str, value: &str) -> Entry {
    Entry {
        key: key.to_string(),
        value: value.to_string(),
    }
}

/// What the service said, as the key's window.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// Counted: the window after this request (allowed or not).
    Charged(Window),
    /// Allowed, but the service applied no limit (its configuration lacks
    /// the domain): nothing to report.
    NotLimited,
}

/// Reads a reply; None when it is not one (the call then failed): also an
/// empty body or an UNKNOWN code, which say nothing about the limit.
pub fn answer(body: &[u8], per_hour: u64, now_s: u64) -> Option<Answer> {
    let reply = RateLimitResponse::decode(body).ok()?;
    if reply.overall_code != OK && reply.overall_code != OVER_LIMIT {
        return None;
    }
    let status = reply.statuses.first();
    let applied = status.and_then(|s| s.current_limit.as_ref()).is_some();
    if !applied && reply.overall_code != OVER_LIMIT {
        return Some(Answer::NotLimited);
    }
    let remaining = status.map_or(0, |s| u64::from(s.limit_remaining));
    let reset_in = status
        .and_then(|s| s.duration_until_reset.as_ref())
        .and_then(|d| u64::try_from(d.seconds).ok())
        .unwrap_or_else(|| crate::limits::local::window_end(now_s) - now_s);
    Some(Answer::Charged(Window {
        limit: per_hour,
        remaining,
        reset_at: now_s.saturating_add(reset_in),
        allowed: reply.overall_code != OVER_LIMIT,
    }))
}

/// Replies as the service sends them, built with `envoy-types`' generated
/// messages (for this file's tests and the filter's).
#[cfg(test)]
pub mod fixtures {
    use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::{
        rate_limit::Unit, Code, DescriptorStatus, RateLimit,
    };
    use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitResponse;
    use prost::Message;

    /// `remaining` of `per_hour` left after this hit (or over), `reset_s` to go.
    pub fn reply(over: bool, per_hour: u32, remaining: u32, reset_s: i64) -> Vec<u8> {
        let code = if over { Code::OverLimit } else { Code::Ok };
        RateLimitResponse {
            overall_code: code as i32,
            statuses: vec![DescriptorStatus {
                code: code as i32,
                current_limit: Some(RateLimit {
                    requests_per_unit: per_hour,
                    unit: Unit::Hour as i32,
                    ..Default::default()
                }),
                limit_remaining: remaining,
                duration_until_reset: Some(envoy_types::pb::google::protobuf::Duration {
                    seconds: reset_s,
                    nanos: 0,
                }),
                ..Default::default()
            }],
            ..Default::default()
        }
        .encode_to_vec()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use envoy_types::pb::envoy::extensions::common::ratelimit::v3 as common;
    use envoy_types::pb::envoy::service::ratelimit::v3 as rls;

    #[test]
    fn the_target_is_a_grpc_service_naming_the_cluster() {
        use envoy_types::pb::envoy::config::core::v3::{
            grpc_service::TargetSpecifier, GrpcService,
        };
        let t = target("hokusai_ratelimit").unwrap();
        let theirs = GrpcService::decode(t.as_bytes()).unwrap();
        match theirs.target_specifier {
            Some(TargetSpecifier::EnvoyGrpc(g)) => assert_eq!(g.cluster_name, "hokusai_ratelimit"),
            _ => panic!("not an envoy_grpc target"),
        }
        assert_eq!(target(&"c".repeat(101)), None);
        assert_eq!(target("clüster"), None);
    }

    #[test]
    fn the_request_is_what_envoy_types_encodes() {
        let ours = request("hokusai-mlflow", "platform@hokusai_auth", "k_1", 40, 1);
        let theirs = rls::RateLimitRequest::decode(ours.as_slice()).unwrap();
        assert_eq!(theirs.domain, "hokusai-mlflow");
        assert_eq!(theirs.hits_addend, 1);
        let d = &theirs.descriptors[0];
        let entries: Vec<(&str, &str)> = d
            .entries
            .iter()
            .map(|e| (e.key.as_str(), e.value.as_str()))
            .collect();
        assert_eq!(
            entries,
            [("scope", "platform@hokusai_auth"), ("key_id", "k_1")]
        );
        let limit = d.limit.as_ref().unwrap();
        assert_eq!(limit.requests_per_unit, 40);
        assert_eq!(
            limit.unit,
            envoy_types::pb::envoy::r#type::v3::RateLimitUnit::Hour as i32
        );
        // And byte for byte what the generated type writes.
        let again = rls::RateLimitRequest {
            domain: theirs.domain.clone(),
            descriptors: vec![common::RateLimitDescriptor {
                entries: d.entries.clone(),
                limit: d.limit,
                ..Default::default()
            }],
            hits_addend: 1,
        };
        assert_eq!(again.encode_to_vec(), ours);
    }

    #[test]
    fn replies_of_envoy_types_read_as_windows() {
        use rls::rate_limit_response::Code;
        let ok = answer(&fixtures::reply(false, 40, 39, 600), 40, 1000).unwrap();
        assert_eq!(
            ok,
            Answer::Charged(Window {
                limit: 40,
                remaining: 39,
                reset_at: 1600,
                allowed: true
            })
        );
        let over = answer(&fixtures::reply(true, 40, 0, 5), 40, 1000).unwrap();
        assert!(matches!(over, Answer::Charged(w) if !w.allowed && w.remaining == 0));
        let unknown_domain = rls::RateLimitResponse {
            overall_code: Code::Ok as i32,
            statuses: vec![Default::default()],
            ..Default::default()
        }
        .encode_to_vec();
        assert_eq!(answer(&unknown_domain, 40, 1000), Some(Answer::NotLimited));
        assert_eq!(answer(b"\xff\xff\xff", 40, 1000), None);
        // Nothing read (an empty body decodes as all defaults) is no answer.
        assert_eq!(answer(b"", 40, 1000), None);
    }
}
