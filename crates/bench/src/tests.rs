//! Harness tests on the scripted runner and clock: every shipped scenario runs, and the report
//! values are exact.

use std::path::{Path, PathBuf};

use crate::compare::{compare, regressed};
use crate::energy::{DeviceProfile, EstimateMeter};
use crate::export::{self, Exporter};
use crate::harness::{reference_tier, Bench, NoProgress, TierSpec};
use crate::machine::FixedMemory;
use crate::report::{Metric, Report, WorkloadResult};
use crate::runner::{Script, ScriptedRunner};
use crate::scenario::Scenario;

fn benchmarks() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../benchmarks")
}

fn profile() -> DeviceProfile {
    DeviceProfile::load(&benchmarks().join("devices/laptop-x86.yaml")).unwrap()
}

/// Two tiers: `q8_0` (reference behaviour) and `q4_0` (perturbed logits, faster).
fn tiers(dir: &Path) -> Vec<TierSpec> {
    let mut v = Vec::new();
    for (name, bpw, len) in [("q4_0", 4.5, 300), ("q8_0", 8.5, 600)] {
        let p = dir.join(format!("{name}.gguf"));
        std::fs::write(&p, vec![7u8; len]).unwrap();
        v.push(TierSpec {
            name: name.into(),
            path: p,
            bits_per_weight: Some(bpw),
        });
    }
    v
}

fn runner(no_truncate: bool) -> ScriptedRunner {
    ScriptedRunner {
        scripts: vec![
            ("q8_0".into(), Script::default()),
            (
                "q4_0".into(),
                Script {
                    prefill_ns_per_token: 500_000,
                    decode_ns: 5_000_000,
                    noise: 0.5,
                    weight_bytes: 300_000,
                    ..Script::default()
                },
            ),
        ],
        no_truncate,
        ..Default::default()
    }
}

fn run(scenarios: &[Scenario], no_truncate: bool) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let tiers = tiers(dir.path());
    let r = runner(no_truncate);
    let mut energy = EstimateMeter { profile: profile() };
    let mut progress = NoProgress;
    let mut b = Bench {
        runner: &r,
        clock: &r.clock,
        energy: &mut energy,
        memory: &FixedMemory(Some(123 << 20)),
        progress: &mut progress,
        slmpack_version: "0.1.0".into(),
        created_unix: 1_700_000_000,
        threads: Some(2),
    };
    b.run(&tiers, scenarios, None).unwrap()
}

fn shipped(name: &str) -> Scenario {
    Scenario::load(&benchmarks().join(name)).unwrap()
}

fn metric<'a>(m: &'a [Metric], tier: &str, workload: &str, name: &str) -> &'a Metric {
    m.iter()
        .find(|x| x.tier == tier && x.workload == workload && x.metric == name)
        .unwrap_or_else(|| panic!("no {tier}/{workload}/{name}"))
}

#[test]
fn throughput_scenario_exact_values() {
    let r = run(&[shipped("throughput.yaml")], false);
    assert_eq!(r.tiers.len(), 2);
    assert_eq!(r.tiers[0].name, "q4_0", "tiers keep their given order");
    assert_eq!(r.energy_method, "estimate(laptop-x86)");
    assert_eq!(r.reference_tier, None, "no kld workload");
    let t8 = &r.tiers[1];
    assert!((t8.load_s - 0.05).abs() < 1e-12);
    assert_eq!(t8.peak_rss_bytes, Some(123 << 20));
    assert_eq!(t8.mapped_bytes, 600);
    let WorkloadResult::Speed(pp) = &t8.workloads[0].result else {
        panic!()
    };
    // 512 tokens at 1 ms each: 0.512 s, 1000 t/s, five samples, sd 0
    assert_eq!(pp.samples_s.len(), 5);
    for s in &pp.samples_s {
        assert!((s - 0.512).abs() < 1e-9);
    }
    assert!((pp.tps.mean - 1000.0).abs() < 1e-6 && pp.tps.sd < 1e-6);
    let WorkloadResult::Speed(tg) = &r.tiers[0].workloads[1].result else {
        panic!()
    };
    // q4_0 decodes in 5 ms: 200 t/s
    assert!((tg.tps.mean - 200.0).abs() < 1e-6);
    // energy: estimate from work = weights + KV per pass, n_params MACs per token (int8)
    let p = profile();
    let e = &t8.workloads[0].energy;
    let per_rep = (600_000.0 + 64.0 * 512.0) * p.dram_pj_per_byte * 1e-12
        + 1e6 * 512.0 * p.int8_mac_pj * 1e-12;
    assert!((e.joules - 5.0 * per_rep).abs() < 1e-12, "{}", e.joules);
    assert_eq!(e.tokens, 5 * 512);
    assert!((e.joules_per_token - per_rep / 512.0).abs() < 1e-15);
}

