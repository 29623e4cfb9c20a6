//! The listening socket: a name in $XDG_RUNTIME_DIR or an absolute path, removed (with its lock
//! file) when the compositor stops.

use anyhow::{anyhow, Context};
use smithay::reexports::calloop::generic::Generic;
use smithay::reexports::calloop::{Interest, LoopHandle, Mode, PostAction};
use smithay::reexports::wayland_server::ListeningSocket;
use tracing::{info, warn};

use crate::state::{new_client_data, State};

/// Binds the socket and accepts clients from the loop. Returns what WAYLAND_DISPLAY should say.
pub fn listen(
    requested: Option<&str>,
    handle: &LoopHandle<'static, State>,
) -> anyhow::Result<String> {
    let socket = match requested {
        Some(path) if path.starts_with('/') => ListeningSocket::bind_absolute(path.into())
            .map_err(|err| anyhow!("{err:?}"))
            .with_context(|| format!("binding the socket {path}"))?,
        Some(name) => ListeningSocket::bind(name)
            .map_err(|err| anyhow!("{err:?}"))
            .with_context(|| format!("binding the socket {name} in $XDG_RUNTIME_DIR"))?,
        None => ListeningSocket::bind_auto("wayland", 1..33)
            .map_err(|err| anyhow!("{err:?}"))
            .context("binding a wayland-N socket in $XDG_RUNTIME_DIR")?,
    };
    let name = match requested {
        Some(path) => path.to_string(),
        None => socket
            .socket_name()
            .and_then(|name| name.to_str())
            .ok_or_else(|| anyhow!("the socket has no UTF-8 name"))?
            .to_string(),
    };
    handle
        .insert_source(
            Generic::new(socket, Interest::READ, Mode::Level),
            |_, socket, state| {
                // Level-triggered: accept one client per wake-up until the backlog is empty.
                match socket.accept() {
                    Ok(Some(stream)) => {
                        if let Err(err) = state
                            .core
                            .display_handle
                            .insert_client(stream, new_client_data(&state.core.client_log))
                        {
                            warn!("cannot add a new client: {err}");
                        }
                    }
                    Ok(None) => {}
                    Err(err) => warn!("accepting a client failed: {err}"),
                }
                Ok(PostAction::Continue)
            },
        )
        .map_err(|err| anyhow!("inserting the socket source: {err}"))?;
    info!(socket = %name, "listening");
    Ok(name)
}
