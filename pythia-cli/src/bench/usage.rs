//! What a benchmark process spent: CPU time, peak memory, context switches,
//! as the kernel counts them for the whole process (`getrusage`), every
//! thread included — librdkafka's as much as ours.

use std::time::Duration;

use serde::Serialize;

/// The process's resource use so far.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub(crate) struct Usage {
    /// CPU time in user mode, seconds.
    pub(crate) user_s: f64,
    /// CPU time in the kernel, seconds.
    pub(crate) system_s: f64,
    /// The largest resident set the process has had, MiB.
    pub(crate) peak_rss_mib: f64,
    /// Context switches, voluntary (waits) and involuntary (preemptions).
    pub(crate) context_switches: u64,
}

impl Usage {
    /// This process's use so far.
    pub(crate) fn now() -> Self {
        // SAFETY: `getrusage` fills the zeroed struct it is given; RUSAGE_SELF
        // is always a valid target.
        let usage = unsafe {
            let mut usage: libc::rusage = std::mem::zeroed();
            if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
                return Self::default();
            }
            usage
        };
        let seconds =
            |t: libc::timeval| t.tv_sec as f64 + f64::from(t.tv_usec as i32) / 1_000_000.0;
        Self {
            user_s: seconds(usage.ru_utime),
            system_s: seconds(usage.ru_stime),
            // Linux reports kibibytes.
            peak_rss_mib: usage.ru_maxrss as f64 / 1024.0,
            context_switches: (usage.ru_nvcsw + usage.ru_nivcsw) as u64,
        }
    }

    /// CPU time, user and system.
    pub(crate) fn cpu(&self) -> Duration {
        Duration::from_secs_f64(self.user_s + self.system_s)
    }
}

#[cfg(test)]
mod tests {
    use super::Usage;

    #[test]
    fn cpu_time_grows_with_work_and_memory_is_counted() {
        let before = Usage::now();
        let mut x = 0u64;
        let started = std::time::Instant::now();
        while started.elapsed().as_millis() < 50 {
            x = std::hint::black_box(x.wrapping_mul(31).wrapping_add(7));
        }
        let after = Usage::now();
        assert!(after.cpu() > before.cpu(), "{before:?} → {after:?}");
        assert!(after.peak_rss_mib > 1.0, "{after:?}");
    }
}
