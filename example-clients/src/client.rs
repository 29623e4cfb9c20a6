//! The blocking [`Client`]: connecting, round trips and waiting for conditions with a timeout.
//!
//! Window and drawing helpers live in `window.rs`; this file only owns the connection.

use std::fmt;
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use rustix::event::{PollFd, PollFlags, Timespec};
use rustix::io::Errno;
use wayland_client::backend::protocol::ProtocolError;
use wayland_client::backend::WaylandError;
use wayland_client::protocol::wl_registry::WlRegistry;
use wayland_client::{Connection, Dispatch, DispatchError, EventQueue, Proxy, QueueHandle};

use crate::ClientState;

/// libwayland's fallback when `WAYLAND_DISPLAY` is unset.
const DEFAULT_DISPLAY: &str = "wayland-0";

/// A blocking Wayland client for test drivers and example programs.
///
/// Every call either returns promptly or blocks with an explicit timeout, so a misbehaving
/// compositor fails a test instead of hanging it.
pub struct Client {
    conn: Connection,
    queue: EventQueue<ClientState>,
    qh: QueueHandle<ClientState>,
    registry: WlRegistry,
    endpoint: String,
    /// Everything the server told us; public so tests can assert on it directly.
    pub state: ClientState,
}

/// The error [`Client::dispatch_until`] returns (inside `anyhow::Error`) when time ran out, so
/// callers can tell "nothing happened yet" from a broken connection with `err.is::<Timeout>()`.
#[derive(Debug, Clone)]
pub struct Timeout {
    /// The `what` passed to `dispatch_until`.
    pub what: String,
    /// How long we waited.
    pub after: Duration,
}

impl fmt::Display for Timeout {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "timed out after {:?} waiting for {}",
            self.after, self.what
        )
    }
}

impl std::error::Error for Timeout {}

impl Client {
    /// Connect like libwayland does: `name` is a `WAYLAND_DISPLAY` value (a name relative to
    /// `$XDG_RUNTIME_DIR`, or an absolute path).
    pub fn connect_to(name: &str) -> anyhow::Result<Client> {
        let path = socket_path(name)?;
        let stream = UnixStream::connect(&path)
            .with_context(|| format!("connecting to Wayland socket {}", path.display()))?;
        let conn = Connection::from_socket(stream)
            .with_context(|| format!("setting up the connection on {}", path.display()))?;
        Client::init(conn, path.display().to_string())
    }

    /// Connect using `WAYLAND_SOCKET` / `WAYLAND_DISPLAY` from the environment, in libwayland's
    /// order of preference (`WAYLAND_DISPLAY` defaults to `wayland-0`).
    pub fn connect_env() -> anyhow::Result<Client> {
        if let Ok(fd) = std::env::var("WAYLAND_SOCKET") {
            let conn = Connection::connect_to_env()
                .with_context(|| format!("using the inherited socket WAYLAND_SOCKET={fd}"))?;
            return Client::init(conn, format!("WAYLAND_SOCKET={fd}"));
        }
        let name = std::env::var("WAYLAND_DISPLAY").unwrap_or_else(|_| DEFAULT_DISPLAY.to_owned());
        Client::connect_to(&name)
    }

    /// Binds the globals and waits until the first burst of their events (shm formats, output
    /// modes, presentation clock) has arrived, so callers see a complete `state`.
    fn init(conn: Connection, endpoint: String) -> anyhow::Result<Client> {
        let queue = conn.new_event_queue();
        let qh = queue.handle();
        let registry = conn.display().get_registry(&qh, ());
        let mut client = Client {
            conn,
            queue,
            qh,
            registry,
            endpoint,
            state: ClientState::default(),
        };
        // First round trip: the globals; second: the events of the objects bound in the first.
        client
            .roundtrip()
            .context("waiting for the registry's globals")?;
        client
            .roundtrip()
            .context("waiting for the bound globals' initial events")?;
        Ok(client)
    }

    /// What we connected to: the socket path, or `WAYLAND_SOCKET=<fd>`.
    pub fn endpoint(&self) -> &str {
        &self.endpoint
    }

    /// The underlying connection, for tests that need raw access.
    pub fn connection(&self) -> &Connection {
        &self.conn
    }

