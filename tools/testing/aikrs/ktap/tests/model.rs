// SPDX-License-Identifier: GPL-2.0

//! Property test: render random guest runs (programs, their cases, exit statuses, kernel
//! noise between lines) the way the guest's `init` does, and check the counts against a
//! direct count over the model.

use aikrs_ktap::{summarize, Counts};
use proptest::prelude::*;

#[derive(Debug, Clone, Copy)]
enum Case {
    Pass,
    Fail,
    Skip,
}

#[derive(Debug, Clone)]
struct Program {
    cases: Vec<Case>,
    /// Cases announced in the plan but never printed (the program died).
    unreported: u32,
    exit_ok: bool,
}

fn program() -> impl Strategy<Value = Program> {
    (
        prop::collection::vec(
            prop_oneof![Just(Case::Pass), Just(Case::Fail), Just(Case::Skip)],
            0..6,
        ),
        0u32..3,
        any::<bool>(),
    )
        .prop_map(|(cases, unreported, exit_ok)| Program {
            cases,
            unreported,
            exit_ok,
        })
}

fn noise() -> impl Strategy<Value = Vec<String>> {
    prop::collection::vec(
        prop_oneof![
            Just("[    1.234567] random: crng init done".to_string()),
            Just("AIKRS-GUEST: begin".to_string()),
            Just("\u{fffd}\u{fffd} serial garbage # SKIP".to_string()),
            Just("    # a diagnostic".to_string()),
            Just(String::new()),
            Just("        ok 1 deeper level".to_string()),
        ],
        0..4,
    )
}

fn expected(progs: &[Program]) -> Counts {
    let mut c = Counts::default();
    for p in progs {
        let failing_leaf = p.cases.iter().any(|k| matches!(k, Case::Fail));
        for k in &p.cases {
            match k {
                Case::Pass => c.passed += 1,
                Case::Fail => c.failed += 1,
                Case::Skip => c.skipped += 1,
            }
        }
        c.failed += p.unreported;
        // The program's own status: init says "not ok" when it exited non-zero, which
        // the program does whenever a case failed or went unreported.
        let ok = p.exit_ok && !failing_leaf && p.unreported == 0;
        if !ok && !failing_leaf && p.unreported == 0 {
            c.failed += 1;
        }
        if ok && p.cases.is_empty() {
            c.passed += 1;
        }
    }
    c
}

/// Renders the runs, with a group of noise lines (cycling through `noise`) after every line.
fn render(progs: &[Program], noise: &[Vec<String>], cr: bool) -> String {
    let mut lines = vec![
        "[    0.000000] Linux version 6.12".to_string(),
        "KTAP version 1".into(),
    ];
    lines.push(format!("1..{}", progs.len()));
    for (i, p) in progs.iter().enumerate() {
        lines.push("    KTAP version 1".into());
        let planned = p.cases.len() as u32 + p.unreported;
        if planned > 0 {
            lines.push(format!("    1..{planned}"));
        }
        for (j, k) in p.cases.iter().enumerate() {
            lines.push(match k {
                Case::Pass => format!("    ok {} case_{j}", j + 1),
                Case::Fail => format!("    not ok {} case_{j} # boom", j + 1),
                Case::Skip => format!("    ok {} case_{j} # SKIP no device", j + 1),
            });
        }
        let failing = p.cases.iter().any(|k| matches!(k, Case::Fail));
        let ok = p.exit_ok && !failing && p.unreported == 0;
        lines.push(if ok {
            format!("ok {} prog_{i}", i + 1)
        } else {
            format!("not ok {} prog_{i} # exit status 1", i + 1)
        });
    }
    lines.push("AIKRS-GUEST: done".into());
    let eol = if cr { "\r\n" } else { "\n" };
    let mut out = String::new();
    for (n, line) in lines.iter().enumerate() {
        for l in core::iter::once(line).chain(&noise[n % noise.len()]) {
            out.push_str(l);
            out.push_str(eol);
        }
    }
    out
}

proptest! {
    #[test]
    fn counts_match_the_model(
        progs in prop::collection::vec(program(), 0..6),
        noise in prop::collection::vec(noise(), 1..8),
        cr in any::<bool>(),
    ) {
        let log = render(&progs, &noise, cr);
        prop_assert_eq!(summarize(&log), expected(&progs), "log:\n{}", log);
    }
}