#[test]
fn assistant_scenario_latencies() {
    let s = shipped("assistant.yaml");
    let r = run(std::slice::from_ref(&s), false);
    let t = &r.tiers[1];
    for w in &t.workloads {
        let WorkloadResult::Chat(c) = &w.result else {
            panic!()
        };
        // repetitions 2 × prompts, at least min_queries 8
        let n_prompts = match &s.workloads.iter().find(|x| x.name() == w.name).unwrap() {
            crate::scenario::Workload::Chat(c) => c.prompts.len(),
            _ => unreachable!(),
        };
        assert_eq!(c.queries, (2 * n_prompts).max(8), "{}", w.name);
        assert_eq!(c.ttft_s.len(), c.queries);
        for (ttft, n) in c.ttft_s.iter().zip(&c.prompt_tokens) {
            // prefill at 1 ms per token; choosing the first token is free on this clock
            assert!((ttft - *n as f64 * 1e-3).abs() < 1e-9);
        }
        for tpot in &c.tpot_s {
            assert!((tpot - 0.010).abs() < 1e-9);
        }
        assert!((c.decode_tps.mean - 100.0).abs() < 1e-6);
        assert!(c.output_tokens.iter().all(|&n| n <= 48));
        let p = c.ttft.unwrap();
        assert!(p.p50 <= p.p90 && p.p90 <= p.p99);
        assert!(w.energy.joules_per_answer.unwrap() > 0.0);
    }
}

#[test]
fn quality_scenario_kld_and_task() {
    let r = run(&[shipped("quality.yaml")], false);
    assert_eq!(r.reference_tier.as_deref(), Some("q8_0"));
    let m = r.metrics();
    // the reference against itself: KLD 0, same top token 100 %
    assert_eq!(metric(&m, "q8_0", "kld-text", "kld_mean").value, 0.0);
    assert_eq!(metric(&m, "q8_0", "kld-text", "same_top_pct").value, 100.0);
    assert_eq!(metric(&m, "q8_0", "kld-text", "delta_ppl").value, 0.0);
    // the perturbed tier moves
    assert!(metric(&m, "q4_0", "kld-text", "kld_mean").value > 0.0);
    assert!(metric(&m, "q4_0", "kld-text", "same_top_pct").value < 100.0);
    let ppl8 = metric(&m, "q8_0", "kld-text", "ppl");
    assert!(ppl8.value > 1.0 && ppl8.err > 0.0);
    let t = &r.tiers[1];
    let WorkloadResult::Text(text) = &t.workloads[0].result else {
        panic!()
    };
    assert_eq!(text.chunks, 8);
    // 8 chunks × (256 − 1 − 128) scored tokens
    assert_eq!(text.ppl.tokens, 8 * 127);
    let kld = text.kld.as_ref().unwrap();
    assert!((kld.ref_ppl.ppl - text.ppl.ppl).abs() < 1e-9);
    let WorkloadResult::Task(task) = &t.workloads[1].result else {
        panic!()
    };
    assert_eq!(task.acc.n, 240);
    assert_eq!(task.gold.len(), 240);
    assert!(task.acc.stderr > 0.0 || task.acc.acc == 0.0 || task.acc.acc == 1.0);
}

#[test]
fn task_scores_agree_with_and_without_truncate() {
    let s = shipped("quality.yaml");
    let a = run(std::slice::from_ref(&s), false);
    let b = run(std::slice::from_ref(&s), true);
    for (ta, tb) in a.tiers.iter().zip(&b.tiers) {
        let (WorkloadResult::Task(x), WorkloadResult::Task(y)) =
            (&ta.workloads[1].result, &tb.workloads[1].result)
        else {
            panic!()
        };
        assert_eq!(x.pred, y.pred);
        assert_eq!(x.pred_norm, y.pred_norm);
        // the shared template is evaluated once when the runtime can drop cached tokens
        let (ea, eb) = (&ta.workloads[1].energy, &tb.workloads[1].energy);
        assert!(ea.tokens * 2 < eb.tokens, "{} vs {}", ea.tokens, eb.tokens);
    }
}

