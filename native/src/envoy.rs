//! What the native host asks of Envoy for one stream, as a trait: `abi`
//! implements it with the dynamic-module callbacks, the tests with a fake.

use hokusai_mlflow_auth::Headers;
use hokusai_mlflow_auth::Reply;

/// A stream attribute the filter reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attribute {
    /// `source.address`: "ip:port".
    SourceAddress,
    /// `xds.route_name`.
    RouteName,
}

/// A callout's answer as Envoy delivered it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CalloutReply {
    /// None: no reply (reset, timeout, or no headers).
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

/// Resumes a stream on its own worker from any thread (Envoy's scheduler).
pub trait Wake: Send + Sync {
    fn wake(&self);
}

/// A waker for tests: counts its wakes.
#[cfg(test)]
pub struct CountWakes(pub std::sync::Arc<std::sync::atomic::AtomicUsize>);

#[cfg(test)]
impl Wake for CountWakes {
    fn wake(&self) {
        self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
    }
}

/// One stream's handle on Envoy.
pub trait Envoy: Clone {
    fn request_headers(&self) -> Headers;
    /// Replaces every value of `name`, or removes them all with None.
    fn set_request_header(&self, name: &str, value: Option<&str>);
    fn add_request_header(&self, name: &str, value: &str);
    fn add_response_header(&self, name: &str, value: &str);
    /// Makes Envoy match the route again (after a `:path` rewrite).
    fn clear_route_cache(&self);
    fn send_response(&self, reply: &Reply);
    fn continue_decoding(&self);
    /// Starts a callout; its id, or None if Envoy refused it.
    fn callout(
        &self,
        cluster: &str,
        headers: &[(&str, &str)],
        body: &[u8],
        timeout_ms: u64,
    ) -> Option<u64>;
    fn attribute(&self, which: Attribute) -> Option<String>;
    /// Adds one to the counter Envoy gave this id at configuration time.
    fn increment(&self, counter: usize);
    fn record(&self, histogram: usize, value: u64);
    /// A waker that resumes this stream on its worker (None: refused).
    fn waker(&self) -> Option<Box<dyn Wake>>;
}
