//! A virtual keyboard and mouse made with uinput (`include/uapi/linux/uinput.h`): real input
//! devices the kernel announces, udev tags and libinput opens through the seat, as it would a
//! USB keyboard. The guest loads `uinput` and `evdev` on demand ([`VirtualInput::new`]).

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::fd::AsRawFd;
use std::process::Command;
use std::time::Duration;

// `_IOW('U', 100, int)` and neighbours, `_IO('U', 1)`, `_IOW('U', 3, struct uinput_setup)`.
const UI_SET_EVBIT: libc::c_ulong = 0x4004_5564;
const UI_SET_KEYBIT: libc::c_ulong = 0x4004_5565;
const UI_SET_RELBIT: libc::c_ulong = 0x4004_5566;
const UI_DEV_SETUP: libc::c_ulong = 0x405c_5503;
const UI_DEV_CREATE: libc::c_ulong = 0x5501;
const UI_DEV_DESTROY: libc::c_ulong = 0x5502;

const EV_SYN: u16 = 0;
const EV_KEY: u16 = 1;
const EV_REL: u16 = 2;
const SYN_REPORT: u16 = 0;
const REL_X: u16 = 0;
const REL_Y: u16 = 1;
const BTN_LEFT: u16 = 0x110;
const BUS_VIRTUAL: u16 = 0x06;

pub const KEY_LEFTCTRL: u16 = 29;
pub const KEY_LEFTALT: u16 = 56;
pub const KEY_A: u16 = 30;
pub const KEY_F2: u16 = 60;

/// `struct uinput_setup`.
#[repr(C)]
struct UinputSetup {
    bustype: u16,
    vendor: u16,
    product: u16,
    version: u16,
    name: [u8; 80],
    ff_effects_max: u32,
}
const _: () = assert!(std::mem::size_of::<UinputSetup>() == 92);

/// `struct input_event` on 64-bit: a `timeval`, then type, code, value.
#[repr(C)]
struct InputEvent {
    sec: i64,
    usec: i64,
    kind: u16,
    code: u16,
    value: i32,
}
const _: () = assert!(std::mem::size_of::<InputEvent>() == 24);

/// One uinput device with keys A–Z, modifiers and F1–F12, and a relative pointer with a left
/// button; destroyed on drop.
pub struct VirtualInput {
    file: File,
}

impl VirtualInput {
    /// Loads `uinput` if needed (the guest's modprobe wrapper) and creates the device named
    /// `name`. Waits a moment for udev and libinput to see it.
    pub fn new(name: &str) -> io::Result<VirtualInput> {
        // uinput makes the device, evdev its /dev/input/event* node (libinput reads those).
        let modprobe = std::fs::read_to_string("/proc/sys/kernel/modprobe")?;
        for module in ["uinput", "evdev"] {
            let status = Command::new(modprobe.trim()).arg(module).status()?;
            if !status.success() {
                return Err(io::Error::other(format!("modprobe {module}: {status}")));
            }
        }
        let file = OpenOptions::new().write(true).open("/dev/uinput")?;
        let fd = file.as_raw_fd();
        let ioctl = |request: libc::c_ulong, arg: libc::c_ulong| {
            // SAFETY: the UI_SET_* requests take an int by value; UI_DEV_CREATE none.
            if unsafe { libc::ioctl(fd, request, arg) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(())
        };
        ioctl(UI_SET_EVBIT, EV_KEY.into())?;
        ioctl(UI_SET_EVBIT, EV_REL.into())?;
        // KEY_ESC (1) to KEY_F10 (68), KEY_F11/F12 (87, 88): a keyboard to udev's input_id.
        for key in (1..=68).chain([87, 88]) {
            ioctl(UI_SET_KEYBIT, key)?;
        }
        ioctl(UI_SET_KEYBIT, BTN_LEFT.into())?;
        ioctl(UI_SET_RELBIT, REL_X.into())?;
        ioctl(UI_SET_RELBIT, REL_Y.into())?;
        let mut setup = UinputSetup {
            bustype: BUS_VIRTUAL,
            vendor: 0x1234,
            product: 0x5678,
            version: 1,
            name: [0; 80],
            ff_effects_max: 0,
        };
        let len = name.len().min(79);
        setup.name[..len].copy_from_slice(&name.as_bytes()[..len]);
        // SAFETY: UI_DEV_SETUP takes a `struct uinput_setup *`; UinputSetup is its layout.
        if unsafe { libc::ioctl(fd, UI_DEV_SETUP, &setup) } < 0 {
            return Err(io::Error::last_os_error());
        }
        ioctl(UI_DEV_CREATE, 0)?;
        std::thread::sleep(Duration::from_millis(500));
        Ok(VirtualInput { file })
    }

    fn emit(&mut self, events: &[(u16, u16, i32)]) -> io::Result<()> {
        let mut bytes = Vec::new();
        for &(kind, code, value) in events.iter().chain([&(EV_SYN, SYN_REPORT, 0)]) {
            let event = InputEvent {
                sec: 0,
                usec: 0,
                kind,
                code,
                value,
            };
            // SAFETY: InputEvent is plain old data of the kernel's layout.
            let raw: [u8; 24] = unsafe { std::mem::transmute(event) };
            bytes.extend_from_slice(&raw);
        }
        self.file.write_all(&bytes)
    }

    /// Moves the pointer by (`dx`, `dy`).
    pub fn move_by(&mut self, dx: i32, dy: i32) -> io::Result<()> {
        self.emit(&[(EV_REL, REL_X, dx), (EV_REL, REL_Y, dy)])
    }

    /// Presses `keys` in order, then releases them in reverse.
    pub fn chord(&mut self, keys: &[u16]) -> io::Result<()> {
        for &key in keys {
            self.emit(&[(EV_KEY, key, 1)])?;
        }
        for &key in keys.iter().rev() {
            self.emit(&[(EV_KEY, key, 0)])?;
        }
        Ok(())
    }
}

impl Drop for VirtualInput {
    fn drop(&mut self) {
        // SAFETY: UI_DEV_DESTROY takes no argument.
        unsafe { libc::ioctl(self.file.as_raw_fd(), UI_DEV_DESTROY, 0) };
    }
}
