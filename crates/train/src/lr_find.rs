//! The learning-rate range test (L. Smith, "Cyclical Learning Rates for
//! Training Neural Networks", 2017, §3.3; fastai's `lr_find`, whose defaults
//! it keeps): from the run's initial state, [`STEPS`] optimiser steps of the
//! run's own batches at a rate growing exponentially from [`START_LR`] to
//! [`END_LR`], the loss of each recorded and smoothed (moving average, 0.98,
//! bias-corrected), until the smoothed loss is four times its minimum. The
//! model it trains is thrown away.
//!
//! The suggestion ([`suggest`]) is the rate where the smoothed loss falls
//! fastest against log(rate) (Smith's "the learning rate where the loss
//! decreases most steeply"; fastai's `steep`), looked for only where the
//! loss is surely falling: from fastai's `valley` (two thirds down the
//! longest fall of the smoothed loss) to the smoothed loss's minimum, where
//! the divergent tail begins. Measured on the shared corpus and mini model
//! (QUALITY.md): two-epoch trainings peak between 3e-3 and 1.2e-2, best near
//! 6e-3; the steepest point of the test was 4.6e-3, fastai's `lr_min` (the
//! minimum / 10) 2.4e-3 (2.5 % worse) and its `valley` 1.5e-4 (25 % worse).
//! Both are recorded beside the suggestion. Searched over the whole sweep,
//! the steepest point once landed on the third of its 100 points
//! (`train.max_length = 512`, `fixtures/lr_find/b-512.json`): at the start
//! the bias-corrected average holds a few losses, and their noise is steeper
//! than any fall; the run trained at 1.4e-7 and learned nothing.

use std::collections::BTreeMap;
use std::path::Path;

use serde::{Deserialize, Serialize};
use tp06_artifact::Watch;
use tp06_model::TrainBackend;

use crate::TrainError;
use crate::chart::{PALETTE, Series, line_chart};
use crate::config::Config;
use crate::examples::Example;
use crate::train_loop::{epoch_order, micro_batches, steps_per_epoch};
use crate::trainer::{StepError, Trainer};

/// The first rate tried.
pub const START_LR: f64 = 1e-7;
/// The last rate tried, if the loss has not diverged before.
pub const END_LR: f64 = 1.0;
/// Optimiser steps from [`START_LR`] to [`END_LR`].
pub const STEPS: u64 = 100;
/// Weight of the past in the loss's moving average (fastai's).
const SMOOTHING: f64 = 0.98;
/// The sweep stops once the smoothed loss exceeds its minimum this many times.
const DIVERGED: f64 = 4.0;

/// The rule [`RangeTest::of`] suggests with, as `lr_find.json` names it.
pub const RULE: &str = "steepest fall of the smoothed loss, between the valley and the minimum";

/// Version of `lr_find.json`.
pub const RANGE_TEST_VERSION: u32 = 1;

/// One step of the sweep.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Point {
    /// The step's learning rate.
    pub lr: f64,
    /// The step's training loss.
    pub loss: f64,
    /// Its exponential moving average, bias-corrected.
    pub smoothed: f64,
}

/// A range test's curve and suggestion (`lr_find.json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RangeTest {
    /// [`RANGE_TEST_VERSION`].
    pub version: u32,
    /// The settings and inputs it ran from (the train stage's fingerprint).
    pub fingerprint: String,
    /// The sweep, in order.
    pub points: Vec<Point>,
    /// The suggested peak learning rate.
    pub suggestion: f64,
    /// The rule that gave it.
    pub rule: String,
    /// What the other rules would suggest, by name.
    pub others: BTreeMap<String, f64>,
}

impl RangeTest {
    /// The test of `points`, with its suggestion.
    pub fn of(points: Vec<Point>, fingerprint: String) -> Result<Self, TrainError> {
        let suggestion = suggest(&points).ok_or(TrainError::RangeTest {
            reason: format!(
                "the loss did not fall over the {} steps from {START_LR:e} (the sweep stops where it diverges); set train.lr to a rate instead",
                points.len()
            ),
        })?;
        let mut others = BTreeMap::new();
        if let Some(lr) = minimum(&points) {
            others.insert("minimum/10".into(), lr / 10.0);
        }
        if let Some(lr) = valley(&points) {
            others.insert("valley".into(), lr);
        }
        if let Some(lr) = steepest(&points) {
            others.insert("steepest anywhere".into(), lr);
        }
        Ok(Self { version: RANGE_TEST_VERSION, fingerprint, points, suggestion, rule: RULE.into(), others })
    }

