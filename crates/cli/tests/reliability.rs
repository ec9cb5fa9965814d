//! Nothing lost under interruption and faults: a real pipeline killed
//! (SIGKILL) at random points resumes to the weights of an uninterrupted run,
//! bit for bit; a crash while writing a checkpoint or before a manifest leaves
//! the previous state usable; a full disk or an unusable run directory fails
//! cleanly; the same seed writes the same artifacts.

mod common;

use std::path::Path;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{command, demo, demo_args, manifest, sha, spawn_demo, stats, text};
use tp06_artifact::{RunDir, Stage};

/// A schedule long enough to be killed inside training, with a checkpoint every 2 steps.
const SCHEDULE: &[&str] =
    &["--set", "train.max_steps=12", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=4"];

/// What a killed run may leave behind: every manifest's outputs intact (a
/// stage with a manifest is really done), every checkpoint directory whole.
/// `context` says which kill left the state, for the failure message.
fn assert_consistent(dir: &Path, context: &str) {
    common::assert_manifests_hold(dir, context);
    if let Ok(entries) = std::fs::read_dir(dir.join("train/checkpoints")) {
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with("step-") {
                for file in ["optimizer.safetensors", "state.json"] {
                    assert!(entry.path().join(file).is_file(), "{context}: {name} lacks {file}");
                }
                // The weights: all of them, or under LoRA what trains.
                let weights = ["model.safetensors", "adapter.safetensors"].map(|f| entry.path().join(f).is_file());
                assert!(weights[0] != weights[1], "{context}: {name} has not one weight file: {weights:?}");
            }
        }
    }
}

/// The files that must be identical between two runs of the same work.
fn weights_and_samples(dir: &Path) -> Vec<(String, String)> {
    ["train/export/model.safetensors", "train/best/model.safetensors", "sample/samples.jsonl"]
        .iter()
        .map(|f| (f.to_string(), sha(&dir.join(f))))
        .collect()
}

/// A small deterministic generator, so a failing kill schedule can be replayed.
struct Lcg(u64);

