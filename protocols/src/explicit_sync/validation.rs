//! The commit rules of `zwp_linux_surface_synchronization_v1`, as a pure function of what a
//! commit carries: no Wayland objects, no kernel, so every case is a host test.
//!
//! # The rules (zwp_linux_explicit_synchronization_unstable_v1, version 2)
//!
//! Request-time errors (`invalid_fence`, `duplicate_fence`, `duplicate_release`,
//! `no_surface`) are raised by the requests themselves; at `wl_surface.commit`:
//!
//! * `set_acquire_fence`: "If at surface commit time there is no buffer attached, a NO_BUFFER
//!   error is raised"; "if at surface commit time the attached buffer does not support explicit
//!   synchronization, an UNSUPPORTED_BUFFER error is raised".
//! * `get_release`: "If at surface commit time there is no buffer attached, a NO_BUFFER error
//!   is raised." A release needs no particular buffer type (it is an alternative to
//!   `wl_buffer.release`, which every buffer has), so a release on an shm buffer is accepted.
//!
//! "A buffer attached" means a non-null `wl_surface.attach` in this commit, as in Weston (the
//! only other implementation): a commit without `attach`, or with `attach(NULL)`, has none.
//!
//! | attachment in this commit      | fence | release | verdict                           |
//! |--------------------------------|-------|---------|-----------------------------------|
//! | none or `attach(NULL)`         | –     | –       | ok: [`Verdict::Unchanged`] / [`Verdict::Detached`] |
//! | none or `attach(NULL)`         | set   | any     | `no_buffer`                       |
//! | none or `attach(NULL)`         | any   | set     | `no_buffer`                       |
//! | a buffer that is not a dma-buf | set   | any     | `unsupported_buffer`              |
//! | a buffer                       | any   | any     | ok: [`Verdict::Buffer`]           |
//!
//! Explicit sync is supported here for linux-dmabuf buffers (what version 1 guarantees). Version
//! 2 also names opaque EGL (`wl_drm`) buffers; fencegate does not offer `EGL_WL_bind_wayland_display`,
//! so no such buffer can reach it.

use std::fmt;

pub use crate::attachment::Attachment;

/// What a commit that passed validation means for explicit sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Verdict {
    /// No buffer change, no fence, no release: the current buffer and its release stay.
    Unchanged,
    /// `attach(NULL)`, no fence, no release: the current buffer goes away, so its release is
    /// due once this commit is applied.
    Detached,
    /// A buffer: sample it only after the fence (if any) signals; the release (if any) is sent
    /// when the buffer is no longer read. The previous buffer's release is due once this commit
    /// is applied.
    Buffer {
        /// Whether an acquire fence must be waited for.
        fence: bool,
        /// Whether a release object is attached to this commit.
        release: bool,
    },
}

/// A `zwp_linux_surface_synchronization_v1` error raised at commit time. The discriminants are
/// the protocol's error codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum CommitError {
    /// `unsupported_buffer` (4): an acquire fence for a buffer that is not a dma-buf.
    UnsupportedBuffer = 4,
    /// `no_buffer` (5): a fence or a release requested, but no buffer attached in this commit.
    NoBuffer = 5,
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
                "an acquire fence is set for a buffer that is not a dma-buf \
                 (explicit sync is supported for linux-dmabuf buffers)"
            }
            CommitError::NoBuffer => {
                "an acquire fence or a release is requested but no buffer is attached in this commit"
            }
        })
    }
}

impl std::error::Error for CommitError {}

/// Applies the commit rules (see the [module docs](self)) to one commit: `fence` and `release`
/// tell whether `set_acquire_fence` / `get_release` were requested since the last commit.
pub fn validate_commit(
    attachment: Attachment,
    fence: bool,
    release: bool,
) -> Result<Verdict, CommitError> {
    match attachment {
        Attachment::Unchanged | Attachment::Null if fence || release => Err(CommitError::NoBuffer),
        Attachment::Unchanged => Ok(Verdict::Unchanged),
        Attachment::Null => Ok(Verdict::Detached),
        Attachment::Buffer { dmabuf: false } if fence => Err(CommitError::UnsupportedBuffer),
        Attachment::Buffer { .. } => Ok(Verdict::Buffer { fence, release }),
    }
}

/// A request-time error of `zwp_linux_surface_synchronization_v1`: what the request checks
/// before it touches any state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u32)]
pub enum RequestError {
    /// `invalid_fence` (0): the fd is not a sync_file.
    InvalidFence = 0,
    /// `duplicate_fence` (1): a second `set_acquire_fence` before the commit.
    DuplicateFence = 1,
    /// `duplicate_release` (2): a second `get_release` before the commit.
    DuplicateRelease = 2,
    /// `no_surface` (3): the wl_surface was destroyed.
    NoSurface = 3,
}

impl RequestError {
    /// The protocol error code, for `post_error`.
    pub const fn code(self) -> u32 {
        self as u32
    }
}

/// `set_acquire_fence`, checked in the order Weston checks it: the surface first, then a fence
/// already set, then the fd (`fd_is_sync_file` is asked only when the rest passed: it costs an
/// ioctl).
pub fn validate_set_acquire_fence(
    surface_alive: bool,
    fence_pending: bool,
    fd_is_sync_file: impl FnOnce() -> bool,
) -> Result<(), RequestError> {
    if !surface_alive {
        return Err(RequestError::NoSurface);
    }
    if fence_pending {
        return Err(RequestError::DuplicateFence);
    }
    if !fd_is_sync_file() {
        return Err(RequestError::InvalidFence);
    }
    Ok(())
}

