// SPDX-License-Identifier: GPL-2.0

//! Counts the results in the guest runner's serial console log.
//!
//! The guest's `init` prints a two-level KTAP tree: `KTAP version 1` at column 0, then for
//! each test program its own KTAP output indented by four spaces, followed by the
//! program's top-level `ok N name` / `not ok N name` line. Kernel messages may be
//! interleaved anywhere and lines may end in `\r`.
//!
//! Rules: leaf results (indent 4) count as passed, failed or skipped (`# SKIP`). A
//! top-level `not ok` whose block had no failing leaf counts as one failure (the program
//! crashed or exited non-zero without saying why); a top-level `ok` with no leaves counts
//! as one pass. Cases announced by a nested plan (`    1..N`) but never reported count
//! as failures, and so do programs announced by the top-level plan but never reported
//! (the guest died mid-run). A log without `KTAP version 1` counts as one failure.

#![no_std]

/// Result counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Counts {
    /// Cases that passed.
    pub passed: u32,
    /// Cases that failed, crashed or never reported.
    pub failed: u32,
    /// Cases skipped.
    pub skipped: u32,
}

enum Line<'a> {
    Result { ok: bool, directive: &'a str },
    Plan(u32),
}

fn parse(line: &str) -> Option<Line<'_>> {
    if let Some(n) = line.strip_prefix("1..") {
        return n.trim().parse().ok().map(Line::Plan);
    }
    let (ok, rest) = if let Some(r) = line.strip_prefix("not ok ") {
        (false, r)
    } else if let Some(r) = line.strip_prefix("ok ") {
        (true, r)
    } else {
        return None;
    };
    let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
    if digits == 0 {
        return None;
    }
    let directive = rest.find('#').map_or("", |i| rest[i + 1..].trim_start());
    Some(Line::Result { ok, directive })
}

fn is_skip(directive: &str) -> bool {
    // Bytes, not `str` slicing: console garbage may put a multi-byte character there.
    directive
        .as_bytes()
        .get(..4)
        .is_some_and(|d| d.eq_ignore_ascii_case(b"skip"))
}

/// Counts the results in `log`.
pub fn summarize(log: &str) -> Counts {
    let mut c = Counts::default();
    let mut started = false;
    // Top-level plan and results: programs announced but never reported (the guest
    // died mid-run) are failures.
    let (mut top_plan, mut top_results) = (0u32, 0u32);
    // Per top-level block: leaves seen, failing leaves seen, nested plan.
    let (mut leaves, mut leaf_failed, mut plan) = (0u32, 0u32, None::<u32>);
    for raw in log.lines() {
        let line = raw.trim_end_matches('\r');
        if !started {
            started = line == "KTAP version 1";
            continue;
        }
        if let Some(nested) = line.strip_prefix("    ") {
            if nested.starts_with(' ') {
                continue; // deeper levels are the programs' own business
            }
            match parse(nested) {
                Some(Line::Plan(n)) => plan = Some(n),
                Some(Line::Result { ok, directive }) => {
                    leaves += 1;
                    if !ok {
                        c.failed += 1;
                        leaf_failed += 1;
                    } else if is_skip(directive) {
                        c.skipped += 1;
                    } else {
                        c.passed += 1;
                    }
                }
                None => {}
            }
        } else if let Some(Line::Plan(n)) = parse(line) {
            top_plan = n;
        } else if let Some(Line::Result { ok, .. }) = parse(line) {
            top_results += 1;
            let missing = plan.map_or(0, |p| p.saturating_sub(leaves));
            c.failed += missing;
            if !ok && leaf_failed == 0 && missing == 0 {
                c.failed += 1;
            } else if ok && leaves == 0 && plan.unwrap_or(0) == 0 {
                c.passed += 1;
            }
            (leaves, leaf_failed, plan) = (0, 0, None);
        }
    }
    if !started {
        c.failed = 1;
    }
    c.failed += top_plan.saturating_sub(top_results);
    c
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(passed: u32, failed: u32, skipped: u32) -> Counts {
        Counts {
            passed,
            failed,
            skipped,
        }
    }

    #[test]
    fn leaves_with_noise_and_cr() {
        let log = "[ 0.1] booting\r\nKTAP version 1\r\n1..1\r\n    KTAP version 1\r\n    1..3\r\n\
                   [ 1.0] random: crng init done\r\n    ok 1 a\r\n    not ok 2 b # reason\r\n\
                   AIKRS-GUEST: noise\r\n    ok 3 c # SKIP no device\r\nnot ok 1 prog\r\n";
        assert_eq!(summarize(log), counts(1, 1, 1));
    }

    #[test]
    fn crash_without_failing_leaf_counts_once() {
        let log = "KTAP version 1\n1..1\n    1..2\n    ok 1 a\n    ok 2 b\nnot ok 1 prog # exit status 139\n";
        assert_eq!(summarize(log), counts(2, 1, 0));
    }

    #[test]
    fn missing_cases_fail() {
        let log = "KTAP version 1\n1..1\n    1..5\n    ok 1 a\n    ok 2 b\nnot ok 1 prog\n";
        assert_eq!(summarize(log), counts(2, 3, 0));
    }

    #[test]
    fn ok_program_without_leaves_is_one_pass() {
        assert_eq!(
            summarize("KTAP version 1\n1..1\nok 1 prog\n"),
            counts(1, 0, 0)
        );
    }

    #[test]
    fn no_ktap_is_a_failure() {
        assert_eq!(summarize("Kernel panic - not syncing\n"), counts(0, 1, 0));
        assert_eq!(summarize(""), counts(0, 1, 0));
    }

    #[test]
    fn deeper_levels_and_diagnostics_ignored() {
        let log = "KTAP version 1\n1..1\n    # Subtest: x\n        not ok 1 deep\n    ok 1 x\n    # diag\nok 1 prog\n";
        assert_eq!(summarize(log), counts(1, 0, 0));
    }

    #[test]
    fn skip_directive_is_case_insensitive_and_not_a_prefix_match_on_names() {
        let log = "KTAP version 1\n1..1\n    ok 1 skipper\n    ok 2 a # skip later\nok 1 prog\n";
        assert_eq!(summarize(log), counts(1, 0, 1));
    }

    #[test]
    fn truncated_run_fails_the_unreported_programs() {
        let log = "KTAP version 1\n1..3\n    1..5\n    ok 1 a\n    ok 2 b\nKernel panic\n";
        assert_eq!(summarize(log), counts(2, 3, 0));
    }

    #[test]
    fn non_ascii_directive_does_not_panic() {
        let log = "KTAP version 1\n1..1\n    ok 1 a # \u{20ac}\u{20ac}\n    ok 2 b # \u{fffd}\u{fffd}ab\nok 1 prog\n";
        assert_eq!(summarize(log), counts(2, 0, 0));
    }
}