impl Lcg {
    fn unit(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// The kill schedule's seed: `TP06_KILL_SEED` to replay one, else a new one per run.
fn kill_seed() -> u64 {
    std::env::var("TP06_KILL_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    })
}

/// The last stage of the pipeline with a manifest.
fn last_done(dir: &Path) -> Option<Stage> {
    let run = RunDir::new(dir);
    Stage::ALL.iter().rev().find(|s| run.manifest_path(**s).exists()).copied()
}

/// A point a run passes: a stage done, or training checkpointed at a step.
#[derive(Debug, Clone, PartialEq)]
enum Marker {
    Start,
    Done(Stage),
    Checkpoint(u64),
}

impl Marker {
    /// Whether the run in `dir` has passed it.
    fn reached(&self, dir: &Path) -> bool {
        let run = RunDir::new(dir);
        match self {
            Marker::Start => true,
            Marker::Done(stage) => run.manifest_path(*stage).exists(),
            Marker::Checkpoint(step) => run.manifest_path(Stage::Train).exists() || latest_checkpoint(dir) >= *step,
        }
    }

    /// The markers the run in `dir` has passed, in the order a run passes them.
    fn passed(dir: &Path) -> Vec<Marker> {
        let run = RunDir::new(dir);
        let mut passed = Vec::new();
        for stage in Stage::ALL {
            if stage == Stage::Train {
                passed.extend((1..=latest_checkpoint(dir)).map(Marker::Checkpoint));
            }
            if run.manifest_path(stage).exists() {
                passed.push(Marker::Done(stage));
            }
        }
        passed
    }
}

/// An uninterrupted run, watched: when each marker first appeared, and the whole time.
fn timed_reference(dir: &Path, schedule: &[&str]) -> (Vec<(f64, Marker)>, f64) {
    let mut child = spawn_demo(dir, schedule, &[]);
    let started = Instant::now();
    let mut timeline: Vec<(f64, Marker)> = vec![(0.0, Marker::Start)];
    let status = loop {
        for marker in Marker::passed(dir) {
            if !timeline.iter().any(|(_, m)| *m == marker) {
                timeline.push((started.elapsed().as_secs_f64(), marker));
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(POLL);
    };
    assert!(status.success(), "the reference run failed: {status:?}");
    (timeline, started.elapsed().as_secs_f64())
}

const POLL: std::time::Duration = std::time::Duration::from_millis(2);

/// One life of the victim, aimed at `after` seconds past `marker`: whether it
/// was killed (by SIGKILL; `false` when it finished first), and what it had done.
struct Life {
    aim: String,
    killed: bool,
    done: Option<Stage>,
    checkpoint: u64,
}

fn live(victim: &Path, schedule: &[&str], marker: &Marker, after: f64, aim: String) -> Life {
    use std::os::unix::process::ExitStatusExt;
    tp06_testkit::note(&format!("kill aimed at {aim}"));
    let mut child = spawn_demo(victim, schedule, &[]);
    let mut reached: Option<Instant> = None;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if reached.is_none() && marker.reached(victim) {
            reached = Some(Instant::now());
        }
        if reached.is_some_and(|r| r.elapsed().as_secs_f64() >= after) {
            child.kill().unwrap(); // SIGKILL on Unix
            break child.wait().unwrap();
        }
        std::thread::sleep(POLL);
    };
    assert_consistent(victim, &aim);
    let killed = status.signal() == Some(libc::SIGKILL);
    assert!(killed || status.success(), "{aim}: the victim failed on its own: {status:?}");
    Life { aim, killed, done: last_done(victim), checkpoint: latest_checkpoint(victim) }
}

/// Kills land across the whole run, the short stretches after training
/// included. An uninterrupted reference run is watched for its markers
/// (manifests, checkpoints) and timed. Four kills are aimed at points drawn
/// uniformly in four equal strata of training and what precedes it, and one
/// in the first three quarters of each stretch after the last checkpoint: the
/// end of training (its last steps, the final evaluation, the export), the
/// sample stage and the demos and report, each expressed as "so long after
/// marker M". The victim, resumed each time, is killed that long after it
/// reaches M itself, so a kill lands in the same part of the work however
/// much a restart skips (a point whose marker the previous point already used
/// is dropped: its aim would be off).
///
/// A kill counts only if the child died by SIGKILL. The final run must equal
/// the reference bit for bit and its training must have resumed from the last
/// checkpoint a kill left (a resume that retrained from scratch would give
/// the same weights). The end of training and the sample stage are short:
/// when a schedule missed either (the victim ran ahead of the reference), a
/// new one is drawn, at most four times.
#[test]
fn killed_at_random_points_the_run_resumes_to_the_same_weights() {
    // Two samples of 60 tokens per prompt, so that the sample stage is not over in a blink.
    let schedule = &[
        "--set",
        "train.max_steps=20",
        "--set",
        "train.checkpoint_every=2",
        "--set",
        "train.eval_every=4",
        "--set",
        "sample.max_length=60",
        "--set",
        "sample.num_samples=2",
    ];
    let reference = tempfile::tempdir().unwrap();
    let (timeline, whole) = timed_reference(reference.path(), schedule);
    tp06_testkit::note(&format!(
        "the reference run: {}",
        timeline.iter().map(|(t, m)| format!("{m:?} at {t:.3} s")).collect::<Vec<_>>().join(", ")
    ));
    let time_of = |wanted: &Marker| timeline.iter().find(|(_, m)| m == wanted).map(|(t, _)| *t).unwrap();
    let (last_step, trained) = timeline
        .iter()
        .rev()
        .find_map(|(t, m)| if let Marker::Checkpoint(step) = m { Some((*step, *t)) } else { None })
        .expect("the reference checkpointed");
    let stretches = [
        (trained, time_of(&Marker::Done(Stage::Train))),
        (time_of(&Marker::Done(Stage::Train)), time_of(&Marker::Done(Stage::Sample))),
        (time_of(&Marker::Done(Stage::Sample)), whole),
    ];

    let seed = kill_seed();
    let mut rng = Lcg(seed);
    for attempt in 1..=4 {
        let mut points: Vec<f64> = (0..4).map(|k| trained * (k as f64 + rng.unit()) / 4.0).collect();
        // In the first three quarters of each stretch: a victim may run it faster than the reference.
        points.extend(stretches.iter().map(|(from, to)| from + (to - from) * 0.75 * rng.unit()));
        points.sort_by(f64::total_cmp);
        let victim = tempfile::tempdir().unwrap();
        let mut lives: Vec<Life> = Vec::new();
        let mut previous: Option<Marker> = None;
        for point in points {
            let (at, marker) = timeline.iter().rev().find(|(t, _)| *t <= point).unwrap().clone();
            if previous.as_ref() == Some(&marker) {
                tp06_testkit::note(&format!(
                    "seed {seed}: the point at {point:.3} s shares {marker:?} with the previous one: dropped"
                ));
                continue;
            }
            previous = Some(marker.clone());
            let aim = format!(
                "seed {seed} attempt {attempt}: {point:.3} s of {whole:.3}, {:.3} s after {marker:?}",
                point - at
            );
            let life = live(victim.path(), schedule, &marker, point - at, aim);
            let finished = !life.killed;
            lives.push(life);
            if finished {
                break;
            }
        }
        let killed: Vec<&Life> = lives.iter().filter(|l| l.killed).collect();
        let report = format!(
            "seed {seed} (replay with TP06_KILL_SEED={seed}), attempt {attempt}; kills: {:#?}",
            killed
                .iter()
                .map(|l| format!("{} → killed with {:?} done, checkpoint {}", l.aim, l.done, l.checkpoint))
                .collect::<Vec<_>>()
        );
        tp06_testkit::note(&report);
        let out = demo(victim.path(), schedule);
        assert!(out.status.success(), "{report}: {:?}", text(&out));
        assert_eq!(weights_and_samples(victim.path()), weights_and_samples(reference.path()), "{report}");
        // The training that finished resumed from the checkpoint the last kill inside training left.
        let resumable =
            killed.iter().filter(|l| l.done < Some(Stage::Train)).map(|l| l.checkpoint).next_back().unwrap_or(0);
        let resumed = stats(victim.path(), "train")["resumed_from"].as_u64().unwrap_or(0);
        assert_eq!(resumed, resumable, "{report}");
        let export = killed.iter().any(|l| l.done < Some(Stage::Train) && l.checkpoint >= last_step);
        let sample = killed.iter().any(|l| l.done == Some(Stage::Train));
        if killed.len() >= 4 && export && sample {
            return;
        }
        tp06_testkit::note(&format!(
            "attempt {attempt}: {} kills, export hit: {export}, sample hit: {sample}; drawing a new schedule",
            killed.len()
        ));
    }
    panic!("seed {seed}: four schedules in a row missed the end of training or the sample stage");
}

/// A LoRA run killed (SIGKILL) once its first checkpoint is written, or
/// crashed half-way through writing its second (which then leaves the first
/// to resume from), resumes to the adapter and
/// the merged export of an uninterrupted run, byte for byte.
#[test]
fn a_killed_lora_run_resumes_to_the_same_adapter() {
    let schedule = ["train.checkpoint_every=2", "train.max_steps=8"];
    let outputs = |dir: &Path| -> Vec<(String, String)> {
        ["train/adapter/adapter_model.safetensors", "train/export/model.safetensors", "train/best/model.safetensors"]
            .iter()
            .map(|f| (f.to_string(), common::sha(&dir.join(f))))
            .collect()
    };
    let run = |dir: &Path, fault: Option<&str>| {
        let args = common::lora_args(dir, &schedule);
        let mut cmd = command(&args.iter().map(String::as_str).collect::<Vec<_>>());
        if let Some(fault) = fault {
            cmd.env("TP06_FAULT", fault);
        }
        cmd.output().unwrap()
    };
    let reference = tempfile::tempdir().unwrap();
    assert!(run(reference.path(), None).status.success());

    // SIGKILL once the first checkpoint is whole.
    let killed = tempfile::tempdir().unwrap();
    let args = common::lora_args(killed.path(), &schedule);
    let mut child = command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let first = killed.path().join("train/checkpoints/step-00000002/state.json");
    let deadline = Instant::now() + Duration::from_secs(120);
    while !first.is_file() {
        assert!(Instant::now() < deadline && child.try_wait().unwrap().is_none(), "no checkpoint before the end");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(!killed.path().join("train/manifest.json").exists(), "killed before the end");
    assert_consistent(killed.path(), "after the kill");
    let out = run(killed.path(), None);
    assert!(out.status.success(), "{:?}", text(&out));
    assert!(stats(killed.path(), "train")["resumed_from"].as_u64() >= Some(2));
    assert_eq!(outputs(killed.path()), outputs(reference.path()));

    // A crash half-way through the second checkpoint: its adapters and wte written, its optimiser state not.
    let crashed = tempfile::tempdir().unwrap();
    assert!(!run(crashed.path(), Some("checkpoint@2")).status.success());
    assert!(crashed.path().join("train/checkpoints/step-00000002/adapter.safetensors").is_file());
    let out = run(crashed.path(), None);
    assert!(out.status.success(), "{:?}", text(&out));
    assert_eq!(stats(crashed.path(), "train")["resumed_from"], 2);
    assert_eq!(outputs(crashed.path()), outputs(reference.path()));
}

/// The latest complete checkpoint's step (0 when none).
fn latest_checkpoint(dir: &Path) -> u64 {
    std::fs::read_dir(dir.join("train/checkpoints"))
        .map(|entries| {
            entries
                .flatten()
                .filter(|e| e.path().join("state.json").is_file())
                .filter_map(|e| e.file_name().to_string_lossy().strip_prefix("step-")?.parse().ok())
                .max()
                .unwrap_or(0)
        })
        .unwrap_or(0)
}

#[test]
fn a_crash_while_writing_a_checkpoint_leaves_the_previous_one_usable() {
    let reference = tempfile::tempdir().unwrap();
    assert!(demo(reference.path(), SCHEDULE).status.success());

    let dir = tempfile::tempdir().unwrap();
    // Dies half-way through the second checkpoint (step 4): the model is written, the optimizer not.
    let status = spawn_demo(dir.path(), SCHEDULE, &[("TP06_FAULT", "checkpoint@2")]).wait().unwrap();
    assert!(!status.success());
    let checkpoints = dir.path().join("train/checkpoints");
    assert!(checkpoints.join("step-00000002/state.json").is_file());
    assert!(
        checkpoints.join(".step-00000004.tmp/model.safetensors").is_file(),
        "the half-written one is a hidden temporary"
    );
    assert!(!checkpoints.join("step-00000004").exists());
    assert!(!dir.path().join("train/manifest.json").exists());
    assert_consistent(dir.path(), "after the fault");

    // (`RUST_LOG` lifts the demo's `--quiet`.)
    let out = command(&demo_args(dir.path(), SCHEDULE).iter().map(String::as_str).collect::<Vec<_>>())
        .env("RUST_LOG", "info")
        .output()
        .unwrap();
    assert!(out.status.success(), "{:?}", text(&out));
    // The log says so, and as it went to a pipe, in plain text without colour codes.
    let (_, log) = text(&out);
    assert!(log.contains("resuming from") && !log.contains('\u{1b}'), "{log:?}");
    assert_eq!(stats(dir.path(), "train")["resumed_from"], 2);
    assert!(!checkpoints.join(".step-00000004.tmp").exists(), "the temporary is cleaned up");
    assert_eq!(weights_and_samples(dir.path()), weights_and_samples(reference.path()));
}

#[test]
fn a_crash_before_a_manifest_reruns_that_stage_and_no_other() {
    let dir = tempfile::tempdir().unwrap();
    // The third manifest is the model stage's: its weights are written, its manifest is not.
    let status = spawn_demo(dir.path(), &[], &[("TP06_FAULT", "manifest@3")]).wait().unwrap();
    assert!(!status.success());
    assert!(dir.path().join("model/model.safetensors").is_file());
    assert!(!dir.path().join("model/manifest.json").exists());
    assert_consistent(dir.path(), "after the fault");
    let out = demo(dir.path(), &[]);
    let (stdout, stderr) = text(&out);
    assert!(out.status.success(), "{stderr}");
    for expected in ["data: up to date", "vocab: up to date", "model: done", "train: done"] {
        assert!(stdout.contains(expected), "`{expected}` in {stdout}");
    }
}

#[test]
fn a_full_disk_fails_with_one_clear_line_and_no_manifest() {
    let full_at = |n: usize| {
        let dir = tempfile::tempdir().unwrap();
        let out = common::command(&common::demo_args(dir.path(), &[]).iter().map(String::as_str).collect::<Vec<_>>())
            .env("TP06_FAULT", format!("disk-full@{n}"))
            .output()
            .unwrap();
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(err.contains("No space left on device") && err.contains("the disk is full"), "{err}");
        (dir, err)
    };
    // The first write is the run's `config.toml`, the second the data stage's first file.
    let (dir, err) = full_at(1);
    assert!(err.contains("config.toml") && !dir.path().join("config.toml").exists(), "{err}");
    let (dir, _) = full_at(2);
    assert!(!dir.path().join("data/manifest.json").exists());
    assert!(
        std::fs::read_dir(dir.path().join("data"))
            .unwrap()
            .flatten()
            .all(|e| !e.file_name().to_string_lossy().contains(".tmp-")),
        "no temporary left"
    );
}

#[test]
fn an_unwritable_run_directory_fails_with_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let out = demo(&file.join("run"), &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err.trim().lines().count(), 1, "{err}");
    assert!(err.contains("run directory") && err.contains("a-file/run"), "{err}");
    // The run directory itself a file: the same hint.
    let out = demo(&file, &[]);
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("a file stands where a directory is needed"), "{err}");

    // A read-only directory. Permission bits do not bind root: as root (CI),
    // the command runs as `nobody` through setpriv, so the case is checked there too.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
        let ro = dir.path().join("read-only");
        std::fs::create_dir(&ro).unwrap();
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o555)).unwrap();
        let root = std::fs::write(ro.join("probe"), "").is_ok();
        let args = common::demo_args(&ro, &[]);
        let out = if !root {
            Some(common::command(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap())
        } else if std::process::Command::new("setpriv").arg("--version").output().is_ok_and(|o| o.status.success()) {
            let _ = std::fs::remove_file(ro.join("probe"));
            let mut cmd = std::process::Command::new("setpriv");
            cmd.args(["--reuid=65534", "--regid=65534", "--clear-groups", env!("CARGO_BIN_EXE_tp06")]).args(&args);
            cmd.env("HF_HUB_OFFLINE", "1").env_remove("TP06_FAULT").current_dir(dir.path());
            Some(cmd.output().unwrap())
        } else {
            tp06_testkit::skip("running as root without setpriv: the read-only run directory case is not checked");
            None
        };
        if let Some(out) = out {
            let (_, err) = text(&out);
            assert_eq!(out.status.code(), Some(1), "{err}");
            assert!(err.contains("not writable"), "{err}");
            assert!(std::fs::read_dir(&ro).unwrap().next().is_none(), "nothing written into the read-only directory");
        }
        std::fs::set_permissions(&ro, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

#[test]
fn the_same_seed_writes_the_same_artifacts() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    assert!(demo(a.path(), &[]).status.success());
    assert!(demo(b.path(), &[]).status.success());
    // Throughput figures are measurements, not results: the files that carry them
    // are compared without them.
    let timed = ["metrics.jsonl"];
    for stage in ["data", "vocab", "model", "train", "sample"] {
        let (ma, mb) = (manifest(a.path(), stage), manifest(b.path(), stage));
        // What was computed from what is the same too — up to `sample`, whose
        // input (train's result) includes the timed metrics.
        if stage != "sample" {
            assert_eq!(ma["fingerprint"], mb["fingerprint"], "{stage}");
        }
        for (oa, ob) in ma["outputs"].as_array().unwrap().iter().zip(mb["outputs"].as_array().unwrap()) {
            assert_eq!(oa["path"], ob["path"]);
            if !timed.iter().any(|t| oa["path"].as_str().unwrap().ends_with(t)) {
                assert_eq!(oa["sha256"], ob["sha256"], "{stage}/{}", oa["path"]);
            }
        }
        let env = &ma["environment"];
        assert_eq!(env["libraries"]["burn"], "0.21.0", "{stage}: {env}");
        assert!(env["tp06"].is_string() && env["os"].is_string(), "{stage}: {env}");
    }
    let strip = |dir: &Path| -> Vec<serde_json::Value> {
        std::fs::read_to_string(dir.join("train/metrics.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("tokens_per_second");
                v
            })
            .collect()
    };
    assert_eq!(strip(a.path()), strip(b.path()));
    for stage in ["model", "train", "sample"] {
        let env = &manifest(a.path(), stage)["environment"];
        assert_eq!(env["seed"], 42, "{stage}: {env}");
        assert_eq!(env["backend"], "flex", "{stage}: {env}");
    }
}

#[cfg(all(target_os = "linux", target_env = "gnu"))]
#[test]
fn ctrl_c_checkpoints_exits_130_and_names_the_command_that_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let schedule =
        &["--set", "train.max_steps=400", "--set", "train.checkpoint_every=2", "--set", "train.eval_every=400"];
    let args = common::demo_args(dir.path(), schedule);
    let child = common::command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let started = Instant::now();
    while latest_checkpoint(dir.path()) < 2 {
        assert!(started.elapsed().as_secs() < 120, "no checkpoint within 2 minutes");
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
    // SAFETY: a signal to our own child process.
    unsafe { libc::kill(child.id() as i32, libc::SIGINT) };
    let out = child.wait_with_output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let resume = format!("cargo xtask train --run-dir {} --resume", dir.path().display());
    assert!(err.contains("interrupted at step") && err.contains(&resume), "{err}");
    assert!(!dir.path().join("train/manifest.json").exists());
    assert!(latest_checkpoint(dir.path()) >= 2);
}

/// With standard error redirected (a CI log, `nohup`), long work is logged as
/// plain lines at a steady pace — what, how far, the ETA — and its end: no
/// progress-bar escapes or carriage returns, which a file would keep.
#[test]
fn a_redirected_log_shows_long_work_alive_in_plain_lines() {
    let dir = tempfile::tempdir().unwrap();
    let args: Vec<String> = demo_args(dir.path(), SCHEDULE).into_iter().filter(|a| a != "--quiet").collect();
    let out = command(&args.iter().map(String::as_str).collect::<Vec<_>>())
        .env("TP06_PROGRESS_EVERY", "0.05")
        .env_remove("RUST_LOG")
        .output()
        .unwrap();
    let (_, err) = text(&out);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains('\r') && !err.contains('\u{1b}'), "plain text only: {err:?}");
    let line = |prefix: &str| err.lines().find(|l| l.contains(prefix)).map(str::to_string);
    let progress = line("train: ").filter(|l| l.contains("/12 (") && l.contains("%)"));
    assert!(progress.is_some(), "a `train: N/12 (x %)` line: {err}");
    assert!(err.lines().any(|l| l.contains("train: done, 12/12 in")), "the end of training: {err}");
    assert!(err.lines().any(|l| l.contains(", ETA ")), "an ETA: {err}");
}

/// The eval losses of `metrics.jsonl`, by step.
fn eval_losses(dir: &Path) -> Vec<(u64, String)> {
    std::fs::read_to_string(dir.join("train/metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|r| !r["eval_loss"].is_null())
        .map(|r| (r["step"].as_u64().unwrap(), r["eval_loss"].to_string()))
        .collect()
}

/// SIGTERM where long work stops between two pieces of it (a tensor of the
/// model stage's weights, a validation batch, a micro-batch, a generation, a
/// token of a generation; `TP06_FAULT=…` sends it there, as a
/// user would): the stage stops, exits 130, writes no manifest and says how to
/// go on. Training keeps its state: stopped mid-step, the state before the
/// step; stopped mid-evaluation, the step, its evaluation pending. The run
/// then goes on to the uninterrupted run's weights, samples and evaluations.
#[test]
fn sigterm_stops_long_work_between_pieces_and_the_run_goes_on_to_the_same_result() {
    let reference = tempfile::tempdir().unwrap();
    assert!(demo(reference.path(), SCHEDULE).status.success());
    let batches = stats(reference.path(), "train")["valid_examples"].as_u64().unwrap().div_ceil(2);
    assert!(batches >= 2, "the base evaluation has two batches to stop between");
    let in_loop_eval = format!("eval-batch@{}", batches + 2);
    // (fault, stage stopped, what it says, last checkpoint, the step the rerun resumes from)
    let cases: [(&str, &str, &str, u64, Option<u64>); 6] = [
        ("tensor@3", "model", "the model stage stopped before it finished", 0, None),
        ("eval-batch@2", "train", "the train stage stopped before it finished", 0, None),
        ("micro-batch@7", "train", "interrupted at step 3", 3, Some(3)),
        (&in_loop_eval, "train", "interrupted at step 4", 4, Some(4)),
        ("generation@2", "sample", "the sample stage stopped before it finished", 10, None),
        // In the middle of the first generation: between two of its tokens.
        ("token@5", "sample", "the sample stage stopped before it finished", 10, None),
    ];
    for (fault, stage, says, last_checkpoint, resumed) in cases {
        let dir = tempfile::tempdir().unwrap();
        let args = demo_args(dir.path(), SCHEDULE);
        let out =
            command(&args.iter().map(String::as_str).collect::<Vec<_>>()).env("TP06_FAULT", fault).output().unwrap();
        let (_, err) = text(&out);
        assert_eq!(out.status.code(), Some(130), "{fault}: {err}");
        let again = format!("cargo xtask {stage} --run-dir {}", dir.path().display());
        assert!(err.contains(says) && err.contains(&again), "{fault}: {err}");
        assert!(!dir.path().join(stage).join("manifest.json").exists(), "{fault}: no manifest");
        assert_consistent(dir.path(), fault);
        assert_eq!(latest_checkpoint(dir.path()), last_checkpoint, "{fault}: the last checkpoint");
        let out = command(&args.iter().map(String::as_str).collect::<Vec<_>>()).output().unwrap();
        assert!(out.status.success(), "{fault}: {:?}", text(&out));
        if let Some(step) = resumed {
            assert_eq!(stats(dir.path(), "train")["resumed_from"], step, "{fault}");
        }
        assert_eq!(weights_and_samples(dir.path()), weights_and_samples(reference.path()), "{fault}");
        assert_eq!(eval_losses(dir.path()), eval_losses(reference.path()), "{fault}");
    }

    // Ad-hoc generation stops between two prompts too.
    let run = reference.path().display().to_string();
    let ad_hoc = ["sample", "--run-dir", &run, "--prompt", "Pikachu", "--prompt", "Salamèche", "--max-new-tokens", "4"];
    let out = command(&ad_hoc).env("TP06_FAULT", "generation@2").output().unwrap();
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: generation stopped before \"Salamèche\""), "{err}");
    assert!(stdout.starts_with("Pikachu"), "the first prompt's text: {stdout}");
    assert!(!stdout.lines().any(|l| l.starts_with("Salamèche")), "no second generation: {stdout}");
    // And in the middle of a generation, between two tokens: nothing printed for it.
    let out = command(&ad_hoc).env("TP06_FAULT", "token@3").output().unwrap();
    let (stdout, err) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: generation of \"Pikachu\" stopped"), "{err}");
    assert!(stdout.trim().is_empty(), "no text of a cut generation: {stdout}");

    // So does the smart-initialisation demo, writing nothing.
    let demo_file = reference.path().join("explore/smart_init.json");
    std::fs::remove_file(&demo_file).unwrap();
    let explore = ["explore", "smart-init", "--run-dir", &run, "--preset", "demo"];
    let out = command(&explore).env("TP06_FAULT", "generation@2").output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    assert!(err.contains("interrupted: the smart-initialisation demo stopped before it finished"), "{err}");
    assert!(!demo_file.exists(), "no demo written");

    // And the learning-rate range test, between two micro-batches of its sweep, writing nothing.
    let out = command(&["lr-find", "--run-dir", &run]).env("TP06_FAULT", "micro-batch@5").output().unwrap();
    let (_, err) = text(&out);
    assert_eq!(out.status.code(), Some(130), "{err}");
    let again = format!("cargo xtask lr-find --run-dir {run}");
    assert!(err.contains("the learning-rate range test stopped") && err.contains(&again), "{err}");
    assert!(!reference.path().join("lr-find/lr_find.json").exists(), "no curve written");
}
