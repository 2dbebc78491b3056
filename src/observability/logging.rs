//! The `log` crate's records as Envoy log lines, for both builds:
//! proxy-wasm and Envoy's dynamic-module ABI number the levels alike
//! (trace 0 … error 4); each host writes a line with its own call.

/// Envoy's error level.
pub const ERROR: u32 = 4;

/// An Envoy log level.
pub fn level(l: log::Level) -> u32 {
    match l {
        log::Level::Trace => 0,
        log::Level::Debug => 1,
        log::Level::Info => 2,
        log::Level::Warn => 3,
        log::Level::Error => ERROR,
    }
}

/// A logger that hands each enabled record's level and text to `write`
/// (the host's call, whose status it ignores: a logger must not fail).
pub struct EnvoyLog {
    pub write: fn(u32, &str),
}

impl log::Log for EnvoyLog {
    fn enabled(&self, metadata: &log::Metadata) -> bool {
        metadata.level() <= log::max_level()
    }

    fn log(&self, record: &log::Record) {
        if !self.enabled(record.metadata()) {
            return;
        }
        let level = level(record.level());
        match record.args().as_str() {
            Some(text) => (self.write)(level, text),
            None => (self.write)(level, &record.args().to_string()),
        }
    }

    fn flush(&self) {}
}

/// Routes the `log` crate to `logger` and logs panics through it, once, as
/// the host loads the filter; `on_panic` says what a panic means in this
/// build. The panic hook writes its line itself, so it cannot panic in turn.
pub fn install(logger: &'static EnvoyLog, on_panic: &'static str) {
    let _ = log::set_logger(logger);
    log::set_max_level(log::LevelFilter::Info);
    let write = logger.write;
    std::panic::set_hook(Box::new(move |info| {
        write(ERROR, &format!("hokusai-auth: panic, {on_panic}: {info}"));
    }));
}

#[cfg(test)]
mod tests {
    use super::*;
    use log::Log;
    use std::cell::RefCell;

    thread_local! {
        static LINES: RefCell<Vec<(u32, String)>> = const { RefCell::new(Vec::new()) };
    }

    fn capture(level: u32, text: &str) {
        LINES.with(|l| l.borrow_mut().push((level, text.to_string())));
    }

    #[test]
    fn records_become_lines_at_envoys_levels() {
        // The level is process-wide: set here, not left to another test.
        log::set_max_level(log::LevelFilter::Info);
        let logger = EnvoyLog { write: capture };
        let n = 3;
        logger.log(
            &log::Record::builder()
                .level(log::Level::Error)
                .args(format_args!("error {n}"))
                .build(),
        );
        logger.log(
            &log::Record::builder()
                .level(log::Level::Trace)
                .args(format_args!("too detailed"))
                .build(),
        );
        let lines = LINES.with(|l| l.borrow().clone());
        let shown: Vec<_> = lines.iter().filter(|(_, t)| t == "error 3").collect();
        assert_eq!(shown, vec![&(ERROR, "error 3".to_string())]);
        assert_eq!(level(log::Level::Info), 2);
    }
}