/// `get_release`: the surface first, then a release already requested.
pub fn validate_get_release(
    surface_alive: bool,
    release_pending: bool,
) -> Result<(), RequestError> {
    if !surface_alive {
        return Err(RequestError::NoSurface);
    }
    if release_pending {
        return Err(RequestError::DuplicateRelease);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const DMABUF: Attachment = Attachment::Buffer { dmabuf: true };
    const SHM: Attachment = Attachment::Buffer { dmabuf: false };

    #[test]
    fn commits_without_fence_or_release_pass_whatever_the_attachment() {
        assert_eq!(
            validate_commit(Attachment::Unchanged, false, false),
            Ok(Verdict::Unchanged)
        );
        assert_eq!(
            validate_commit(Attachment::Null, false, false),
            Ok(Verdict::Detached)
        );
        for attachment in [DMABUF, SHM] {
            assert_eq!(
                validate_commit(attachment, false, false),
                Ok(Verdict::Buffer {
                    fence: false,
                    release: false
                })
            );
        }
    }

    #[test]
    fn fence_or_release_without_a_buffer_is_no_buffer() {
        for attachment in [Attachment::Unchanged, Attachment::Null] {
            for (fence, release) in [(true, false), (false, true), (true, true)] {
                assert_eq!(
                    validate_commit(attachment, fence, release),
                    Err(CommitError::NoBuffer),
                    "{attachment:?} fence {fence} release {release}"
                );
            }
        }
    }

    #[test]
    fn fence_on_a_non_dmabuf_is_unsupported_but_a_release_is_fine() {
        assert_eq!(
            validate_commit(SHM, true, false),
            Err(CommitError::UnsupportedBuffer)
        );
        assert_eq!(
            validate_commit(SHM, true, true),
            Err(CommitError::UnsupportedBuffer)
        );
        assert_eq!(
            validate_commit(SHM, false, true),
            Ok(Verdict::Buffer {
                fence: false,
                release: true
            })
        );
    }

    #[test]
    fn dmabuf_takes_fence_and_release() {
        for (fence, release) in [(false, false), (true, false), (false, true), (true, true)] {
            assert_eq!(
                validate_commit(DMABUF, fence, release),
                Ok(Verdict::Buffer { fence, release })
            );
        }
    }

    /// Every attachment × fence × release against an independent reading of the XML.
    #[test]
    fn exhaustive_table_matches_the_protocol_text() {
        let mut accepted = 0;
        for attachment in [Attachment::Unchanged, Attachment::Null, SHM, DMABUF] {
            for fence in [false, true] {
                for release in [false, true] {
                    let buffer = matches!(attachment, Attachment::Buffer { .. });
                    let expected = if !buffer && (fence || release) {
                        Err(CommitError::NoBuffer)
                    } else if attachment == SHM && fence {
                        Err(CommitError::UnsupportedBuffer)
                    } else if attachment == Attachment::Unchanged {
                        Ok(Verdict::Unchanged)
                    } else if attachment == Attachment::Null {
                        Ok(Verdict::Detached)
                    } else {
                        Ok(Verdict::Buffer { fence, release })
                    };
                    let got = validate_commit(attachment, fence, release);
                    assert_eq!(got, expected, "{attachment:?} {fence} {release}");
                    accepted += usize::from(got.is_ok());
                }
            }
        }
        // Unchanged, Null: 1 each; SHM: 2 (no fence); DMABUF: 4.
        assert_eq!(accepted, 1 + 1 + 2 + 4);
    }

    #[test]
    fn set_acquire_fence_checks_surface_then_duplicate_then_fd() {
        let never = || -> bool { panic!("the fd is not looked at") };
        assert_eq!(
            validate_set_acquire_fence(false, true, never),
            Err(RequestError::NoSurface)
        );
        assert_eq!(
            validate_set_acquire_fence(true, true, never),
            Err(RequestError::DuplicateFence)
        );
        assert_eq!(
            validate_set_acquire_fence(true, false, || false),
            Err(RequestError::InvalidFence)
        );
        assert_eq!(validate_set_acquire_fence(true, false, || true), Ok(()));
    }

    #[test]
    fn get_release_checks_surface_then_duplicate() {
        assert_eq!(
            validate_get_release(false, true),
            Err(RequestError::NoSurface)
        );
        assert_eq!(
            validate_get_release(true, true),
            Err(RequestError::DuplicateRelease)
        );
        assert_eq!(validate_get_release(true, false), Ok(()));
    }

    #[test]
    fn error_codes_are_the_protocols() {
        use smithay::reexports::wayland_protocols::wp::linux_explicit_synchronization::zv1::server::zwp_linux_surface_synchronization_v1::Error;
        assert_eq!(
            RequestError::InvalidFence.code(),
            Error::InvalidFence as u32
        );
        assert_eq!(
            RequestError::DuplicateFence.code(),
            Error::DuplicateFence as u32
        );
        assert_eq!(
            RequestError::DuplicateRelease.code(),
            Error::DuplicateRelease as u32
        );
        assert_eq!(RequestError::NoSurface.code(), Error::NoSurface as u32);
        assert_eq!(
            CommitError::UnsupportedBuffer.code(),
            Error::UnsupportedBuffer as u32
        );
        assert_eq!(CommitError::NoBuffer.code(), Error::NoBuffer as u32);
    }
}