    /// The handle to create objects on this client's queue, for tests that build their own
    /// (possibly bad) requests. Use [`IgnoreEvents`](crate::IgnoreEvents) or
    /// [`EventLog`](crate::EventLog) as user data for interfaces the harness doesn't handle.
    pub fn qh(&self) -> &QueueHandle<ClientState> {
        &self.qh
    }

    /// The registry, to bind globals the harness doesn't bind itself.
    pub fn registry(&self) -> &WlRegistry {
        &self.registry
    }

    /// Binds the advertised global of interface `I` at `min(advertised, max_version, known)`.
    ///
    /// Errs if the server doesn't advertise it. Binds a new object on every call.
    pub fn bind_global<I, U>(&self, max_version: u32, data: U) -> anyhow::Result<I>
    where
        I: Proxy + 'static,
        U: Send + Sync + 'static,
        ClientState: Dispatch<I, U>,
    {
        let interface = I::interface();
        let (name, _, advertised) = self
            .state
            .globals
            .iter()
            .find(|(_, i, _)| i == interface.name)
            .ok_or_else(|| anyhow!("the compositor does not advertise {}", interface.name))?;
        let version = (*advertised).min(max_version).min(interface.version);
        Ok(self.registry.bind(*name, version, &self.qh, data))
    }

    /// One `wl_display.sync` round trip. Errors (including a protocol error posted by the
    /// server) come back as `Err`.
    pub fn roundtrip(&mut self) -> anyhow::Result<()> {
        match self.queue.roundtrip(&mut self.state) {
            Ok(_) => Ok(()),
            Err(e) => {
                self.read_what_is_left();
                Err(self.connection_error(e))
            }
        }
    }

    /// After a failed write, reads what the server sent before it closed the connection.
    ///
    /// A compositor posts a protocol error and then disconnects; if our next request hits the
    /// closed socket first (ECONNRESET/EPIPE), the error is still sitting unread in it. libwayland
    /// ignores those write errors for this reason; we read once so the error is not lost.
    fn read_what_is_left(&mut self) {
        if self.protocol_error().is_some() {
            return;
        }
        if let Some(guard) = self.queue.prepare_read() {
            let _ = guard.read();
        }
        let _ = self.queue.dispatch_pending(&mut self.state);
    }

    /// Dispatch events (blocking on the socket with poll + timeout) until `cond(&self.state)`
    /// is true.
    ///
    /// Errs with a [`Timeout`] naming `what` when time runs out, or with the connection or
    /// protocol error. `Duration::MAX` waits forever. `cond` is checked before blocking, so a
    /// condition that already holds returns at once (after dispatching what is queued).
    pub fn dispatch_until(
        &mut self,
        timeout: Duration,
        what: &str,
        mut cond: impl FnMut(&ClientState) -> bool,
    ) -> anyhow::Result<()> {
        let deadline = Instant::now().checked_add(timeout);
        loop {
            self.queue
                .dispatch_pending(&mut self.state)
                .map_err(|e| self.connection_error(e))?;
            if cond(&self.state) {
                return Ok(());
            }
            // A full socket buffer is not an error: wait until it drains, along with reading.
            let mut wants_write = false;
            match self.queue.flush() {
                Ok(()) => {}
                Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {
                    wants_write = true;
                }
                Err(e) => return Err(self.connection_error(e)),
            }
            // `None` means events are already queued: dispatch them first.
            let Some(guard) = self.queue.prepare_read() else {
                continue;
            };

            let remaining = match deadline {
                Some(deadline) => {
                    let left = deadline.saturating_duration_since(Instant::now());
                    if left.is_zero() {
                        drop(guard);
                        return Err(Timeout {
                            what: what.to_owned(),
                            after: timeout,
                        }
                        .into());
                    }
                    Some(Timespec::try_from(left).unwrap_or(Timespec {
                        tv_sec: i64::MAX,
                        tv_nsec: 0,
                    }))
                }
                None => None,
            };
            let mut flags = PollFlags::IN;
            if wants_write {
                flags |= PollFlags::OUT;
            }
            let ready = {
                let mut fds = [PollFd::from_borrowed_fd(guard.connection_fd(), flags)];
                match rustix::event::poll(&mut fds, remaining.as_ref()) {
                    Ok(_) => fds[0]
                        .revents()
                        .intersects(PollFlags::IN | PollFlags::ERR | PollFlags::HUP),
                    Err(Errno::INTR) => false,
                    Err(e) => return Err(anyhow!(e).context("poll on the Wayland socket")),
                }
            };
            if !ready {
                drop(guard); // cancels the read; we'll loop to re-check flush and the deadline
                continue;
            }
            match guard.read() {
                Ok(_) => {}
                Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(e) => return Err(self.connection_error(e)),
            }
        }
    }

