//! Where a new toplevel goes: a cascade from the output's top-left corner, so every window stays
//! at least partly visible and tests can predict positions.

use smithay::utils::{Logical, Point, Rectangle};

/// The first window's top-left corner, in output coordinates.
pub const CASCADE_ORIGIN: Point<i32, Logical> = Point::new(32, 32);
/// How far each further window moves right and down.
pub const CASCADE_STEP: i32 = 32;

/// Hands out cascade positions.
#[derive(Debug, Default)]
pub struct Cascade {
    placed: u32,
}

impl Cascade {
    /// The position of the next window on an output with geometry `area`. The cascade restarts
    /// once it would start past the middle of the output.
    pub fn next(&mut self, area: Rectangle<i32, Logical>) -> Point<i32, Logical> {
        let offset = |n: u32| {
            CASCADE_ORIGIN + Point::from((n as i32 * CASCADE_STEP, n as i32 * CASCADE_STEP))
        };
        let mut candidate = offset(self.placed);
        if candidate.x > area.size.w / 2 || candidate.y > area.size.h / 2 {
            self.placed = 0;
            candidate = offset(0);
        }
        self.placed += 1;
        area.loc + candidate
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cascades_then_wraps() {
        let area = Rectangle::from_size((200, 200).into());
        let mut cascade = Cascade::default();
        assert_eq!(cascade.next(area), Point::from((32, 32)));
        assert_eq!(cascade.next(area), Point::from((64, 64)));
        assert_eq!(cascade.next(area), Point::from((96, 96)));
        // 128 > 200 / 2: start over.
        assert_eq!(cascade.next(area), Point::from((32, 32)));
    }

    #[test]
    fn follows_the_output_origin() {
        let area = Rectangle::new((1000, 0).into(), (800, 600).into());
        assert_eq!(Cascade::default().next(area), Point::from((1032, 32)));
    }
}
