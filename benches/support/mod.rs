//! What the benches that drive `runbook serve` share: starting it with a clean environment,
//! starting moto's server as the tests run it, reading a process's memory, percentiles.
//!
//! Each bench uses a part of this, so the parts another bench uses look unused to one bench.
#![allow(dead_code)]

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A number from the environment, or None when unset or not a number.
pub fn env_num<T: std::str::FromStr>(name: &str) -> Option<T> {
    std::env::var(name).ok().and_then(|v| v.trim().parse().ok())
}

/// A child process, killed if the bench panics before it stops it.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// A free loopback port (bound, read, released).
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free loopback port")
}

/// moto's test credentials (the emulator accepts any), and no instance-metadata probe.
pub const MOTO_ENV: [(&str, &str); 3] = [
    ("AWS_ACCESS_KEY_ID", "testing"),
    ("AWS_SECRET_ACCESS_KEY", "testing"),
    ("AWS_EC2_METADATA_DISABLED", "true"),
];

/// moto's server on a free loopback port, with one lock around every request exactly as the
/// tests run it (DynamoDB and S3 on one port; why: tests/common/moto.rs); returns it and its
/// port once it answers.
pub fn start_moto() -> (KillOnDrop, u16) {
    let port = free_port();
    let mut child = Command::new("python3")
        .args([
            "-c",
            include_str!("../../tests/common/serialised_moto.py"),
            &port.to_string(),
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("python3 with moto's server: pip install 'moto[server]'");
    let started = Instant::now();
    loop {
        if moto_answers(port) {
            return (KillOnDrop(child), port);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("moto's server exited ({status})");
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "moto's server did not answer on port {port}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Whether moto's own API answers 200 (a listening socket alone is not a server that is up).
fn moto_answers(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
    let req = format!("GET /moto-api/ HTTP/1.0\r\nHost: 127.0.0.1:{port}\r\n\r\n");
    let mut head = [0u8; 12];
    s.write_all(req.as_bytes()).is_ok() && s.read_exact(&mut head).is_ok() && &head[9..12] == b"200"
}

/// `bin serve --hooks hooks.toml --listen 127.0.0.1:0` in `dir`, its log in `serve.log`, with a
/// clean environment: nothing from the caller's `AWS_*`, `SLACK_*`, `TEAMS_*`, `RUNBOOK_*` or
/// `RUST_LOG` reaches it. The caller adds its flags and variables, then [`spawn_serve`]s it.
pub fn serve_command(bin: &Path, dir: &Path) -> Command {
    let log = std::fs::File::create(dir.join("serve.log")).expect("serve.log");
    let mut command = Command::new(bin);
    command.current_dir(dir);
    for (key, _) in std::env::vars_os() {
        let key = key.to_string_lossy().into_owned();
        if ["AWS_", "SLACK_", "TEAMS_", "RUNBOOK_"]
            .iter()
            .any(|p| key.starts_with(p))
        {
            command.env_remove(&key);
        }
    }
    command
        .args(["serve", "--hooks", "hooks.toml", "--listen", "127.0.0.1:0"])
        .env("NO_COLOR", "1")
        .env_remove("RUST_LOG")
        .stdin(Stdio::null())
        .stdout(Stdio::from(log.try_clone().expect("serve.log")))
        .stderr(Stdio::from(log));
    command
}

/// Spawns `command` (from [`serve_command`] in `dir`) and waits for it to write each of
/// `addr_files` (`--addr-file`, `--probe-addr-file`); returns it and each as `http://ADDR`.
/// Its log is shown if it exits first.
pub fn spawn_serve(
    mut command: Command,
    dir: &Path,
    addr_files: &[&Path],
) -> (KillOnDrop, Vec<String>) {
    let mut child = KillOnDrop(command.spawn().expect("spawn runbook serve"));
    let started = Instant::now();
    loop {
        let addrs: Vec<String> = addr_files
            .iter()
            .map_while(|f| std::fs::read_to_string(f).ok())
            .map(|a| format!("http://{}", a.trim()))
            .collect();
        if addrs.len() == addr_files.len() {
            return (child, addrs);
        }
        if let Ok(Some(status)) = child.0.try_wait() {
            panic!(
                "runbook serve exited ({status}):\n{}",
                std::fs::read_to_string(dir.join("serve.log")).unwrap_or_default()
            );
        }
        assert!(
            started.elapsed() < Duration::from_secs(60),
            "runbook serve did not start"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// One `kB` field of `/proc/PID/status`: `VmRSS`, `VmHWM` (the peak), or RSS's parts `RssAnon`
/// (the heap, stacks) and `RssFile` (the binary's pages read in, which the kernel can drop and
/// read again).
pub fn status_kb(pid: u32, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()?
        .lines()
        .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))?
        .split_whitespace()
        .nth(1)?
        .parse()
        .ok()
}

/// The values in ascending order, for [`pct`].
pub fn sorted(mut v: Vec<f64>) -> Vec<f64> {
    v.sort_by(|a, b| a.total_cmp(b));
    v
}

/// Nearest-rank percentile of values sorted ascending ([`sorted`]); NaN for none.
pub fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}
