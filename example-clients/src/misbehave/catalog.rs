//! The misbehaviours `misbehave` knows, what each does, and what a compositor should answer.
//! Pure data: tested on the host, printed by `misbehave --list`.

use std::fmt::Write as _;

use clap::ValueEnum;

use crate::syncobj_timeline::{MANAGER_INTERFACE, SURFACE_INTERFACE};

/// One way to break linux-drm-syncobj-v1's rules (or to test a compositor's patience); the
/// `v1-` ones break zwp_linux_explicit_synchronization_v1's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, ValueEnum)]
pub enum Scenario {
    /// A commit whose acquire point is never signalled.
    NeverSignals,
    /// A commit whose acquire point signals only after the compositor's fence timeout.
    SignalsLate,
    /// The CPU writes a buffer the compositor still holds (its release point unsignalled).
    RewritesBeforeRelease,
    /// Acquire and release points set, and a commit without a buffer.
    PointsWithoutBuffer,
    /// A dma-buf committed on a syncobj surface without any point.
    BufferWithoutPoints,
    /// Acquire point at the release point, on one timeline.
    AcquireNotBeforeRelease,
    /// import_timeline with an fd that is not a DRM syncobj.
    NotATimeline,
    /// The surface destroyed while a commit waits for its acquire point.
    DestroyWithPointsPending,
    /// The connection closed while a commit waits for its acquire point.
    DisconnectWithPointsPending,
    /// Many commits at once, all waiting for acquire points.
    FloodCommits,
    /// zwp_linux_explicit_synchronization_v1: a buffer on screen (its release not sent) written
    /// and committed again, twice.
    V1RewritesBeforeRelease,
}

/// What a compositor should answer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Expected {
    /// This protocol error, on an object of this interface.
    ProtocolError {
        /// The interface of the object the error is posted on.
        interface: &'static str,
        /// The error code.
        code: u32,
        /// The error's name in the protocol XML.
        name: &'static str,
    },
    /// No protocol error; the behaviour in [`Scenario::response`].
    NoError,
}

impl Scenario {
    /// Every scenario, in `--list` order.
    pub const ALL: [Scenario; 11] = [
        Scenario::NeverSignals,
        Scenario::SignalsLate,
        Scenario::RewritesBeforeRelease,
        Scenario::PointsWithoutBuffer,
        Scenario::BufferWithoutPoints,
        Scenario::AcquireNotBeforeRelease,
        Scenario::NotATimeline,
        Scenario::DestroyWithPointsPending,
        Scenario::DisconnectWithPointsPending,
        Scenario::FloodCommits,
        Scenario::V1RewritesBeforeRelease,
    ];

