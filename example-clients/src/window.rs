//! xdg_toplevel windows on a [`Client`]: creating, configuring, drawing and destroying them.

use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use wayland_client::protocol::wl_shm;
use wayland_client::Proxy;

use crate::shm::ShmBuffer;
use crate::state::WindowState;
use crate::{Client, WindowId};

impl Client {
    /// Create a `wl_surface` + `xdg_surface` + `xdg_toplevel` with `title` and `app_id`, commit
    /// it without a buffer (the initial commit that asks for a configure) and return its id.
    ///
    /// Every `xdg_surface.configure` is acked automatically as it arrives.
    ///
    /// # Panics
    /// If the server doesn't advertise `wl_compositor` or `xdg_wm_base`; use
    /// [`try_create_window`](Self::try_create_window) to get an error instead.
    pub fn create_window(&mut self, title: &str, app_id: &str) -> WindowId {
        match self.try_create_window(title, app_id) {
            Ok(id) => id,
            Err(e) => panic!("create_window: {e:#}"),
        }
    }

    /// Like [`create_window`](Self::create_window), but errs when a needed global is missing.
    pub fn try_create_window(&mut self, title: &str, app_id: &str) -> anyhow::Result<WindowId> {
        let compositor = (self.state.compositor.as_ref())
            .ok_or_else(|| anyhow!("the compositor does not advertise wl_compositor"))?;
        let wm_base = (self.state.wm_base.as_ref())
            .ok_or_else(|| anyhow!("the compositor does not advertise xdg_wm_base"))?;

        let id = WindowId(self.state.windows.len());
        let qh = self.qh().clone();
        let surface = compositor.create_surface(&qh, id);
        let xdg_surface = wm_base.get_xdg_surface(&surface, &qh, id);
        let toplevel = xdg_surface.get_toplevel(&qh, id);
        toplevel.set_title(title.to_owned());
        toplevel.set_app_id(app_id.to_owned());
        surface.commit();

        let mut window = WindowState::new(surface, xdg_surface, toplevel);
        window.commits = 1;
        self.state.windows.push(window);
        self.flush_best_effort();
        Ok(id)
    }

    /// Wait (dispatch) until the window's first configure arrived; returns the suggested
    /// (width, height), where (0, 0) means the client decides.
    pub fn wait_configured(
        &mut self,
        w: WindowId,
        timeout: Duration,
    ) -> anyhow::Result<(i32, i32)> {
        self.live_window(w)?;
        let what = format!("the first configure of window {}", w.0);
        self.dispatch_until(timeout, &what, |s| s.windows[w.0].configures > 0)?;
        Ok(self.state.windows[w.0].last_configure_size)
    }

    /// Attach a fresh (or a released, reusable) shm buffer of `width` x `height` filled with
    /// `argb` (0xAARRGGBB), damage it all, request a frame callback and a presentation feedback
    /// (if `wp_presentation` is bound), and commit.
    ///
    /// Opaque colours use XRGB8888 so the compositor may skip blending; others ARGB8888.
    pub fn draw_solid(
        &mut self,
        w: WindowId,
        width: i32,
        height: i32,
        argb: u32,
    ) -> anyhow::Result<()> {
        let format = if argb >> 24 == 0xff {
            wl_shm::Format::Xrgb8888
        } else {
            wl_shm::Format::Argb8888
        };
        self.draw_format(w, width, height, format, |pixels| pixels.fill(argb))
    }

    /// Same as [`draw_solid`](Self::draw_solid), but `paint` writes the pixels: row-major
    /// ARGB8888 (so set the alpha byte), `width * height` entries, initially zero.
    pub fn draw_with(
        &mut self,
        w: WindowId,
        width: i32,
        height: i32,
        paint: impl FnOnce(&mut [u32]),
    ) -> anyhow::Result<()> {
        self.draw_format(w, width, height, wl_shm::Format::Argb8888, paint)
    }

