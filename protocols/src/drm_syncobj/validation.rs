//! The commit rules of `wp_linux_drm_syncobj_surface_v1`, as a pure function of what a commit
//! carries: no Wayland objects, no kernel, so every case is a host test.
//!
//! # The rules (linux-drm-syncobj-v1, version 1)
//!
//! "Clients must set both acquire and release points **if and only if** a non-null buffer is
//! attached in the same surface commit." So, for one `wl_surface.commit`:
//!
//! | attachment in this commit            | acquire | release | verdict                          |
//! |--------------------------------------|---------|---------|----------------------------------|
//! | none (no `attach` since last commit) | –       | –       | ok: [`Verdict::Unchanged`]       |
//! | `attach(NULL)`                       | –       | –       | ok: [`Verdict::Detached`]        |
//! | none or `attach(NULL)`               | any set | any     | `no_buffer`                      |
//! | none or `attach(NULL)`               | any     | any set | `no_buffer`                      |
//! | a buffer                             | unset   | any     | `no_acquire_point`               |
//! | a buffer                             | set     | unset   | `no_release_point`               |
//! | a buffer, same timeline, acq ≥ rel   | set     | set     | `conflicting_points`             |
//! | a buffer that is not a dma-buf       | set     | set     | `unsupported_buffer`             |
//! | a dma-buf                            | set     | set     | ok: [`Verdict::Synced`]          |
//!
//! Checked in the order of the table (the order wlroots uses), so one commit gets one error:
//! first whether points and buffer go together, then the points against each other, last the
//! kind of buffer. A non-dma-buf buffer without points is therefore `no_acquire_point`, not
//! `unsupported_buffer`: the client broke the "if and only if" rule before choosing a buffer
//! type the points cannot apply to.
//!
//! *Same timeline* means the same `wp_linux_drm_syncobj_timeline_v1` object ([`TimelineKey`]),
//! as in wlroots and Smithay: two imports of one kernel syncobj are two timelines here (the
//! kernel gives no cheap way to tell that two syncobj fds name one object).
//!
//! Smithay 0.7 lets a buffer with neither point through and checks only half the rule; this
//! module is the whole table.

use std::fmt;

pub use crate::attachment::Attachment;

/// Identifies one `wp_linux_drm_syncobj_timeline_v1` object (fencegate uses the fence context
/// of the imported [`fence_bridge::Syncobj`], unique per import).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TimelineKey(pub u64);

/// A timeline point as far as validation cares: which timeline, which value.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PointKey {
    /// The timeline object.
    pub timeline: TimelineKey,
    /// The 64-bit point value (`point_hi << 32 | point_lo`).
    pub point: u64,
}

impl PointKey {
    /// `point` on `timeline`.
    pub const fn new(timeline: u64, point: u64) -> PointKey {
        PointKey {
            timeline: TimelineKey(timeline),
            point,
        }
    }
}

/// What a commit that passed validation means for explicit sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No buffer change and no points: the current buffer and its release obligation stay.
    Unchanged,
    /// `attach(NULL)` and no points: the current buffer goes away, so its release point is due
    /// once this commit is applied.
    Detached,
    /// A dma-buf with both points: sample it only after the acquire point signals; the release
    /// point replaces (and so releases) the previous one once this commit is applied.
    Synced,
}

/// A `wp_linux_drm_syncobj_surface_v1` error raised at commit time. The discriminants are the
/// protocol's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CommitError {
    /// `unsupported_buffer` (2): points on a buffer that is not a dma-buf.
    UnsupportedBuffer = 2,
    /// `no_buffer` (3): a point is set but no non-null buffer is attached in this commit.
    NoBuffer = 3,
    /// `no_acquire_point` (4): a buffer is attached without an acquire point.
    NoAcquirePoint = 4,
    /// `no_release_point` (5): a buffer is attached without a release point.
    NoReleasePoint = 5,
    /// `conflicting_points` (6): one timeline, and the acquire point is not below the release
    /// point.
    ConflictingPoints = 6,
}

impl CommitError {
    /// The protocol error code, for `post_error`.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

impl fmt::Display for CommitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CommitError::UnsupportedBuffer => {
                "acquire and release points set for a buffer that is not a dma-buf"
            }
            CommitError::NoBuffer => {
                "an acquire or release point is set but no non-null buffer is attached in this commit"
            }
            CommitError::NoAcquirePoint => "a buffer is attached but no acquire point is set",
            CommitError::NoReleasePoint => "a buffer is attached but no release point is set",
            CommitError::ConflictingPoints => {
                "acquire and release points on the same timeline, and the acquire point is not \
                 below the release point"
            }
        })
    }
}

