//! Generic plumbing for the kernel backends: typed `ioctl`s on a pointer argument (plain, or with
//! libdrm's DRM restart rule), a bounded `poll()` of one fd, and the fixed-size name fields of
//! the UAPI structs.
//!
//! Shared by every backend that talks to the kernel (sync_file, dma-buf, DRM syncobj, KMS). The
//! only `unsafe` here is [`ioctl_ptr`] and [`drm_ioctl_ptr`]; each caller states, next to the
//! struct it passes, why that struct matches the kernel's layout for that opcode.

use std::io;
use std::os::fd::BorrowedFd;
use std::time::{Duration, Instant};

use rustix::event::{PollFd, PollFlags};
use rustix::io::Errno;
pub(crate) use rustix::ioctl::Opcode;
use rustix::ioctl::{opcode, Updater};

/// `_IOWR(group, nr, T)`.
pub(crate) const fn iowr<T>(group: u8, nr: u8) -> Opcode {
    opcode::read_write::<T>(group, nr)
}

/// `_IOW(group, nr, T)`.
pub(crate) const fn iow<T>(group: u8, nr: u8) -> Opcode {
    opcode::write::<T>(group, nr)
}

/// The DRM ioctl group (`DRM_IOCTL_BASE`, `'d'`): core DRM ioctls are `_IOWR('d', nr, T)`.
pub(crate) const DRM_IOCTL_BASE: u8 = b'd';

/// `ioctl(fd, OPCODE, arg)` for an ioctl whose argument is a pointer to one `T` that the kernel
/// reads and/or writes back. Restarts on `EINTR` (the ioctls used here are restartable: they
/// either complete or fail before changing anything). Returns the ioctl's errno as an
/// [`io::Error`].
///
/// # Safety
///
/// `OPCODE` must be an ioctl that takes a pointer to a `T`, and `T` must be `#[repr(C)]` with
/// exactly the kernel's layout for it (size, alignment, field order): the kernel reads and writes
/// `size_of::<T>()` bytes through the pointer. Pointers *inside* `T` (e.g. an array address in a
/// `__u64`) must be valid for what the kernel does with them.
pub(crate) unsafe fn ioctl_ptr<const OPCODE: Opcode, T>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
) -> io::Result<()> {
    // SAFETY: forwarded to the caller.
    unsafe { ioctl_retrying::<OPCODE, T>(fd, arg, &[Errno::INTR]) }
}

/// [`ioctl_ptr`] with libdrm's `drmIoctl()` restart rule for DRM ioctls: restarts on `EINTR`
/// **and** `EAGAIN` (a DRM ioctl returns `EAGAIN` only when it was interrupted before doing
/// anything, e.g. an atomic commit racing a signal, and libdrm retries it the same way).
///
/// # Safety
///
/// As for [`ioctl_ptr`].
pub(crate) unsafe fn drm_ioctl_ptr<const OPCODE: Opcode, T>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
) -> io::Result<()> {
    // SAFETY: forwarded to the caller.
    unsafe { ioctl_retrying::<OPCODE, T>(fd, arg, &[Errno::INTR, Errno::AGAIN]) }
}

/// The loop of [`ioctl_ptr`] and [`drm_ioctl_ptr`]: restarts while the errno is in `restart`.
///
/// # Safety
///
/// As for [`ioctl_ptr`].
unsafe fn ioctl_retrying<const OPCODE: Opcode, T>(
    fd: BorrowedFd<'_>,
    arg: &mut T,
    restart: &[Errno],
) -> io::Result<()> {
    loop {
        // SAFETY: forwarded to the caller: OPCODE takes a `*mut T` with T's layout.
        let result = unsafe { rustix::ioctl::ioctl(fd, Updater::<OPCODE, T>::new(arg)) };
        match result {
            Err(errno) if restart.contains(&errno) => continue,
            other => return other.map_err(io::Error::from),
        }
    }
}

/// Polls one fd for `events` for up to `timeout` (`None`: forever; `Some(ZERO)`: one
/// non-blocking check, one syscall). Returns whether any of `events` is ready. Restarts on
/// `EINTR` against the original deadline. `POLLNVAL` (not an fd `poll()` accepts, e.g. an
/// `O_PATH` fd) is reported as `EBADF`.
pub(crate) fn poll_one(
    fd: BorrowedFd<'_>,
    events: PollFlags,
    timeout: Option<Duration>,
) -> io::Result<bool> {
    let deadline = timeout.and_then(|t| Instant::now().checked_add(t));
    loop {
        let remaining = match (timeout, deadline) {
            (None, _) | (Some(_), None) => None,
            (Some(_), Some(deadline)) => {
                let left = deadline.saturating_duration_since(Instant::now());
                Some(rustix::time::Timespec {
                    tv_sec: left.as_secs() as i64,
                    tv_nsec: left.subsec_nanos() as _,
                })
            }
        };
        let mut fds = [PollFd::from_borrowed_fd(fd, events)];
        match rustix::event::poll(&mut fds, remaining.as_ref()) {
            Ok(0) => return Ok(false),
            Ok(_) => {
                let revents = fds[0].revents();
                if revents.contains(PollFlags::NVAL) {
                    return Err(Errno::BADF.into());
                }
                return Ok(revents.intersects(events));
            }
            Err(Errno::INTR) => continue,
            Err(err) => return Err(err.into()),
        }
    }
}

/// A UAPI `char name[N]` field as a `String`: up to the first NUL, lossy UTF-8.
pub(crate) fn name_from_field(field: &[u8]) -> String {
    let len = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..len]).into_owned()
}

/// Fills a UAPI `char name[N]` field with `name`, NUL-terminated: truncated to `N - 1` bytes at a
/// UTF-8 character boundary, as the kernel's `strscpy()` would truncate (minus the split
/// character). `EINVAL` if `name` contains a NUL byte.
pub(crate) fn name_to_field<const N: usize>(name: &str) -> io::Result<[u8; N]> {
    if name.as_bytes().contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "a fence name may not contain a NUL byte",
        ));
    }
    let mut len = name.len().min(N.saturating_sub(1));
    while !name.is_char_boundary(len) {
        len -= 1;
    }
    let mut field = [0u8; N];
    field[..len].copy_from_slice(&name.as_bytes()[..len]);
    Ok(field)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_truncate() {
        let f: [u8; 8] = name_to_field("abc").unwrap();
        assert_eq!(name_from_field(&f), "abc");
        let f: [u8; 4] = name_to_field("abcdef").unwrap();
        assert_eq!(&f, b"abc\0");
        // "é" is two bytes: never split.
        let f: [u8; 4] = name_to_field("aéé").unwrap();
        assert_eq!(name_from_field(&f), "aé");
        assert!(name_to_field::<8>("a\0b").is_err());
    }
}
