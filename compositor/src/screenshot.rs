//! Screenshots on request: when to take one ([`ScreenshotPlan`]) and how it is written (PNG).

use std::fs::File;
use std::io::BufWriter;
use std::path::{Path, PathBuf};

use anyhow::Context;

/// Pixels read back from an output, tightly packed RGBA, top row first.
pub struct Capture {
    pub width: u32,
    pub height: u32,
    pub rgba: Vec<u8>,
}

impl Capture {
    /// The pixel at (x, y) as `[r, g, b, a]`.
    pub fn pixel(&self, x: u32, y: u32) -> [u8; 4] {
        let i = ((y * self.width + x) * 4) as usize;
        [
            self.rgba[i],
            self.rgba[i + 1],
            self.rgba[i + 2],
            self.rgba[i + 3],
        ]
    }

    pub fn write_png(&self, path: &Path) -> anyhow::Result<()> {
        let file = File::create(path).with_context(|| format!("creating {}", path.display()))?;
        let mut encoder = png::Encoder::new(BufWriter::new(file), self.width, self.height);
        encoder.set_color(png::ColorType::Rgba);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header()?;
        writer.write_image_data(&self.rgba)?;
        writer.finish()?;
        Ok(())
    }
}

/// When the screenshot asked for on the command line is due: `after_frames` frames after
/// `windows` toplevels have content, so it shows what clients drew rather than an empty output.
#[derive(Debug)]
pub struct ScreenshotPlan {
    pub path: PathBuf,
    pub after_frames: u32,
    pub windows: usize,
    pub exit_after: bool,
    frames_with_content: u32,
    taken: bool,
}

impl ScreenshotPlan {
    pub fn new(path: PathBuf, after_frames: u32, windows: usize, exit_after: bool) -> Self {
        ScreenshotPlan {
            path,
            after_frames,
            windows,
            exit_after,
            frames_with_content: 0,
            taken: false,
        }
    }

    /// Called once per frame with the number of windows that have content; true when this frame
    /// is the one to capture.
    pub fn is_due(&mut self, windows_with_content: usize) -> bool {
        if self.taken || windows_with_content < self.windows {
            return false;
        }
        self.frames_with_content += 1;
        self.frames_with_content > self.after_frames
    }

    pub fn mark_taken(&mut self) {
        self.taken = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_windows_then_frames() {
        let mut plan = ScreenshotPlan::new("x.png".into(), 2, 2, false);
        assert!(!plan.is_due(0));
        assert!(!plan.is_due(1));
        assert!(!plan.is_due(2));
        assert!(!plan.is_due(2));
        assert!(plan.is_due(2));
        plan.mark_taken();
        assert!(!plan.is_due(2));
    }

    #[test]
    fn zero_frames_means_the_first_frame_with_content() {
        let mut plan = ScreenshotPlan::new("x.png".into(), 0, 1, false);
        assert!(plan.is_due(1));
    }
}