impl std::error::Error for CommitError {}

/// Applies the commit rules (see the [module docs](self)) to one commit.
pub fn validate_commit(
    attachment: Attachment,
    acquire: Option<PointKey>,
    release: Option<PointKey>,
) -> Result<Verdict, CommitError> {
    let Attachment::Buffer { dmabuf } = attachment else {
        if acquire.is_some() || release.is_some() {
            return Err(CommitError::NoBuffer);
        }
        return Ok(match attachment {
            Attachment::Null => Verdict::Detached,
            _ => Verdict::Unchanged,
        });
    };
    let acquire = acquire.ok_or(CommitError::NoAcquirePoint)?;
    let release = release.ok_or(CommitError::NoReleasePoint)?;
    if acquire.timeline == release.timeline && acquire.point >= release.point {
        return Err(CommitError::ConflictingPoints);
    }
    if !dmabuf {
        return Err(CommitError::UnsupportedBuffer);
    }
    Ok(Verdict::Synced)
}

/// The error message posted with `error`, naming the points involved.
pub(crate) fn error_message(
    error: CommitError,
    acquire: Option<PointKey>,
    release: Option<PointKey>,
) -> String {
    match (error, acquire, release) {
        (CommitError::ConflictingPoints, Some(a), Some(r)) => format!(
            "{error}: acquire point {} >= release point {}",
            a.point, r.point
        ),
        _ => error.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const A: u64 = 1; // timeline object A
    const B: u64 = 2; // timeline object B
    const DMABUF: Attachment = Attachment::Buffer { dmabuf: true };
    const SHM: Attachment = Attachment::Buffer { dmabuf: false };

    fn p(timeline: u64, point: u64) -> Option<PointKey> {
        Some(PointKey::new(timeline, point))
    }

    // --- accepted ------------------------------------------------------------------------

    #[test]
    fn commit_without_attach_and_without_points_keeps_everything() {
        assert_eq!(
            validate_commit(Attachment::Unchanged, None, None),
            Ok(Verdict::Unchanged)
        );
    }

    #[test]
    fn null_attach_without_points_detaches() {
        assert_eq!(
            validate_commit(Attachment::Null, None, None),
            Ok(Verdict::Detached)
        );
    }

    #[test]
    fn dmabuf_with_points_on_two_timelines_is_synced_whatever_the_values() {
        for (acq, rel) in [(0, 0), (5, 1), (1, 5), (u64::MAX, 0), (7, 7)] {
            assert_eq!(
                validate_commit(DMABUF, p(A, acq), p(B, rel)),
                Ok(Verdict::Synced),
                "acquire {acq}, release {rel} on different timelines"
            );
        }
    }

    #[test]
    fn dmabuf_with_points_on_one_timeline_needs_acquire_below_release() {
        assert_eq!(
            validate_commit(DMABUF, p(A, 1), p(A, 2)),
            Ok(Verdict::Synced)
        );
        assert_eq!(
            validate_commit(DMABUF, p(A, 0), p(A, 1)),
            Ok(Verdict::Synced)
        );
        assert_eq!(
            validate_commit(DMABUF, p(A, u64::MAX - 1), p(A, u64::MAX)),
            Ok(Verdict::Synced)
        );
    }

    // --- no_buffer -------------------------------------------------------------------------

    #[test]
    fn points_without_a_new_buffer_are_no_buffer() {
        for attachment in [Attachment::Unchanged, Attachment::Null] {
            for (acq, rel) in [(p(A, 1), None), (None, p(A, 2)), (p(A, 1), p(B, 2))] {
                assert_eq!(
                    validate_commit(attachment, acq, rel),
                    Err(CommitError::NoBuffer),
                    "{attachment:?} {acq:?} {rel:?}"
                );
            }
        }
    }

    #[test]
    fn no_buffer_wins_over_conflicting_points() {
        assert_eq!(
            validate_commit(Attachment::Unchanged, p(A, 5), p(A, 5)),
            Err(CommitError::NoBuffer)
        );
        assert_eq!(
            validate_commit(Attachment::Null, p(A, 9), p(A, 1)),
            Err(CommitError::NoBuffer)
        );
    }

    // --- no_acquire_point / no_release_point -----------------------------------------------

    #[test]
    fn buffer_without_points_is_no_acquire_point() {
        // Smithay 0.7 lets this through; the protocol does not.
        assert_eq!(
            validate_commit(DMABUF, None, None),
            Err(CommitError::NoAcquirePoint)
        );
        assert_eq!(
            validate_commit(DMABUF, None, p(A, 1)),
            Err(CommitError::NoAcquirePoint)
        );
    }

    #[test]
    fn buffer_without_release_point_is_no_release_point() {
        assert_eq!(
            validate_commit(DMABUF, p(A, 1), None),
            Err(CommitError::NoReleasePoint)
        );
    }

    #[test]
    fn shm_buffer_without_points_breaks_the_iff_rule_first() {
        assert_eq!(
            validate_commit(SHM, None, None),
            Err(CommitError::NoAcquirePoint)
        );
        assert_eq!(
            validate_commit(SHM, p(A, 1), None),
            Err(CommitError::NoReleasePoint)
        );
    }

    // --- conflicting_points ----------------------------------------------------------------

    #[test]
    fn same_timeline_with_acquire_not_below_release_conflicts() {
        for (acq, rel) in [(2, 2), (3, 2), (u64::MAX, 0), (0, 0)] {
            assert_eq!(
                validate_commit(DMABUF, p(A, acq), p(A, rel)),
                Err(CommitError::ConflictingPoints),
                "acquire {acq}, release {rel}"
            );
        }
    }

    #[test]
    fn conflicting_points_wins_over_unsupported_buffer() {
        assert_eq!(
            validate_commit(SHM, p(A, 2), p(A, 2)),
            Err(CommitError::ConflictingPoints)
        );
    }

    // --- unsupported_buffer ----------------------------------------------------------------

    #[test]
    fn points_on_a_non_dmabuf_buffer_are_unsupported() {
        assert_eq!(
            validate_commit(SHM, p(A, 1), p(B, 1)),
            Err(CommitError::UnsupportedBuffer)
        );
        assert_eq!(
            validate_commit(SHM, p(A, 1), p(A, 2)),
            Err(CommitError::UnsupportedBuffer)
        );
    }

    // --- the whole table -------------------------------------------------------------------

    /// Every combination of attachment × acquire × release (on one timeline or two, below,
    /// equal, above) against an independent statement of the rule.
    #[test]
    fn exhaustive_table_matches_the_protocol_text() {
        let attachments = [Attachment::Unchanged, Attachment::Null, SHM, DMABUF];
        let points = [None, p(A, 1), p(A, 2), p(B, 1), p(B, 2)];
        let mut accepted = 0;
        for attachment in attachments {
            for acquire in points {
                for release in points {
                    let got = validate_commit(attachment, acquire, release);
                    let buffer = matches!(attachment, Attachment::Buffer { .. });
                    let expected = if !buffer && (acquire.is_some() || release.is_some()) {
                        Err(CommitError::NoBuffer)
                    } else if !buffer {
                        Ok(if attachment == Attachment::Null {
                            Verdict::Detached
                        } else {
                            Verdict::Unchanged
                        })
                    } else {
                        match (acquire, release) {
                            (None, _) => Err(CommitError::NoAcquirePoint),
                            (_, None) => Err(CommitError::NoReleasePoint),
                            (Some(a), Some(r))
                                if a.timeline == r.timeline && a.point >= r.point =>
                            {
                                Err(CommitError::ConflictingPoints)
                            }
                            _ if attachment == SHM => Err(CommitError::UnsupportedBuffer),
                            _ => Ok(Verdict::Synced),
                        }
                    };
                    assert_eq!(got, expected, "{attachment:?} {acquire:?} {release:?}");
                    accepted += usize::from(got.is_ok());
                }
            }
        }
        // 2 point-free non-buffer commits + dma-buf with 4x4 point pairs minus the 3 same-timeline
        // pairs that conflict per timeline (1/1, 2/2, 2/1).
        assert_eq!(accepted, 2 + (16 - 6));
    }

    #[test]
    fn error_codes_are_the_protocols() {
        use smithay::reexports::wayland_protocols::wp::linux_drm_syncobj::v1::server::wp_linux_drm_syncobj_surface_v1::Error;
        assert_eq!(
            CommitError::UnsupportedBuffer.code(),
            Error::UnsupportedBuffer as u32
        );
        assert_eq!(CommitError::NoBuffer.code(), Error::NoBuffer as u32);
        assert_eq!(
            CommitError::NoAcquirePoint.code(),
            Error::NoAcquirePoint as u32
        );
        assert_eq!(
            CommitError::NoReleasePoint.code(),
            Error::NoReleasePoint as u32
        );
        assert_eq!(
            CommitError::ConflictingPoints.code(),
            Error::ConflictingPoints as u32
        );
    }

    #[test]
    fn conflicting_points_message_names_the_points() {
        let msg = error_message(CommitError::ConflictingPoints, p(A, 7), p(A, 3));
        assert!(msg.contains("acquire point 7 >= release point 3"), "{msg}");
    }
}