    /// The name `--scenario` takes.
    pub fn name(self) -> &'static str {
        match self {
            Scenario::NeverSignals => "never-signals",
            Scenario::SignalsLate => "signals-late",
            Scenario::RewritesBeforeRelease => "rewrites-before-release",
            Scenario::PointsWithoutBuffer => "points-without-buffer",
            Scenario::BufferWithoutPoints => "buffer-without-points",
            Scenario::AcquireNotBeforeRelease => "acquire-not-before-release",
            Scenario::NotATimeline => "not-a-timeline",
            Scenario::DestroyWithPointsPending => "destroy-with-points-pending",
            Scenario::DisconnectWithPointsPending => "disconnect-with-points-pending",
            Scenario::FloodCommits => "flood-commits",
            Scenario::V1RewritesBeforeRelease => "v1-rewrites-before-release",
        }
    }

    /// What the client does.
    pub fn action(self) -> &'static str {
        match self {
            Scenario::NeverSignals => {
                "shows one dma-buf, then commits a second whose acquire point it never signals"
            }
            Scenario::SignalsLate => {
                "shows one dma-buf, then commits a second whose acquire point it signals only \
                 --late-ms later (default 2500 ms, past fencegate's default 1000 ms fence timeout)"
            }
            Scenario::RewritesBeforeRelease => {
                "shows a dma-buf, then draws into it again with the CPU while it is on screen \
                 (its release point unsignalled) and commits it again"
            }
            Scenario::PointsWithoutBuffer => {
                "sets an acquire and a release point, then commits without attaching a buffer"
            }
            Scenario::BufferWithoutPoints => {
                "attaches a dma-buf to a surface with a wp_linux_drm_syncobj_surface_v1 and \
                 commits without setting any point"
            }
            Scenario::AcquireNotBeforeRelease => {
                "commits a dma-buf with acquire point 2 and release point 2 on one timeline"
            }
            Scenario::NotATimeline => "imports /dev/null with import_timeline",
            Scenario::DestroyWithPointsPending => {
                "shows one dma-buf, commits a second whose acquire point is pending, then \
                 destroys the syncobj surface and the wl_surface"
            }
            Scenario::DisconnectWithPointsPending => {
                "shows one dma-buf, commits a second whose acquire point is pending, then closes \
                 the connection without destroying anything"
            }
            Scenario::FloodCommits => {
                "sends --commits commits (default 100) back to back, alternating two dma-bufs, \
                 each waiting for its own point of one acquire timeline; then signals them all"
            }
            Scenario::V1RewritesBeforeRelease => {
                "zwp_linux_explicit_synchronization_v1: shows a dma-buf (acquire fence, \
                 get_release), then, while it is on screen and its release not sent, draws into \
                 it with the CPU and commits it again with a signalled acquire fence (vgem); once \
                 shown, does the same with an acquire fence it signals 100 ms after the commit"
            }
        }
    }

    /// What the compositor should answer.
    pub fn expected(self) -> Expected {
        let surface = |code, name| Expected::ProtocolError {
            interface: SURFACE_INTERFACE,
            code,
            name,
        };
        match self {
            Scenario::PointsWithoutBuffer => surface(3, "no_buffer"),
            Scenario::BufferWithoutPoints => surface(4, "no_acquire_point"),
            Scenario::AcquireNotBeforeRelease => surface(6, "conflicting_points"),
            Scenario::NotATimeline => Expected::ProtocolError {
                interface: MANAGER_INTERFACE,
                code: 1,
                name: "invalid_timeline",
            },
            _ => Expected::NoError,
        }
    }

    /// The documented response, in words.
    pub fn response(self) -> &'static str {
        match self {
            Scenario::NeverSignals => {
                "no protocol error; the surface is frozen: the commit is held (no frame callback \
                 for it), the first buffer stays on screen and is not released; after its fence \
                 timeout the compositor reports the client (fencegate: a warning, \
                 acquire.timed_out) or, if so configured, disconnects it (fencegate \
                 --fence-timeout-action disconnect: wl_display error implementation (3) naming \
                 the point)"
            }
            Scenario::SignalsLate => {
                "no protocol error; the commit is held past the fence timeout (reported, \
                 fencegate: acquire.timed_out) and applied once the point signals: its frame \
                 callback comes after the signal, never before, and the first buffer is released \
                 then"
            }
            Scenario::RewritesBeforeRelease => {
                "no protocol error and no disconnect: a compositor cannot see CPU writes. What \
                 is on screen is undefined (here the rewritten pixels show up); the client broke \
                 the rule that a buffer is written only after its release point signalled"
            }
            Scenario::PointsWithoutBuffer => {
                "protocol error no_buffer (3) on wp_linux_drm_syncobj_surface_v1: points must be \
                 set if and only if a buffer is attached"
            }
            Scenario::BufferWithoutPoints => {
                "protocol error no_acquire_point (4) on wp_linux_drm_syncobj_surface_v1 (Smithay \
                 0.7's own module lets this through)"
            }
            Scenario::AcquireNotBeforeRelease => {
                "protocol error conflicting_points (6) on wp_linux_drm_syncobj_surface_v1: on one \
                 timeline the acquire point must be strictly less than the release point"
            }
            Scenario::NotATimeline => {
                "protocol error invalid_timeline (1) on wp_linux_drm_syncobj_manager_v1"
            }
            Scenario::DestroyWithPointsPending => {
                "no protocol error; the held commit is dropped unapplied and both release points \
                 are signalled (the held buffer's, never read, and the shown buffer's, whose \
                 surface is gone), so the client can free both buffers"
            }
            Scenario::DisconnectWithPointsPending => {
                "the compositor cleans the client up without blocking: the held commit is \
                 dropped and both release points are signalled (the client, holding its own \
                 syncobjs, sees them), other clients carry on"
            }
            Scenario::FloodCommits => {
                "no protocol error; the compositor keeps answering while every commit waits (a \
                 round trip completes), then applies the commits in order once their points \
                 signal: the last commit's buffer is shown and every other release point is \
                 signalled"
            }
            Scenario::V1RewritesBeforeRelease => {
                "no protocol error and no disconnect: a compositor cannot see CPU writes. Both \
                 commits are shown (the second once its acquire fence signals) and the release of \
                 each commit replaced arrives only then; the client broke the rule that a buffer \
                 is written only after its release event (and a fenced_release's fence). \
                 fencegate check: buffer_rewritten_while_held, twice"
            }
        }
    }

    /// [`Expected`] in words: "protocol error NAME (CODE) on INTERFACE" or "no protocol error".
    pub fn expected_summary(self) -> String {
        match self.expected() {
            Expected::ProtocolError {
                interface,
                code,
                name,
            } => format!("protocol error {name} ({code}) on {interface}"),
            Expected::NoError => "no protocol error".to_owned(),
        }
    }
}

