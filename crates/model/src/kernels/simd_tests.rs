//! The row loops' tests: every build of a kernel gives the baseline's bits.
use super::*;

#[test]
fn the_avx512_avx2_and_baseline_builds_of_the_kernels_give_the_same_bits() {
    // Inputs of unit scale with a spread, some exactly at the softmax's edge cases.
    let x: Vec<f32> =
        (0..1003).map(|i| ((i * 7919 % 1000) as f32 / 100.0 - 5.0) * if i % 3 == 0 { 3.0 } else { 1.0 }).collect();
    let w: Vec<f32> = (0..1003).map(|i| 0.5 + (i % 17) as f32 / 16.0).collect();
    let pad: Vec<u8> = (0..1003).map(|i| (i % 11 == 0) as u8).collect();
    let run = || {
        let mut out = vec![log_sum_exp(&x)];
        let mut row = x.clone();
        masked_softmax(&mut row, 8.0, 900, Some(&pad));
        out.extend(&row);
        let mut g = x.clone();
        softmax_backward(&row, 8.0, &mut g);
        out.extend(&g);
        let mut y = vec![0.0; x.len()];
        gelu_forward(&x, &mut y);
        out.extend(&y);
        gelu_backward(&x, &mut y);
        out.extend(&y);
        let (mean, rstd) = layer_norm_row(&x, &w, &w, 1e-5, &mut y);
        out.extend([mean, rstd]);
        out.extend(&y);
        let (mut dw, mut db) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        layer_norm_row_backward(&x, &w, mean, rstd, &mut y, &mut dw, &mut db);
        out.extend(&y);
        out.extend(&dw);
        let mut s = x.clone();
        scaled_softmax(&mut s, out[0], 0.5);
        out.extend(&s);
        let mut acc = vec![0.25; 59];
        chain_rows(&x[..15], &x[..14 * 61 + 59], 61, &mut acc);
        add_into(&w[..59], &mut acc);
        out.extend(&acc);
        let mut logits = vec![0.0; 13];
        lane_dots(&x[..75], &w[..13 * 75], &mut logits);
        out.extend(&logits);
        let (xb, wb): (Vec<half::bf16>, Vec<half::bf16>) = (
            x.iter().map(|v| half::bf16::from_f32(*v)).collect(),
            w.iter().map(|v| half::bf16::from_f32(*v)).collect(),
        );
        let mut acc = vec![0.25; 59];
        accumulate_pairs_bf16(&xb[..17], &xb[..17 * 59], &mut acc);
        out.extend(&acc);
        dots_pairs_bf16(&xb[..75], &wb[..13 * 75], &mut logits);
        out.extend(&logits);
        out.into_iter().map(f32::to_bits).collect::<Vec<_>>()
    };
    let tier = |highest: u8| {
        HIGHEST_TIER.store(highest, std::sync::atomic::Ordering::Relaxed);
        let out = run();
        HIGHEST_TIER.store(0, std::sync::atomic::Ordering::Relaxed);
        out
    };
    let (best, avx2, baseline) = (tier(0), tier(1), tier(2));
    #[cfg(target_arch = "x86_64")]
    let has = |feature: &str| match feature {
        "avx512f" => std::is_x86_feature_detected!("avx512f"),
        _ => std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("fma"),
    };
    #[cfg(not(target_arch = "x86_64"))]
    let has = |_: &str| false;
    for (feature, build) in [("avx512f", "AVX-512"), ("avx2", "AVX2 + FMA")] {
        if !has(feature) {
            tp06_testkit::note(&format!("this CPU has no {build}: that build of the kernels was not compared"));
        }
    }
    assert_eq!(avx2, baseline, "AVX2 + FMA against the baseline");
    assert_eq!(best, baseline, "the best build (AVX-512 where the CPU has it) against the baseline");
}

#[test]
fn exp_is_within_two_ulp_of_libm_and_saturates_like_it() {
    let mut worst = 0.0f64;
    let mut x = -87.0f32;
    while x < 88.0 {
        let (ours, libm) = (exp(x) as f64, (x as f64).exp());
        worst = worst.max(((ours - libm) / libm).abs());
        x += 0.0137;
    }
    assert!(worst < 2.5e-7, "relative error {worst}");
    assert_eq!(exp(f32::NEG_INFINITY), 0.0);
    assert_eq!(exp(-100.0), 0.0);
    assert_eq!(exp(0.0), 1.0);
    assert!(exp(f32::NAN).is_nan());
}