#[test]
fn multiple_choice_by_hand() {
    // The scripted model gives lowercase letters and space about 1/28 each after any byte and
    // digits about 1/1300: " abc" (4 likely tokens, about -13 nats) beats "123" (about -20)
    // either way; "9" (one unlikely token, about -6.6) beats " xyz" (about -13) on the sum,
    // but loses per byte (-6.6 vs -3.3): acc picks it, acc_norm does not.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("mc.jsonl"),
        "{\"query\": \"pick\", \"choices\": [\"123\", \" abc\"], \"gold\": 1}\n{\"query\": \"pick\", \"choices\": [\" xyz\", \"9\"], \"gold\": 1}\n",
    )
    .unwrap();
    let s = Scenario::parse(
        "name: mc\nrepetitions: 1\nwarmup: 0\nworkloads:\n  - {kind: multiple_choice, name: mc, file: mc.jsonl, template: 'Q: {query} A:'}\n",
        dir.path().into(),
    )
    .unwrap();
    let r = run(&[s], false);
    let WorkloadResult::Task(t) = &r.tiers[1].workloads[0].result else {
        panic!()
    };
    assert_eq!(t.pred, vec![1, 1]);
    assert_eq!(t.pred_norm, vec![1, 0]);
    assert_eq!(t.acc.acc, 1.0);
    assert_eq!(t.acc.stderr, 0.0);
    assert_eq!(t.acc_norm.correct, 1);
    assert_eq!(t.acc_norm.acc, 0.5);
    // sqrt(0.5 · 0.5 / (2 − 1))
    assert!((t.acc_norm.stderr - 0.5).abs() < 1e-12);
}

#[test]
fn reference_is_highest_bits_or_named() {
    let dir = tempfile::tempdir().unwrap();
    let t = tiers(dir.path());
    assert_eq!(reference_tier(&t, None).unwrap(), 1);
    assert_eq!(reference_tier(&t, Some("q4_0")).unwrap(), 0);
    let e = reference_tier(&t, Some("f16")).unwrap_err().to_string();
    assert!(e.contains("`f16`") && e.contains("`q4_0`"), "{e}");
}

#[test]
fn data_errors_name_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("i.jsonl"),
        "{\"text\": \"hi\", \"label\": \"a\"}\n{\"text\": \"yo\", \"label\": \"zzz\"}\n",
    )
    .unwrap();
    let s = Scenario::parse(
        "name: c\nworkloads:\n  - kind: classify\n    name: c\n    file: i.jsonl\n    template: '{text}'\n    labels: [{label: a, text: ' a'}, {label: b, text: ' b'}]\n",
        dir.path().into(),
    )
    .unwrap();
    let tdir = tempfile::tempdir().unwrap();
    let tiers = tiers(tdir.path());
    let r = runner(false);
    let mut energy = EstimateMeter { profile: profile() };
    let mut progress = NoProgress;
    let mut b = Bench {
        runner: &r,
        clock: &r.clock,
        energy: &mut energy,
        memory: &FixedMemory(None),
        progress: &mut progress,
        slmpack_version: "0".into(),
        created_unix: 0,
        threads: None,
    };
    let e = b.run(&tiers, &[s], None).unwrap_err().to_string();
    assert!(
        e.contains("i.jsonl") && e.contains("line 2") && e.contains("zzz"),
        "{e}"
    );
}

#[test]
fn exporters_have_their_columns() {
    let r = run(&[shipped("throughput.yaml")], false);
    let csv = export::Csv.export(&r).unwrap();
    let mut lines = csv.lines();
    assert_eq!(lines.next().unwrap(), export::CSV_HEADER);
    for l in lines {
        assert_eq!(l.split(',').count(), 8, "{l}");
    }
    assert!(csv.contains("q8_0,throughput,pp512,tps,1000"));
    let md = export::Markdown.export(&r).unwrap();
    assert!(md.contains("## throughput / pp512"));
    assert!(
        md.contains("| tier | tps (t/s) ↑ | j_per_token (J) ↓ |"),
        "{md}"
    );
    assert!(md.contains("estimate(laptop-x86)"));
    let json = export::Json.export(&r).unwrap();
    let back: Report = serde_json::from_str(&json).unwrap();
    // every sample kept (floats round-trip to the last bit or two)
    for (a, b) in r.tiers.iter().zip(&back.tiers) {
        for (x, y) in a.workloads.iter().zip(&b.workloads) {
            let (WorkloadResult::Speed(x), WorkloadResult::Speed(y)) = (&x.result, &y.result)
            else {
                panic!()
            };
            assert_eq!(x.samples_s.len(), y.samples_s.len());
            for (p, q) in x.samples_s.iter().zip(&y.samples_s) {
                assert!((p - q).abs() <= 1e-15 * p.abs());
            }
        }
    }
}

