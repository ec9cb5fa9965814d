//! Configuration of the sample stage (`[sample]` in a preset).

use serde::{Deserialize, Serialize};
use tp06_artifact::SettingError;
use tp06_model::Precision;

/// One prompt, with its own temperature if it differs from the default.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prompt {
    /// The text the model continues.
    pub text: String,
    /// Sampling temperature for this prompt (else `sample.temperature`).
    pub temperature: Option<f64>,
}

/// The sample stage's settings; the course's values are in `presets/tp06.toml`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// The prompts generated after training (course: four).
    pub prompts: Vec<Prompt>,
    /// Sample (`true`, the course) or decode greedily (`false`).
    pub do_sample: bool,
    /// Softmax temperature (course: 0.7; 0 means greedy).
    pub temperature: f64,
    /// Keep only the k most likely tokens (course: 50; 0 disables).
    pub top_k: usize,
    /// Keep the smallest set of tokens whose probability reaches p (course: 0.9; 1 disables).
    pub top_p: f64,
    /// Penalise tokens already in the text, prompt included (course: 1.2; 1 disables).
    pub repetition_penalty: f64,
    /// Maximum total length in tokens, prompt included (course: 150).
    pub max_length: usize,
    /// Generate at most this many new tokens instead (overrides `max_length`).
    pub max_new_tokens: Option<usize>,
    /// Samples per prompt.
    pub num_samples: usize,
    /// Seed of the sampler.
    pub seed: u64,
    /// Also generate with the base model, same prompts and seeds, for comparison.
    pub compare_base: bool,
    /// The weights' format for generation, converted at load: `f32` (the
    /// default); `bf16` (the products' weights and the head in bf16, f32
    /// around them, as llama.cpp's bf16 models: half of the bytes); `int8`
    /// (llama.cpp's Q8_0 blocks for the same weights: a quarter of the bytes).
    #[serde(default, skip_serializing_if = "Precision::is_f32")]
    pub precision: Precision,
}

impl Config {
    /// How long each continuation may grow: `max_new_tokens` new tokens when
    /// set, else up to `max_length` in all.
    pub fn length(&self) -> crate::Length {
        match self.max_new_tokens {
            Some(n) => crate::Length::New(n),
            None => crate::Length::Total(self.max_length),
        }
    }

    /// Checks the values serde cannot.
    pub fn validate(&self) -> Result<(), SettingError> {
        let fail = |key: &str, problem: String| Err(SettingError::new(format!("sample.{key}"), problem));
        let temperatures = std::iter::once(self.temperature).chain(self.prompts.iter().filter_map(|p| p.temperature));
        for t in temperatures {
            if !(t >= 0.0 && t.is_finite()) {
                return fail("temperature", format!("{t} must be ≥ 0 (0 means greedy)"));
            }
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return fail("top_p", format!("{} must be in (0, 1]", self.top_p));
        }
        if !(self.repetition_penalty > 0.0 && self.repetition_penalty.is_finite()) {
            return fail("repetition_penalty", format!("{} must be > 0 (1 disables)", self.repetition_penalty));
        }
        if self.max_length == 0 && self.max_new_tokens.is_none() {
            return fail("max_length", "0; use at least 1 (course: 150)".into());
        }
        if self.num_samples == 0 {
            return fail("num_samples", "0; use at least 1".into());
        }
        Ok(())
    }
}

/// What an ad-hoc generation changes of the `[sample]` settings (`None`: as
/// configured).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Overrides {
    /// Greedy decoding, transformers' greedy `generate`: no sampling, and no
    /// repetition penalty unless one is given.
    pub greedy: bool,
    /// `temperature`.
    pub temperature: Option<f64>,
    /// `top_k`.
    pub top_k: Option<usize>,
    /// `top_p`.
    pub top_p: Option<f64>,
    /// `repetition_penalty`.
    pub repetition_penalty: Option<f64>,
    /// `max_length` (prompt included).
    pub max_length: Option<usize>,
    /// `max_new_tokens` (wins over `max_length`).
    pub max_new_tokens: Option<usize>,
    /// `num_samples`.
    pub num_samples: Option<usize>,
    /// `seed`.
    pub seed: Option<u64>,
    /// `precision`.
    pub precision: Option<Precision>,
}

/// The settings of an ad-hoc generation.
#[derive(Debug, Clone, PartialEq)]
pub struct AdHoc {
    /// The processing chain.
    pub processing: crate::Processing,
    /// How long each continuation may grow.
    pub length: crate::Length,
    /// Continuations per prompt.
    pub samples: usize,
    /// The sampler's seed.
    pub seed: u64,
    /// The weights' precision.
    pub precision: Precision,
}