    /// A warning when the suggestion lies in the sweep's first decade: the
    /// loss fell from the very first rates, which a pretrained model's does
    /// not; the rate is then to be checked (or set) by hand.
    pub fn warning(&self) -> Option<String> {
        (self.suggestion < 10.0 * START_LR).then(|| {
            format!(
                "the range test suggests {:.1e}, in the first decade of its sweep (from {START_LR:.0e}): a loss that \
                 falls from the first rates is unusual, and a run at that rate may learn nothing; look at its curve \
                 (lr_find.svg) and set train.lr by hand if it is wrong",
                self.suggestion
            )
        })
    }

    /// Reads `lr_find.json`, when it is there and of this version.
    pub fn read(path: &Path) -> Option<Self> {
        let text = std::fs::read_to_string(path).ok()?;
        serde_json::from_str::<Self>(&text).ok().filter(|t| t.version == RANGE_TEST_VERSION)
    }

    /// Writes `lr_find.json` and its curve `lr_find.svg` into `dir`.
    pub fn write(&self, dir: &Path) -> Result<(), TrainError> {
        tp06_artifact::fs::write_json_atomic(&dir.join(outputs::JSON), self)?;
        tp06_artifact::fs::write_atomic(&dir.join(outputs::PLOT), self.svg()?.as_bytes())?;
        Ok(())
    }

    /// The curve: loss and smoothed loss against log₁₀ of the rate, the suggestion marked.
    pub fn svg(&self) -> Result<String, TrainError> {
        let log = |lr: f64| lr.log10();
        // The diverging end would flatten the rest: losses above 1.5× the first are drawn at that height.
        let top = 1.5 * self.points.first().map_or(f64::INFINITY, |p| p.smoothed);
        let raw = self.points.iter().map(|p| (log(p.lr), p.loss.min(top))).collect();
        let smooth: Vec<(f64, f64)> = self.points.iter().map(|p| (log(p.lr), p.smoothed.min(top))).collect();
        let at = self
            .points
            .iter()
            .min_by(|a, b| {
                (log(a.lr) - log(self.suggestion)).abs().total_cmp(&(log(b.lr) - log(self.suggestion)).abs())
            })
            .map_or(0.0, |p| p.smoothed);
        let series = [
            Series { label: "loss", points: raw, color: PALETTE[0], markers: false },
            Series { label: "smoothed", points: smooth, color: PALETTE[1], markers: false },
        ];
        let mark = ((log(self.suggestion), at), format!("suggested {:.1e}", self.suggestion));
        Ok(line_chart("Learning-rate range test", "log10(learning rate)", "training loss", &series, Some(mark))?)
    }
}

/// The range test's files.
pub mod outputs {
    /// The curve and the suggestion.
    pub const JSON: &str = "lr_find.json";
    /// The curve, drawn.
    pub const PLOT: &str = "lr_find.svg";
}

/// The sweep: optimiser steps of `trainer` over `train`'s batches (in the
/// loop's order) at growing rates, until the loss diverges, is not finite, or
/// [`STEPS`] are done; shown by `watch`, `None` when it says stop.
pub fn sweep<B: TrainBackend>(
    trainer: &mut Trainer<B>,
    train: &[Example],
    config: &Config,
    watch: Watch<'_>,
) -> Result<Option<Vec<Point>>, TrainError> {
    let per_epoch = steps_per_epoch(train.len(), config.batch_size, config.grad_accum).max(1);
    let mut task = watch.begin("lr-find", STEPS);
    let mut smoother = Smoother::default();
    let mut best = f64::INFINITY;
    let mut points = Vec::new();
    for k in 0..STEPS {
        let lr = START_LR * (END_LR / START_LR).powf(k as f64 / (STEPS - 1) as f64);
        let order = epoch_order(train.len(), config.seed, k / per_epoch, true);
        let batches = micro_batches(train, &order, k % per_epoch, config.batch_size, config.grad_accum);
        let loss = match trainer.step_unless(&batches, lr, watch.stop) {
            Ok(result) => result.loss,
            Err(StepError::Stopped) => {
                task.finish();
                return Ok(None);
            }
            Err(StepError::NonFinite(_)) => break,
            Err(StepError::NoExamples) => return Err(TrainError::EmptyStep { step: k + 1 }),
        };
        let smoothed = smoother.push(loss);
        points.push(Point { lr, loss, smoothed });
        best = best.min(smoothed);
        task.set_position(k + 1);
        task.set_message(format!("lr {lr:.1e} loss {smoothed:.4}"));
        if smoothed > DIVERGED * best {
            break;
        }
    }
    task.finish();
    Ok(Some(points))
}

/// The loss's moving average, bias-corrected (fastai's `SmoothenValue`).
#[derive(Debug, Default)]
pub struct Smoother {
    average: f64,
    count: i32,
}

