//! Logits processing with transformers' semantics and order:
//! repetition penalty → temperature → top-k → top-p → draw.
//!
//! Each step mirrors one `LogitsProcessor` of transformers (names in the docs);
//! filtered tokens get `-inf`, as `filter_value` does there.

/// `RepetitionPenaltyLogitsProcessor`: for every distinct token already in the
/// sequence (prompt included), divide its logit by `penalty` if positive,
/// multiply it if negative.
pub fn repetition_penalty(logits: &mut [f32], seen: &[u32], penalty: f32) {
    if penalty == 1.0 {
        return;
    }
    let mut done = vec![false; logits.len()];
    for &token in seen {
        let t = token as usize;
        if t < logits.len() && !done[t] {
            done[t] = true;
            let score = logits[t];
            logits[t] = if score < 0.0 { score * penalty } else { score / penalty };
        }
    }
}

/// `TemperatureLogitsWarper`: divide every logit by `temperature`.
pub fn temperature(logits: &mut [f32], temperature: f32) {
    if temperature != 1.0 {
        for l in logits.iter_mut() {
            *l /= temperature;
        }
    }
}

/// `TopKLogitsWarper`: keep the tokens whose logit is at least the k-th
/// largest (ties with it are kept, as in transformers); `k = 0` keeps all.
pub fn top_k(logits: &mut [f32], k: usize) {
    if k == 0 || k >= logits.len() {
        return;
    }
    let mut sorted: Vec<f32> = logits.to_vec();
    let (_, kth, _) = sorted.select_nth_unstable_by(k - 1, |a, b| b.total_cmp(a));
    let threshold = *kth;
    for l in logits.iter_mut() {
        if *l < threshold {
            *l = f32::NEG_INFINITY;
        }
    }
}

/// Softmax of `logits` (in f64 for the sums).
pub fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        return vec![1.0 / logits.len() as f64; logits.len()];
    }
    let exps: Vec<f64> = logits.iter().map(|&l| ((l - max) as f64).exp()).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// `TopPLogitsWarper`: sort ascending, drop the tokens whose cumulative
/// probability is at most `1 − p` — so the kept set is the smallest whose
/// probability reaches `p` — and always keep the most likely token.
pub fn top_p(logits: &mut [f32], p: f64) {
    if p >= 1.0 {
        return;
    }
    let probs = softmax(logits);
    let mut order: Vec<usize> = (0..logits.len()).collect();
    // Ascending by logit; ties broken by index like a stable sort.
    order.sort_by(|&a, &b| logits[a].total_cmp(&logits[b]).then(a.cmp(&b)));
    let mut cumulative = 0.0f64;
    let last = order.len() - 1;
    for (rank, &i) in order.iter().enumerate() {
        cumulative += probs[i];
        if cumulative <= 1.0 - p && rank != last {
            logits[i] = f32::NEG_INFINITY;
        }
    }
}

/// The settings of one decoding.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Processing {
    /// Sample (`true`) or take the arg-max.
    pub do_sample: bool,
    /// Softmax temperature (0 means greedy).
    pub temperature: f64,
    /// Top-k (0: off).
    pub top_k: usize,
    /// Top-p (1: off).
    pub top_p: f64,
    /// Repetition penalty (1: off).
    pub repetition_penalty: f64,
}

impl Processing {
    /// Greedy decoding, nothing else.
    pub const GREEDY: Processing =
        Processing { do_sample: false, temperature: 1.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };

    /// Whether tokens are drawn (sampling on and a positive temperature).
    pub fn samples(&self) -> bool {
        self.do_sample && self.temperature > 0.0
    }

    /// Applies the processors in transformers' order; the warpers (temperature,
    /// top-k, top-p) only when sampling, as in `generate`.
    pub fn apply(&self, logits: &mut [f32], seen: &[u32]) {
        repetition_penalty(logits, seen, self.repetition_penalty as f32);
        if self.samples() {
            temperature(logits, self.temperature as f32);
            top_k(logits, self.top_k);
            top_p(logits, self.top_p);
        }
    }

    /// The next token after `seen` from its raw `logits`: processed, then
    /// drawn with one number of `rng` when sampling, else the arg-max.
    pub fn choose(&self, logits: &[f32], seen: &[u32], rng: &mut impl rand::Rng) -> u32 {
        let mut scores = logits.to_vec();
        self.apply(&mut scores, seen);
        (if self.samples() { draw(&scores, rng.random::<f64>()) } else { argmax(&scores) }) as u32
    }
}

/// The arg-max (first of equal maxima, as `torch.argmax`).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

