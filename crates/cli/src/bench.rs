//! `tp06 bench` and `tp06 bench-one`: the benchmark of `tp06-bench`, with its
//! training work read from the presets.

use anyhow::Result;
use tp06_bench::{BenchOptions, Freeze, Measurement, One, Workload};
use tp06_model::TrainBackend;

use crate::backend::WithBackend;
use crate::cli::LoopSize;
use crate::config::{self, ConfigArgs};

/// The training work: the loop of the `tp06` preset's `[train]` (its
/// micro-batches resized by `size`, with activation checkpointing when it
/// says so), the freeze of `freeze`'s preset.
pub fn workload(freeze: Freeze, size: LoopSize) -> Result<Workload> {
    let preset = |name: &str| config::resolve(&ConfigArgs { preset: Some(name.into()), ..Default::default() });
    let mut train = preset("tp06")?.train;
    train.batch_size = size.batch_size.unwrap_or(train.batch_size);
    train.grad_accum = size.grad_accum.unwrap_or(train.grad_accum);
    train.max_length = size.max_length.unwrap_or(train.max_length);
    train.gradient_checkpointing = size.gradient_checkpointing;
    let model = preset(freeze.preset())?.model;
    Ok(Workload { train, freeze: model.freeze, which: freeze, lora: model.lora })
}

/// One measurement in this process, on the chosen backend.
pub struct Measure {
    pub one: One,
    pub workload: Workload,
}

impl WithBackend for Measure {
    type Output = Result<Measurement>;
    fn run<B: TrainBackend>(self, device: B::Device, _name: &'static str) -> Result<Measurement> {
        Ok(tp06_bench::measure::<B>(self.one, &self.workload, device)?)
    }
}

/// The comparison with PyTorch: its table.
pub fn bench(options: &BenchOptions, size: LoopSize) -> Result<String> {
    Ok(tp06_bench::bench(options, &workload(options.freeze, size)?)?)
}

#[cfg(test)]
mod tests {
    use super::*;
    use tp06_model::names::{self, Layer, Part};

    /// The bench trains as the presets say: the course's loop, and what the
    /// `tp06` and `recommended` presets freeze (the latter: the last
    /// `NEW_ROWS` rows of `wte` train, as the added names would).
    #[test]
    fn the_bench_workloads_are_the_presets() {
        let course = workload(Freeze::Course, LoopSize::default()).unwrap();
        let t = &course.train;
        assert_eq!(
            (t.batch_size, t.grad_accum, t.max_length, t.lr.fixed(), t.max_grad_norm),
            (2, 8, 256, Some(5e-5), 1.0)
        );
        let recommended = workload(Freeze::Recommended, LoopSize::default()).unwrap();
        for name in ["mini", "small", "base"] {
            let config = tp06_bench::shape(name).unwrap();
            let course = course.plan(&config);
            assert!(!course.trains(names::WTE) && course.wte_trainable_from.is_none(), "{name}");
            let recommended = recommended.plan(&config);
            assert!(recommended.trains(names::WTE), "{name}");
            assert_eq!(recommended.wte_trainable_from, Some(config.vocab_size - tp06_bench::NEW_ROWS), "{name}");
            // Everything else as the course: wpe and the lower half frozen, the upper half trains.
            let lower = names::param(config.n_layer / 2 - 1, Layer::CAttn, Part::Weight);
            let upper = names::param(config.n_layer / 2, Layer::CAttn, Part::Weight);
            for plan in [&course, &recommended] {
                assert!(!plan.trains(names::WPE) && !plan.trains(&lower) && plan.trains(&upper), "{name}");
            }
        }
        // LoRA: the base frozen but the added rows; the lora preset's adapters.
        let lora = workload(Freeze::Lora, LoopSize::default()).unwrap();
        let config = tp06_bench::shape("base").unwrap();
        let plan = lora.plan(&config);
        assert_eq!(plan.wte_trainable_from, Some(config.vocab_size - tp06_bench::NEW_ROWS));
        assert!(!plan.trains(&names::param(23, Layer::CAttn, Part::Weight)) && !plan.trains(names::LN_F_WEIGHT));
        let adapters = lora.lora.unwrap();
        assert_eq!((adapters.r, adapters.targets.len()), (16, 4));
    }
}