#[test]
fn compare_flags_only_regressions_beyond_error_bars() {
    let a = run(&[shipped("throughput.yaml")], false);
    let mut b = a.clone();
    // identical: nothing changes or regresses
    let c = compare(&a, &b, Some(5.0));
    assert!(c.regressions().is_empty());
    assert!(c
        .changes
        .iter()
        .all(|x| x.change_pct == 0.0 || x.change_pct.is_nan()));
    // pp512 on q8_0 drops 1000 -> 900 t/s (10 %): regression at 5 %, not at 15 %
    if let WorkloadResult::Speed(s) = &mut b.tiers[1].workloads[0].result {
        s.tps.mean = 900.0;
    }
    let c = compare(&a, &b, Some(5.0));
    let keys: Vec<_> = c.regressions().iter().map(|x| x.key.clone()).collect();
    assert_eq!(keys, vec!["q8_0/throughput/pp512/tps"]);
    assert!(compare(&a, &b, Some(15.0)).regressions().is_empty());
    assert!(compare(&a, &b, None).regressions().is_empty());
    // with sd 40 on both sides, 100 - 80 = 20 < 50 (5 % of 1000): not a regression
    if let WorkloadResult::Speed(s) = &mut b.tiers[1].workloads[0].result {
        s.tps.sd = 40.0;
    }
    let mut a2 = a.clone();
    if let WorkloadResult::Speed(s) = &mut a2.tiers[1].workloads[0].result {
        s.tps.sd = 40.0;
    }
    assert!(compare(&a2, &b, Some(5.0)).regressions().is_empty());
    assert!(c.table().contains("REGRESSED"));
}

#[test]
fn regression_rule_by_hand() {
    let m = |v: f64, e: f64, hib: bool| Metric {
        tier: "t".into(),
        scenario: "s".into(),
        workload: "w".into(),
        metric: "m".into(),
        value: v,
        err: e,
        unit: "",
        higher_is_better: hib,
    };
    // lower is better: 10 -> 11 is 10 % worse; errors 0.2 + 0.2 leave 0.6 > 0.5 (5 %)
    assert!(regressed(&m(10.0, 0.2, false), &m(11.0, 0.2, false), 5.0));
    // errors 0.3 + 0.3 leave 0.4 < 0.5
    assert!(!regressed(&m(10.0, 0.3, false), &m(11.0, 0.3, false), 5.0));
    // improvements never regress
    assert!(!regressed(&m(10.0, 0.0, false), &m(5.0, 0.0, false), 0.0));
    assert!(!regressed(&m(10.0, 0.0, true), &m(15.0, 0.0, true), 0.0));
    assert!(regressed(&m(10.0, 0.0, true), &m(9.0, 0.0, true), 5.0));
}

#[test]
fn plots_are_written_or_refused_with_a_hint() {
    let r = run(
        &[shipped("throughput.yaml"), shipped("quality.yaml")],
        false,
    );
    let out = tempfile::tempdir().unwrap();
    match crate::plot::write_plots(&r, out.path()) {
        Ok(files) => {
            let names: Vec<_> = files
                .iter()
                .map(|f| f.file_name().unwrap().to_string_lossy().into_owned())
                .collect();
            for n in ["tradeoff.png", "tradeoff.svg", "energy.png", "energy.svg"] {
                assert!(names.contains(&n.to_string()), "{names:?}");
            }
            for f in files {
                assert!(
                    std::fs::metadata(&f).unwrap().len() > 1000,
                    "{}",
                    f.display()
                );
            }
        }
        Err(e) => {
            assert!(crate::plot::find_font().is_none(), "{e}");
            assert!(e.to_string().contains("hint"));
        }
    }
}