/// Draws an index from the distribution of `logits` with the uniform `u ∈ [0, 1)`.
pub fn draw(logits: &[f32], u: f64) -> usize {
    let probs = softmax(logits);
    let mut cumulative = 0.0;
    let mut last_possible = 0;
    for (i, p) in probs.iter().enumerate() {
        if *p > 0.0 {
            last_possible = i;
            cumulative += p;
            if u < cumulative {
                return i;
            }
        }
    }
    last_possible
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn penalty_divides_positive_and_multiplies_negative_once_per_token() {
        let mut l = [2.0, -2.0, 1.0, 0.5];
        repetition_penalty(&mut l, &[0, 1, 0, 0], 2.0);
        assert_eq!(l, [1.0, -4.0, 1.0, 0.5]);
        // Ids outside the logits (a tokenizer larger than the head) are ignored.
        repetition_penalty(&mut l, &[4, 9], 2.0);
        assert_eq!(l, [1.0, -4.0, 1.0, 0.5]);
    }

    #[test]
    fn top_k_keeps_ties() {
        let mut l = [1.0, 3.0, 2.0, 2.0, 0.0];
        top_k(&mut l, 2);
        assert_eq!(l, [f32::NEG_INFINITY, 3.0, 2.0, 2.0, f32::NEG_INFINITY]);
        let mut one = [0.1, 0.5, 0.3];
        top_k(&mut one, 1);
        assert_eq!(argmax(&one), 1);
        assert_eq!(one.iter().filter(|v| v.is_finite()).count(), 1);
    }

    #[test]
    fn top_p_is_the_notebook_example() {
        // The exploration notebook's distribution: top-p 0.9 keeps the first five.
        let probs = [0.35f64, 0.25, 0.15, 0.10, 0.05, 0.04, 0.03, 0.02, 0.01];
        let mut logits: Vec<f32> = probs.iter().map(|p| p.ln() as f32).collect();
        top_p(&mut logits, 0.9);
        let kept = logits.iter().filter(|l| l.is_finite()).count();
        assert_eq!(kept, 5);
        // A dominant token is never dropped.
        let mut peaked = [10.0f32, 0.0, 0.0];
        top_p(&mut peaked, 0.01);
        assert!(peaked[0].is_finite());
        assert_eq!(peaked.iter().filter(|l| l.is_finite()).count(), 1);
        // A p so small that 1 − p rounds to 1: the cumulative sum of every token
        // reaches it, and only the explicit guard keeps the most likely one.
        let mut flat = [1.0f32, 3.0, 2.0];
        top_p(&mut flat, 1e-300);
        assert_eq!(flat, [f32::NEG_INFINITY, 3.0, f32::NEG_INFINITY]);
    }

    #[test]
    fn softmax_is_shift_invariant_and_stable_for_large_logits() {
        // e^1000 overflows f64 without the max subtracted first.
        let probs = softmax(&[1000.0, 1000.0 - 3.0f32.ln()]);
        assert!((probs[0] - 0.75).abs() < 1e-4 && (probs[1] - 0.25).abs() < 1e-4, "{probs:?}");
        assert_eq!(softmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), [0.5, 0.5]);
    }

    #[test]
    fn draw_follows_the_cumulative_distribution() {
        let logits = [0.0f32, f32::NEG_INFINITY, (3.0f32).ln()];
        assert_eq!(draw(&logits, 0.0), 0);
        assert_eq!(draw(&logits, 0.2499), 0);
        assert_eq!(draw(&logits, 0.2501), 2);
        assert_eq!(draw(&logits, 0.99999), 2);
        // u on a boundary of the cumulative distribution belongs to the next token.
        assert_eq!(draw(&[0.0; 4], 0.25), 1);
        // Ten probabilities of 0.1 sum to 1 − 2⁻⁵³: the largest u falls past
        // them, and the draw falls back on the last possible token, never on
        // a filtered one after it.
        let mut tail = vec![0.0f32; 10];
        tail.push(f32::NEG_INFINITY);
        assert_eq!(draw(&tail, 1.0 - f64::EPSILON / 2.0), 9);
    }

    #[test]
    fn argmax_takes_the_first_of_equal_maxima() {
        assert_eq!(argmax(&[1.0, 3.0, 3.0, 2.0]), 1);
        assert_eq!(argmax(&[f32::NEG_INFINITY, f32::NEG_INFINITY]), 0);
    }

    #[test]
    fn temperature_zero_means_greedy() {
        let p = Processing { do_sample: true, temperature: 0.0, top_k: 0, top_p: 1.0, repetition_penalty: 1.0 };
        assert!(!p.samples());
    }
}
