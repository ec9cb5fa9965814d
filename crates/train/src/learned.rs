//! Whether a run has learned anything. A peak rate far too small (the range
//! test's former rule once gave 1.4e-7 where 3e-3 was due) trains for the
//! whole run and exports the model it started from; the loss curve is flat,
//! and nothing else says so. The loop warns at the first evaluation past a
//! tenth of the run, the stage again at its end, and the manifest records it
//! (`stats.learned_nothing`), which the report shows.

/// The share of its starting value by which the loss must have fallen. A
/// fine-tune that learns falls by far more: 6.88 → 3.33 nats on the shared
/// corpus (QUALITY.md), and at the course's 5e-5 still by about a tenth; at
/// 1.4e-7 it fell by 0.06 %.
pub const MARGIN: f64 = 0.01;

/// How much of `from` a loss fell by on its way to `to` (negative when it rose).
pub fn fall(from: f64, to: f64) -> f64 {
    (from - to) / from.abs().max(f64::MIN_POSITIVE)
}

/// Why the run has learned nothing, from the validation loss before training
/// and the best since; `None` when it fell by at least [`MARGIN`].
pub fn by_validation(before: f64, best: f64, lr: f64) -> Option<String> {
    verdict("validation loss", before, best, "", lr)
}

/// The same from the training losses logged (a run without validation): the
/// mean of the last quarter against the first quarter's; `None` when there
/// are fewer than four, or when it fell by at least [`MARGIN`].
pub fn by_training(losses: &[f64], lr: f64) -> Option<String> {
    let quarter = losses.len() / 4;
    if quarter == 0 {
        return None;
    }
    let mean = |part: &[f64]| part.iter().sum::<f64>() / part.len() as f64;
    let (first, last) = (mean(&losses[..quarter]), mean(&losses[losses.len() - quarter..]));
    verdict("training loss", first, last, ", first and last quarter of the run", lr)
}

/// The message when `what` fell by less than [`MARGIN`] from `from` to `to`.
fn verdict(what: &str, from: f64, to: f64, how: &str, lr: f64) -> Option<String> {
    let fall = fall(from, to);
    (fall < MARGIN).then(|| {
        format!(
            "the run learned nothing: its {what} fell by {:.2} % ({from:.4} → {to:.4}{how}), under {:.0} %; the \
             learning rate ({lr:.1e}) is far too small: set train.lr higher, or train.lr = \"find\"",
            100.0 * fall,
            100.0 * MARGIN
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flat_validation_loss_is_named_and_a_falling_one_is_not() {
        // Issue #52's run B: 6.882 → 6.878 in 72 steps at 1.4e-7.
        let why = by_validation(6.882, 6.878, 1.38e-7).expect("0.06 % is nothing");
        assert!(why.contains("0.06 %") && why.contains("1.4e-7") && why.contains("train.lr"), "{why}");
        assert_eq!(by_validation(6.882, 3.326, 3.35e-3), None);
        // The margin is relative: 1 % of 3.0 is 0.03.
        assert!(by_validation(3.0, 2.98, 1e-5).is_some());
        assert_eq!(by_validation(3.0, 2.96, 1e-5), None);
        // A loss that rose learned nothing either.
        assert!(by_validation(3.0, 3.5, 1.0).is_some());
    }

    #[test]
    fn the_training_losses_compare_their_first_and_last_quarters() {
        assert!(by_training(&[5.0, 5.1, 4.9, 5.0, 5.05, 4.95, 5.0, 5.0], 1e-9).is_some());
        let falling = [5.0, 4.8, 4.5, 4.2, 4.0, 3.9, 3.8, 3.7];
        assert_eq!(by_training(&falling, 1e-3), None);
        assert_eq!(by_training(&[5.0, 5.0, 5.0], 1e-9), None, "too few to say");
        let why = by_training(&[5.0; 8], 1e-9).unwrap();
        assert!(why.contains("0.00 %") && why.contains("5.0000 → 5.0000"), "{why}");
    }
}