impl Smoother {
    /// Adds the next loss; returns the smoothed loss so far.
    pub fn push(&mut self, loss: f64) -> f64 {
        self.count += 1;
        self.average = SMOOTHING * self.average + (1.0 - SMOOTHING) * loss;
        self.average / (1.0 - SMOOTHING.powi(self.count))
    }
}

/// The sweep's points for `(lr, loss)` pairs, smoothed as [`sweep`] does.
pub fn points_of(steps: &[(f64, f64)]) -> Vec<Point> {
    let mut smoother = Smoother::default();
    steps.iter().map(|&(lr, loss)| Point { lr, loss, smoothed: smoother.push(loss) }).collect()
}

/// The suggestion: the steepest fall of the smoothed loss between the
/// [`valley`] and the [`minimum`], both included (the module's comment says
/// why); `None` when the loss never falls.
pub fn suggest(points: &[Point]) -> Option<f64> {
    let from = valley_index(points)?;
    let to = minimum_index(points)?;
    // A fall that ends after a lower point (a second fall in the tail) has its
    // valley past the minimum: the valley is then the surest falling rate.
    let at = steepest_index(points, from..to + 1).unwrap_or(from);
    Some(points[at].lr)
}

/// fastai's `valley`: the longest decreasing subsequence of the smoothed loss,
/// and the rate two thirds of the way along it.
pub fn valley(points: &[Point]) -> Option<f64> {
    valley_index(points).map(|i| points[i].lr)
}

fn valley_index(points: &[Point]) -> Option<usize> {
    let n = points.len();
    if n < 3 {
        return None;
    }
    let losses: Vec<f64> = points.iter().map(|p| p.smoothed).collect();
    let mut longest = vec![1usize; n];
    let (mut start, mut end) = (0, 0);
    for i in 1..n {
        for j in 0..i {
            if losses[i] < losses[j] && longest[i] < longest[j] + 1 {
                longest[i] = longest[j] + 1;
            }
        }
        if longest[end] < longest[i] {
            end = i;
            start = end.saturating_sub(longest[end]); // (fastai's, one before the fall's first point)
        }
    }
    if end == 0 {
        return None; // the loss never fell
    }
    let third = (end - start) as f64 / 3.0;
    Some(start + third as usize + (third / 2.0) as usize)
}

/// The rate where the smoothed loss falls fastest against log(rate), anywhere
/// in the sweep (the rule before [`suggest`], recorded beside it).
pub fn steepest(points: &[Point]) -> Option<f64> {
    steepest_index(points, 0..points.len()).map(|i| points[i].lr)
}

/// The point of `range` (whose neighbours are in the sweep) where the
/// smoothed loss falls fastest, by central differences against log(rate).
fn steepest_index(points: &[Point], range: std::ops::Range<usize>) -> Option<usize> {
    (range.start.max(1)..range.end.min(points.len().saturating_sub(1)))
        .map(|i| {
            let slope =
                (points[i + 1].smoothed - points[i - 1].smoothed) / (points[i + 1].lr.ln() - points[i - 1].lr.ln());
            (i, slope)
        })
        .filter(|(_, slope)| *slope < 0.0)
        .min_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(i, _)| i)
}

/// The rate of the smoothed loss's minimum.
pub fn minimum(points: &[Point]) -> Option<f64> {
    minimum_index(points).map(|i| points[i].lr)
}

fn minimum_index(points: &[Point]) -> Option<usize> {
    (0..points.len()).min_by(|&a, &b| points[a].smoothed.total_cmp(&points[b].smoothed))
}

