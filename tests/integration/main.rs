//! CLI integration tests: one binary, one module per command. Each test builds its fixtures in
//! its own temp dir and runs the built `slmpack`.

use std::path::Path;
use std::process::{Command, Output};

mod bench;
mod export;
mod manifest;
mod quantize;
mod run;

/// Run the built `slmpack` with `args`.
pub fn slmpack(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slmpack"))
        .args(args)
        .output()
        .expect("run slmpack")
}

/// Run `slmpack` with path arguments.
pub fn slmpack_p<P: AsRef<std::ffi::OsStr>>(args: &[P]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_slmpack"))
        .args(args)
        .output()
        .expect("run slmpack")
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// Files in `dir` (recursively), sorted, relative.
pub fn files_in(dir: &Path) -> Vec<String> {
    fn walk(base: &Path, d: &Path, out: &mut Vec<String>) {
        if let Ok(rd) = std::fs::read_dir(d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    walk(base, &p, out);
                } else {
                    out.push(p.strip_prefix(base).unwrap().display().to_string());
                }
            }
        }
    }
    let mut v = Vec::new();
    walk(dir, dir, &mut v);
    v.sort();
    v
}

/// GPT-2's byte -> printable character table (for byte-level BPE fixtures).
pub fn byte_chars() -> Vec<char> {
    let mut bs: Vec<u32> = (b'!' as u32..=b'~' as u32)
        .chain(0xA1..=0xAC)
        .chain(0xAE..=0xFF)
        .collect();
    let mut cs = bs.clone();
    let mut n = 0;
    for b in 0..256u32 {
        if !bs.contains(&b) {
            bs.push(b);
            cs.push(256 + n);
            n += 1;
        }
    }
    let mut table = vec![' '; 256];
    for (b, c) in bs.iter().zip(cs) {
        table[*b as usize] = char::from_u32(c).unwrap();
    }
    table
}