    fn draw_format(
        &mut self,
        w: WindowId,
        width: i32,
        height: i32,
        format: wl_shm::Format,
        paint: impl FnOnce(&mut [u32]),
    ) -> anyhow::Result<()> {
        self.live_window(w)?;
        if width <= 0 || height <= 0 {
            bail!("cannot draw a {width}x{height} buffer: both sides must be positive");
        }
        let shm = (self.state.shm.clone())
            .ok_or_else(|| anyhow!("the compositor does not advertise wl_shm"))?;
        let qh = self.qh().clone();
        let presentation = self.state.presentation.clone();
        let window = &mut self.state.windows[w.0];

        // Buffers of an old size will never fit again once the window resized; drop the idle ones.
        let mut kept = Vec::with_capacity(window.buffers.len());
        for buffer in window.buffers.drain(..) {
            if buffer.busy || buffer.fits(width, height, format) {
                kept.push(buffer);
            } else {
                buffer.destroy();
            }
        }
        window.buffers = kept;

        let slot = match window.buffers.iter().position(|b| !b.busy) {
            Some(slot) => slot,
            None => {
                let buffer = ShmBuffer::new(&shm, &qh, width, height, format)
                    .with_context(|| format!("allocating a buffer for window {}", w.0))?;
                window.buffers.push(buffer);
                window.buffers.len() - 1
            }
        };

        // Both sides are positive, checked above.
        let mut pixels = vec![0u32; width as usize * height as usize];
        paint(&mut pixels);
        let buffer = &mut window.buffers[slot];
        buffer.write(&pixels)?;
        buffer.busy = true;

        let surface = &window.surface;
        surface.attach(Some(&buffer.buffer), 0, 0);
        // damage_buffer (v4+) is the unambiguous one; at scale 1 plain damage is the same area.
        if surface.version() >= 4 {
            surface.damage_buffer(0, 0, width, height);
        } else {
            surface.damage(0, 0, width, height);
        }
        surface.frame(&qh, w);
        if let Some(presentation) = &presentation {
            presentation.feedback(surface, &qh, w);
        }
        surface.commit();
        window.commits += 1;
        self.flush()
    }

    /// Ask for (`on`) or leave fullscreen; the answer arrives as a configure.
    pub fn set_fullscreen(&mut self, w: WindowId, on: bool) {
        let window = self.window_or_panic(w);
        if on {
            window.toplevel.set_fullscreen(None);
        } else {
            window.toplevel.unset_fullscreen();
        }
        self.flush_best_effort();
    }

    /// Asks for fullscreen on the output named `output` (`wl_output.name`); an error if no
    /// bound output has that name.
    pub fn set_fullscreen_on(&mut self, w: WindowId, output: &str) -> anyhow::Result<()> {
        let Some(wl_output) = self
            .state
            .outputs
            .iter()
            .find(|info| info.name.as_deref() == Some(output))
            .map(|info| info.output.clone())
        else {
            let names: Vec<_> = self
                .state
                .outputs
                .iter()
                .filter_map(|o| o.name.clone())
                .collect();
            anyhow::bail!("no output named {output} (outputs: {})", names.join(", "));
        };
        self.window_or_panic(w)
            .toplevel
            .set_fullscreen(Some(&wl_output));
        self.flush_best_effort();
        Ok(())
    }

    /// Destroy the window's objects (toplevel, xdg_surface, surface, buffers) in protocol order.
    ///
    /// The [`WindowState`] stays in `state.windows`, marked `destroyed`, so counters can still be
    /// inspected. Destroying twice is a no-op.
    pub fn destroy_window(&mut self, w: WindowId) {
        let count = self.state.windows.len();
        let Some(window) = self.state.windows.get_mut(w.0) else {
            panic!("no window with id {} (this client has {count})", w.0);
        };
        if window.destroyed {
            return;
        }
        window.destroyed = true;
        window.toplevel.destroy();
        window.xdg_surface.destroy();
        window.surface.destroy();
        for buffer in window.buffers.drain(..) {
            buffer.destroy();
        }
        self.flush_best_effort();
    }

    fn live_window(&self, w: WindowId) -> anyhow::Result<&WindowState> {
        match self.state.windows.get(w.0) {
            None => bail!(
                "no window with id {} (this client has {})",
                w.0,
                self.state.windows.len()
            ),
            Some(window) if window.destroyed => bail!("window {} was destroyed", w.0),
            Some(window) => Ok(window),
        }
    }

    fn window_or_panic(&self, w: WindowId) -> &WindowState {
        match self.state.windows.get(w.0) {
            Some(window) => window,
            None => panic!(
                "no window with id {} (this client has {})",
                w.0,
                self.state.windows.len()
            ),
        }
    }

    /// Flush for methods that can't return an error: a broken connection shows up on the next
    /// `roundtrip`/`dispatch_until` anyway, with the protocol error if there is one.
    fn flush_best_effort(&self) {
        let _ = self.flush();
    }
}
