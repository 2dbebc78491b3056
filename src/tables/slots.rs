//! Fixed tables in proxy-wasm shared data. Envoy never frees a shared-data
//! key, so every table the filter keeps there (verdicts, rate-limit windows)
//! has a fixed number of slots, each the key `<prefix><index>`, and a newer
//! entry replaces what its slot held. "Slot" means this and nothing else.

pub struct SlotTable {
    prefix: &'static str,
    count: u32,
}

impl SlotTable {
    pub fn new(prefix: &'static str, count: u32) -> Self {
        Self {
            prefix,
            count: count.max(1),
        }
    }

    /// The shared-data key of the slot `hash` falls in.
    pub fn key(&self, hash: u64) -> String {
        decimal_key(self.prefix, hash % u64::from(self.count))
    }
}

/// `prefix` followed by `n` in decimal, without the formatting machinery
/// (this runs on every request).
fn decimal_key(prefix: &str, mut n: u64) -> String {
    let mut digits = [0u8; 20];
    let mut i = digits.len();
    loop {
        i -= 1;
        if let Some(d) = digits.get_mut(i) {
            *d = b'0' + (n % 10) as u8;
        }
        n /= 10;
        if n == 0 || i == 0 {
            break;
        }
    }
    let mut s = String::with_capacity(prefix.len() + digits.len() - i);
    s.push_str(prefix);
    for d in digits.iter().skip(i) {
        s.push(char::from(*d));
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slot_keys_are_prefix_and_decimal() {
        assert_eq!(decimal_key("p.", 0), "p.0");
        assert_eq!(decimal_key("p.", 4095), "p.4095");
        assert_eq!(decimal_key("", u64::MAX), u64::MAX.to_string());
    }

    #[test]
    fn hashes_fall_in_the_table() {
        let t = SlotTable::new("t.", 16);
        assert_eq!(t.key(0), "t.0");
        assert_eq!(t.key(17), "t.1");
        assert_eq!(t.key(u64::MAX), "t.15");
    }
}
