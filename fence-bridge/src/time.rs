//! [`Ktime`]: a `CLOCK_MONOTONIC` timestamp in nanoseconds, the kernel's `ktime_t`.

use std::fmt;
use std::time::Duration;

/// A point on `CLOCK_MONOTONIC`, in nanoseconds: the kernel's `ktime_t` as returned by
/// `ktime_get()`.
///
/// Signal timestamps use this type (not [`std::time::Instant`], whose value is opaque) so that they
/// compare directly with the kernel's: `sync_fence_info.timestamp_ns`, DRM vblank and page-flip
/// times and `wp_presentation` feedback are all on this clock.
///
/// ```
/// use fence_bridge::Ktime;
/// use std::time::Duration;
///
/// let a = Ktime::now();
/// let b = a.checked_add(Duration::from_millis(5)).unwrap();
/// assert!(b > a);
/// assert_eq!(b.saturating_duration_since(a), Duration::from_millis(5));
/// assert_eq!(a.saturating_duration_since(b), Duration::ZERO);
/// ```
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Ktime(i64);

impl Ktime {
    /// The current `CLOCK_MONOTONIC` time (`ktime_get()`).
    #[inline]
    pub fn now() -> Self {
        let ts = rustix::time::clock_gettime(rustix::time::ClockId::Monotonic);
        #[allow(clippy::unnecessary_cast)] // tv_nsec is c_long on some targets
        Ktime(
            ts.tv_sec
                .saturating_mul(1_000_000_000)
                .saturating_add(ts.tv_nsec as i64),
        )
    }

    /// A timestamp from nanoseconds on `CLOCK_MONOTONIC` (e.g. `sync_fence_info.timestamp_ns`).
    pub const fn from_nanos(nanos: i64) -> Self {
        Ktime(nanos)
    }

    /// Nanoseconds on `CLOCK_MONOTONIC`.
    pub const fn as_nanos(self) -> i64 {
        self.0
    }

    /// Time elapsed from `earlier` to `self`, or zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Ktime) -> Duration {
        let diff = self.0.saturating_sub(earlier.0);
        Duration::from_nanos(u64::try_from(diff).unwrap_or(0))
    }

    /// `self + d`, or `None` on overflow.
    pub fn checked_add(self, d: Duration) -> Option<Ktime> {
        let ns = i64::try_from(d.as_nanos()).ok()?;
        self.0.checked_add(ns).map(Ktime)
    }
}

impl fmt::Debug for Ktime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Ktime({}.{:09})",
            self.0.div_euclid(1_000_000_000),
            self.0.rem_euclid(1_000_000_000)
        )
    }
}