/// The `--list` text: every scenario, what it does and the documented response.
pub fn list() -> String {
    let mut out = String::new();
    for scenario in Scenario::ALL {
        let _ = writeln!(out, "{}", scenario.name());
        let _ = writeln!(out, "    does:     {}", scenario.action());
        let _ = writeln!(out, "    expected: {}", scenario.response());
    }
    out
}

/// The name of error `code` of `interface` (the linux-drm-syncobj-v1 ones), for messages.
pub fn error_name(interface: &str, code: u32) -> Option<&'static str> {
    let names: &[&str] = match interface {
        MANAGER_INTERFACE => &["surface_exists", "invalid_timeline"],
        SURFACE_INTERFACE => &[
            "",
            "no_surface",
            "unsupported_buffer",
            "no_buffer",
            "no_acquire_point",
            "no_release_point",
            "conflicting_points",
        ],
        _ => &[],
    };
    names
        .get(code as usize)
        .copied()
        .filter(|name| !name.is_empty())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_through_clap() {
        for scenario in Scenario::ALL {
            let parsed = Scenario::from_str(scenario.name(), false).unwrap();
            assert_eq!(parsed, scenario);
            let value = scenario.to_possible_value().unwrap();
            assert_eq!(value.get_name(), scenario.name());
        }
        assert_eq!(Scenario::value_variants().len(), Scenario::ALL.len());
    }

    #[test]
    fn the_list_documents_every_scenario() {
        let text = list();
        for scenario in Scenario::ALL {
            assert!(text.contains(scenario.name()), "{text}");
            assert!(text.contains(scenario.response()));
            // A protocol error's documented response names it exactly.
            if let Expected::ProtocolError {
                interface,
                code,
                name,
            } = scenario.expected()
            {
                let response = scenario.response();
                assert!(response.contains(&format!("{name} ({code})")), "{response}");
                assert!(response.contains(interface), "{response}");
                assert_eq!(error_name(interface, code), Some(name));
            }
        }
    }

    #[test]
    fn error_names_follow_the_protocol_xml() {
        assert_eq!(error_name(SURFACE_INTERFACE, 3), Some("no_buffer"));
        assert_eq!(error_name(SURFACE_INTERFACE, 6), Some("conflicting_points"));
        assert_eq!(error_name(SURFACE_INTERFACE, 0), None);
        assert_eq!(error_name(SURFACE_INTERFACE, 7), None);
        assert_eq!(error_name(MANAGER_INTERFACE, 0), Some("surface_exists"));
        assert_eq!(error_name("wl_surface", 0), None);
        let protocol_errors = Scenario::ALL
            .iter()
            .filter(|s| s.expected() != Expected::NoError)
            .count();
        assert_eq!(protocol_errors, 4);
    }
}
