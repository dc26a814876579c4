//! The simulated per-message work of a load test: `noop`, `io:<duration>`, `cpu:<duration>`.

use std::fmt;
use std::time::{Duration, Instant};

/// What each instance does with every message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Work {
    /// Nothing: measures the framework and the broker.
    Noop,
    /// Waits without using a CPU, like a call to a database or a service.
    Io(Duration),
    /// Keeps a CPU busy, like parsing or scoring inline in `process`.
    Cpu(Duration),
}

impl Work {
    /// Parses `noop`, `io:5ms`, `cpu:200us`; the error says what to write.
    pub(crate) fn parse(spec: &str) -> Result<Self, String> {
        const HINT: &str = "write noop, io:<duration> or cpu:<duration>, e.g. io:5ms";
        let spec = spec.trim();
        if spec.eq_ignore_ascii_case("noop") {
            return Ok(Self::Noop);
        }
        let (kind, duration) = spec
            .split_once(':')
            .ok_or_else(|| format!("`{spec}` is not a kind of work; {HINT}"))?;
        let duration = humantime::parse_duration(duration.trim())
            .map_err(|e| format!("`{duration}` in `{spec}` is not a duration ({e}); {HINT}"))?;
        match kind.trim().to_ascii_lowercase().as_str() {
            "io" => Ok(Self::Io(duration)),
            "cpu" => Ok(Self::Cpu(duration)),
            other => Err(format!("`{other}` is not a kind of work; {HINT}")),
        }
    }

    /// Does the work for one message.
    pub(crate) async fn run(self) {
        match self {
            Self::Noop => {}
            Self::Io(duration) => tokio::time::sleep(duration).await,
            Self::Cpu(duration) => {
                // Inline, on the runtime's thread, as a handler that computes
                // without `spawn_blocking` would.
                let end = Instant::now() + duration;
                let mut x = 0u64;
                while Instant::now() < end {
                    for _ in 0..64 {
                        x = std::hint::black_box(
                            x.wrapping_mul(6364136223846793005).wrapping_add(1),
                        );
                    }
                }
            }
        }
    }
}

impl fmt::Display for Work {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Noop => f.write_str("noop"),
            Self::Io(d) => write!(f, "io:{}", humantime::format_duration(*d)),
            Self::Cpu(d) => write!(f, "cpu:{}", humantime::format_duration(*d)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn work_specs_parse_and_bad_ones_say_what_to_write() {
        assert_eq!(Work::parse("noop"), Ok(Work::Noop));
        assert_eq!(
            Work::parse("io:5ms"),
            Ok(Work::Io(Duration::from_millis(5)))
        );
        assert_eq!(
            Work::parse("cpu:200us"),
            Ok(Work::Cpu(Duration::from_micros(200)))
        );
        assert!(Work::parse("sleep").unwrap_err().contains("io:<duration>"));
        assert!(
            Work::parse("io:soon")
                .unwrap_err()
                .contains("not a duration")
        );
        assert!(Work::parse("gpu:1ms").unwrap_err().contains("`gpu`"));
        assert_eq!(Work::parse("io:5ms").unwrap().to_string(), "io:5ms");
    }
}