    /// The protocol error the server sent us, if any.
    pub fn protocol_error(&self) -> Option<ProtocolError> {
        self.conn.protocol_error()
    }

    /// Sends queued requests now. Requests are otherwise sent when the client next waits
    /// (`roundtrip`, `dispatch_until`) or drops.
    pub fn flush(&self) -> anyhow::Result<()> {
        match self.conn.flush() {
            Ok(()) => Ok(()),
            // The rest goes out on the next wait, which polls for writability.
            Err(WaylandError::Io(e)) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => Err(self.connection_error(e)),
        }
    }

    /// Turns a dispatch/backend error into one that says what went wrong in protocol terms:
    /// the protocol error when the server posted one (a bare "broken pipe" hides why it hung up
    /// on us), or that the compositor went away.
    fn connection_error(&self, err: impl Into<ConnectionFailure>) -> anyhow::Error {
        if let Some(pe) = self.protocol_error() {
            return anyhow!(
                "protocol error {} on {}@{}: {}",
                pe.code,
                pe.object_interface,
                pe.object_id,
                pe.message
            );
        }
        let endpoint = &self.endpoint;
        match err.into() {
            ConnectionFailure::Wayland(WaylandError::Io(e)) if is_hang_up(&e) => {
                anyhow!("the compositor at {endpoint} closed the connection ({e})")
            }
            ConnectionFailure::Wayland(e) => {
                anyhow!("Wayland connection to {endpoint} failed: {e}")
            }
            ConnectionFailure::Dispatch(e) => {
                anyhow!("bad event from the compositor at {endpoint}: {e}")
            }
        }
    }
}

/// The two error types wayland-client hands us, funnelled into [`Client::connection_error`].
enum ConnectionFailure {
    Wayland(WaylandError),
    Dispatch(DispatchError),
}

impl From<WaylandError> for ConnectionFailure {
    fn from(e: WaylandError) -> Self {
        ConnectionFailure::Wayland(e)
    }
}

impl From<DispatchError> for ConnectionFailure {
    fn from(e: DispatchError) -> Self {
        match e {
            DispatchError::Backend(e) => ConnectionFailure::Wayland(e),
            e => ConnectionFailure::Dispatch(e),
        }
    }
}

fn is_hang_up(e: &std::io::Error) -> bool {
    use std::io::ErrorKind::{BrokenPipe, ConnectionAborted, ConnectionReset, UnexpectedEof};
    matches!(
        e.kind(),
        BrokenPipe | ConnectionReset | ConnectionAborted | UnexpectedEof
    )
}

impl Drop for Client {
    /// Tears windows down in protocol order so the server sees a clean exit, not a hang-up.
    fn drop(&mut self) {
        for i in 0..self.state.windows.len() {
            self.destroy_window(crate::WindowId(i));
        }
        // Nothing useful to do with an error while dropping; the server cleans up either way.
        let _ = self.conn.flush();
    }
}

/// Resolves a `WAYLAND_DISPLAY` value the way libwayland does.
fn socket_path(name: &str) -> anyhow::Result<PathBuf> {
    let name = PathBuf::from(name);
    if name.is_absolute() {
        return Ok(name);
    }
    let Some(dir) = std::env::var_os("XDG_RUNTIME_DIR") else {
        bail!(
            "XDG_RUNTIME_DIR is not set, so the relative socket name {} can't be resolved",
            name.display()
        );
    };
    let dir = PathBuf::from(dir);
    if !dir.is_absolute() {
        bail!(
            "XDG_RUNTIME_DIR ({}) is not an absolute path",
            dir.display()
        );
    }
    Ok(dir.join(name))
}