/// Runs the range test of `config` from `model` (cloned: the caller's is
/// untouched) on `train`; `None` when `watch` says stop.
pub fn run_test<B: TrainBackend>(
    model: &tp06_model::Gpt2<B>,
    plan: &tp06_model::FreezePlan,
    train: &[Example],
    config: &Config,
    device: &B::Device,
    fingerprint: String,
    watch: Watch<'_>,
) -> Result<Option<RangeTest>, TrainError> {
    let mut trainer =
        Trainer::new(model.clone(), plan.clone(), crate::trainer::TrainerSettings::of(config), device.clone());
    let Some(points) = sweep(&mut trainer, train, config, watch)? else { return Ok(None) };
    RangeTest::of(points, fingerprint).map(Some)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn curve(losses: &[f64]) -> Vec<Point> {
        losses.iter().enumerate().map(|(i, &l)| Point { lr: 10f64.powi(i as i32), loss: l, smoothed: l }).collect()
    }

    #[test]
    fn the_valley_is_two_thirds_down_the_longest_fall() {
        // Flat, a fall over indices 2..=8, then divergence.
        let points = curve(&[5.0, 5.0, 4.9, 4.5, 4.0, 3.5, 3.1, 2.8, 2.7, 3.5, 9.0]);
        // Longest decreasing run: 8 points ending at index 8, so fastai's start
        // is 0; 8 / 3 = 2.67 → 0 + 2 + 1.
        assert_eq!(valley(&points), Some(1e3));
        assert_eq!(minimum(&points), Some(1e8));
        // Central differences: the largest drop is at index 4 (3.5 − 4.5).
        assert_eq!(steepest(&points), Some(1e4));
        assert_eq!(valley(&curve(&[3.0, 3.0, 3.1])), None, "never falls");
        assert_eq!(valley(&curve(&[5.0, 4.0, 3.0, 2.0, 9.0])), Some(1e1), "falls from the first point");
    }

    #[test]
    fn the_suggestion_is_the_steepest_fall_and_a_curve_that_never_falls_has_none() {
        let test = RangeTest::of(curve(&[5.0, 5.0, 4.9, 4.5, 4.0, 3.5, 3.1, 2.8, 2.7, 3.5, 9.0]), "f".into()).unwrap();
        assert_eq!(test.suggestion, 1e4);
        assert_eq!((test.others["valley"], test.others["minimum/10"]), (1e3, 1e7));
        let err = RangeTest::of(curve(&[3.0, 3.0, 3.1]), "f".into()).unwrap_err().to_string();
        assert!(err.contains("did not fall") && err.contains("set train.lr to a rate"), "{err}");
    }

    #[test]
    fn a_steep_start_of_noise_is_not_the_suggestion() {
        // Noise at the start (6.0 → 4.0 → 5.2) steeper than the long fall after it.
        let points = curve(&[5.0, 6.0, 4.0, 5.2, 4.9, 4.8, 4.6, 4.2, 4.1, 3.9, 3.8, 3.6, 3.5, 9.0]);
        assert_eq!(steepest(&points), Some(1e1), "anywhere, the steepest point is the noise");
        // The fall 6.0 (index 1) … 3.5 (index 12): 11 points, start 1 → 1 + 3 + 1.
        assert_eq!(valley(&points), Some(1e5));
        assert_eq!(minimum(&points), Some(1e12));
        // Between them the fall is steepest at index 6 ((4.2 − 4.8) / 2 decades).
        let test = RangeTest::of(points, "f".into()).unwrap();
        assert_eq!((test.suggestion, test.rule.as_str()), (1e6, RULE));
        assert_eq!(test.others["steepest anywhere"], 1e1);
        assert_eq!(test.warning(), None);
        // The former rule's pick on this curve would be warned about (1e1 is
        // not in a real sweep's first decade; 1e-7 … 1e-6 is).
        let early = RangeTest { suggestion: 5e-7, ..test.clone() };
        assert!(early.warning().is_some_and(|w| w.contains("5.0e-7") && w.contains("first decade")));
        assert_eq!(RangeTest { suggestion: 1e-6, ..test }.warning(), None);
    }

    #[test]
    fn a_minimum_before_the_valley_leaves_the_valley() {
        // The deepest point is a dip at index 2; the longest fall comes after it.
        let points = curve(&[5.0, 5.0, 2.0, 5.0, 4.8, 4.6, 4.4, 4.2, 4.0, 3.8, 3.6, 9.0]);
        assert_eq!(RangeTest::of(points, "f".into()).unwrap().suggestion, 1e5);
    }

    #[test]
    fn the_smoother_is_a_bias_corrected_moving_average() {
        let points = points_of(&[(1.0, 2.0), (2.0, 4.0)]);
        // (0.02 · 2) / (1 − 0.98) = 2; (0.98 · 0.04 + 0.02 · 4) / (1 − 0.98²) = 0.1192 / 0.0396.
        assert!((points[0].smoothed - 2.0).abs() < 1e-12, "{}", points[0].smoothed);
        assert!((points[1].smoothed - 0.1192 / 0.0396).abs() < 1e-12, "{}", points[1].smoothed);
        assert_eq!((points[1].lr, points[1].loss), (2.0, 4.0));
    }

    #[test]
    fn a_dip_of_a_few_steps_does_not_make_the_valley() {
        // A steep one-step dip early, then a long steady fall.
        let points = curve(&[5.0, 5.0, 2.0, 5.0, 4.8, 4.6, 4.4, 4.2, 4.0, 3.8, 3.6, 9.0]);
        assert_eq!(steepest(&points), Some(1e1), "the steepest point is the dip");
        // The fall 5.0 (index 3) … 3.6 (index 10): 8 points ending at 10, start 2 → 2 + 2 + 1.
        assert_eq!(valley(&points), Some(1e5));
    }
}
