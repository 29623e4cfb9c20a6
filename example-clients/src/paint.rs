//! What the dma-buf clients draw: one solid colour per frame, exact, so a test can find every
//! pixel of it in a screenshot.

/// The colour of frame `frame` when no `--color` is given (0x00RRGGBB): the hue turns 30 degrees
/// a frame around twelve fully saturated colours, red first. Neighbours always differ in two
/// channels by at least 0x80, so consecutive frames are easy to tell apart on screen.
pub fn frame_color(frame: u32) -> u32 {
    const WHEEL: [u32; 12] = [
        0xff0000, 0xff8000, 0xffff00, 0x80ff00, 0x00ff00, 0x00ff80, 0x00ffff, 0x0080ff, 0x0000ff,
        0x8000ff, 0xff00ff, 0xff0080,
    ];
    WHEEL[(frame % 12) as usize]
}

/// The colour of `frame`: `fixed` if given, else [`frame_color`].
pub fn color_of(fixed: Option<u32>, frame: u32) -> u32 {
    fixed.unwrap_or_else(|| frame_color(frame))
}

/// `width * height` pixels of XRGB8888 `xrgb` (the X byte set, as opaque content should be).
pub fn solid(width: u32, height: u32, xrgb: u32) -> Vec<u32> {
    vec![0xff00_0000 | xrgb; width as usize * height as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_wheel_turns_and_repeats() {
        assert_eq!(frame_color(0), 0xff0000);
        assert_eq!(frame_color(4), 0x00ff00);
        assert_eq!(frame_color(8), 0x0000ff);
        assert_eq!(frame_color(12), frame_color(0));
        for f in 0..12 {
            assert_ne!(frame_color(f), frame_color(f + 1));
        }
        assert_eq!(color_of(Some(0x123456), 3), 0x123456);
        assert_eq!(color_of(None, 3), frame_color(3));
        assert_eq!(solid(2, 3, 0xff).len(), 6);
        assert!(solid(1, 1, 0xff).iter().all(|&p| p == 0xff0000ff));
    }
}