impl Overrides {
    /// `config` with these overrides, checked; an error names the setting as
    /// `name(key)` says (its flag), given the key without `sample.`.
    pub fn apply(&self, config: &Config, name: &dyn Fn(&str) -> String) -> Result<AdHoc, SettingError> {
        let mut merged = config.clone();
        merged.do_sample = !self.greedy && config.do_sample;
        merged.temperature = self.temperature.unwrap_or(config.temperature);
        merged.top_k = self.top_k.unwrap_or(config.top_k);
        merged.top_p = self.top_p.unwrap_or(config.top_p);
        let penalty = if self.greedy { 1.0 } else { config.repetition_penalty };
        merged.repetition_penalty = self.repetition_penalty.unwrap_or(penalty);
        merged.num_samples = self.num_samples.unwrap_or(config.num_samples);
        merged.max_length = self.max_length.unwrap_or(config.max_length);
        if self.max_new_tokens.is_some() {
            merged.max_new_tokens = self.max_new_tokens;
        } else if self.max_length.is_some() {
            merged.max_new_tokens = None;
        }
        merged.validate().map_err(|e| e.renamed(|key| name(key.trim_start_matches("sample."))))?;
        Ok(AdHoc {
            processing: crate::Processing {
                do_sample: merged.do_sample,
                temperature: merged.temperature,
                top_k: merged.top_k,
                top_p: merged.top_p,
                repetition_penalty: merged.repetition_penalty,
            },
            length: merged.length(),
            samples: merged.num_samples,
            seed: self.seed.unwrap_or(config.seed),
            precision: self.precision.unwrap_or(config.precision),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Length;

    fn config() -> Config {
        Config {
            prompts: Vec::new(),
            do_sample: true,
            temperature: 0.7,
            top_k: 50,
            top_p: 0.9,
            repetition_penalty: 1.2,
            max_length: 150,
            max_new_tokens: None,
            num_samples: 1,
            seed: 42,
            compare_base: false,
            precision: Precision::F32,
        }
    }

    fn flag(key: &str) -> String {
        format!("--{}", key.replace('_', "-"))
    }

    #[test]
    fn no_override_keeps_the_settings_and_each_one_replaces_its_own() {
        let c = config();
        let same = Overrides::default().apply(&c, &flag).unwrap();
        assert_eq!(
            same.processing,
            crate::Processing { do_sample: true, temperature: 0.7, top_k: 50, top_p: 0.9, repetition_penalty: 1.2 }
        );
        assert_eq!((same.length, same.samples, same.seed), (Length::Total(150), 1, 42));
        let changed = Overrides {
            temperature: Some(0.1),
            top_k: Some(3),
            top_p: Some(0.5),
            repetition_penalty: Some(1.5),
            num_samples: Some(4),
            seed: Some(7),
            max_new_tokens: Some(9),
            precision: Some(Precision::Bf16),
            ..Default::default()
        }
        .apply(&c, &flag)
        .unwrap();
        assert_eq!(
            changed.processing,
            crate::Processing { do_sample: true, temperature: 0.1, top_k: 3, top_p: 0.5, repetition_penalty: 1.5 }
        );
        assert_eq!((changed.length, changed.samples, changed.seed), (Length::New(9), 4, 7));
        assert_eq!(changed.precision, Precision::Bf16);
    }

    #[test]
    fn greedy_drops_sampling_and_the_penalty_unless_one_is_given() {
        let c = config();
        let greedy = Overrides { greedy: true, ..Default::default() }.apply(&c, &flag).unwrap();
        assert!(!greedy.processing.do_sample);
        assert_eq!(greedy.processing.repetition_penalty, 1.0);
        let penalised =
            Overrides { greedy: true, repetition_penalty: Some(1.3), ..Default::default() }.apply(&c, &flag).unwrap();
        assert_eq!(penalised.processing.repetition_penalty, 1.3);
    }

    #[test]
    fn a_max_length_replaces_a_configured_max_new_tokens_and_zero_is_refused_by_its_flag() {
        let c = Config { max_new_tokens: Some(20), ..config() };
        assert_eq!(Overrides::default().apply(&c, &flag).unwrap().length, Length::New(20));
        let total = Overrides { max_length: Some(60), ..Default::default() }.apply(&c, &flag).unwrap();
        assert_eq!(total.length, Length::Total(60));
        let zero = Overrides { max_length: Some(0), ..Default::default() }.apply(&c, &flag).unwrap_err();
        assert!(zero.to_string().starts_with("--max-length: 0"), "{zero}");
        let top_p = Overrides { top_p: Some(2.0), ..Default::default() }.apply(&c, &flag).unwrap_err();
        assert_eq!(top_p, SettingError::new("--top-p", "2 must be in (0, 1]"));
        assert_eq!(
            Config { top_p: 2.0, ..config() }.validate().unwrap_err().to_string(),
            "sample.top_p: 2 must be in (0, 1]",
            "the file's names"
        );
    }
}
