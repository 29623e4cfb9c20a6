//! Smithay handler impls, one file per protocol area; the ones with nothing to decide are here.

mod compositor;
mod dmabuf;
mod drm_syncobj;
mod explicit_sync;
mod implicit_sync;
mod output;
mod seat;
mod xdg_shell;

use smithay::{delegate_presentation, delegate_viewporter};

use crate::state::State;

delegate_viewporter!(State);
delegate_presentation!(State);
