// SPDX-License-Identifier: GPL-2.0

//! `ktap-summary [FILE]`: prints `N passed, N failed, N skipped` for a guest console log
//! (standard input without FILE); exits 1 if anything failed or nothing ran.

use std::io::Read;

fn main() {
    let mut log = Vec::new();
    let res = match std::env::args_os().nth(1) {
        Some(path) => std::fs::File::open(path).and_then(|mut f| f.read_to_end(&mut log)),
        None => std::io::stdin().read_to_end(&mut log),
    };
    if let Err(e) = res {
        eprintln!("ktap-summary: {e}");
        std::process::exit(2);
    }
    let c = aikrs_ktap::summarize(&String::from_utf8_lossy(&log));
    println!(
        "{} passed, {} failed, {} skipped",
        c.passed, c.failed, c.skipped
    );
    std::process::exit(if c.failed == 0 && c.passed + c.skipped > 0 {
        0
    } else {
        1
    });
}
