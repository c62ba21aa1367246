//! A long-running PHP CLI process on one host that serves requests as a
//! php-fpm worker would, one at a time, told what to do on stdin:
//!
//! ```text
//! R <id>                      read only (read_and_close)
//!   -> R <ok> <gid> <crc> <us>  the write id it found (0: none), CRC-32 of the
//!                             session, µs spent in the session calls
//! W <id> <gid> <len> <hold>   session_start, read, modify, session_write_close
//!   -> W <started> <seen gid> <seen crc> <acked> <len> <crc> <us>
//!   -> H                      (hold = 1) holding the session: about to be killed
//! I                           the publisher's counters (phpinfo)
//!   -> I <published> <drops> <sent again>
//! E <text>                    anything PHP printed (warnings), before the answer
//! ```
//!
//! Any other line on stdout (OpenPGM logs there) is kept like an `E` line.
//!
//! ```text
//! ```
//!
//! The session PHP writes begins `n|i:N;g|i:GID;` (a counter it increments,
//! as a page would, then the harness's write id), then the host and `len`
//! bytes of filler. The CRC is over the session's encoding (the `php`
//! serializer: `key|serialize(value)`...), which is exactly the data memcast
//! stores after its header.

use std::io::{BufRead, BufReader, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use super::ledger::Seen;
use crate::cluster::Cluster;

const SCRIPT: &str = r#"
while (ob_get_level()) { ob_end_clean(); }
ob_start();
function enc(array $s): string {
    $o = '';
    foreach ($s as $k => $v) { $o .= $k . '|' . serialize($v); }
    return $o;
}
function say(string $line): void {
    $out = ob_get_contents();
    if ($out !== false && $out !== '') {
        ob_clean();
        foreach (explode("\n", $out) as $l) {
            $l = trim($l);
            if ($l !== '') { fwrite(STDOUT, "E $l\n"); }
        }
    }
    fwrite(STDOUT, "$line\n");
}
fwrite(STDOUT, "READY\n");
while (($line = fgets(STDIN)) !== false) {
    $a = explode(' ', trim($line));
    if ($a[0] === 'I') {
        $c = ['Frames published' => 0, 'Publish drops' => 0, 'Dropped sessions sent again' => 0];
        phpinfo(INFO_MODULES);
        foreach (explode("\n", (string)ob_get_contents()) as $l) {
            if (preg_match('/^(.+?) => (\d+)$/', trim($l), $m) && isset($c[$m[1]])) { $c[$m[1]] = (int)$m[2]; }
        }
        ob_clean();
        fwrite(STDOUT, 'I ' . implode(' ', $c) . "\n");
        continue;
    }
    $_SESSION = [];
    session_id($a[1]);
    if ($a[0] === 'R') {
        $t = hrtime(true);
        $ok = session_start(['read_and_close' => true]);
        $t = intdiv(hrtime(true) - $t, 1000);
        $s = $ok ? $_SESSION : [];
        say(sprintf('R %d %d %s %d', $ok ? 1 : 0, $s['g'] ?? 0, hash('crc32b', enc($s)), $t));
        continue;
    }
    $gid = (int)$a[2];
    $t = hrtime(true);
    if (!session_start()) { say('W 0 0 0 0 0 0 0'); continue; }
    $seen = $_SESSION['g'] ?? 0;
    $seen_crc = hash('crc32b', enc($_SESSION));
    $_SESSION['n'] = ($_SESSION['n'] ?? 0) + 1;
    $_SESSION['g'] = $gid;
    $_SESSION['w'] = HOST;
    $_SESSION['p'] = str_repeat(md5((string)$gid), intdiv((int)$a[3], 32));
    if ($a[4] === '1') { say('H'); sleep(3600); }
    $e = enc($_SESSION);
    $ok = session_write_close();
    $t = intdiv(hrtime(true) - $t, 1000);
    say(sprintf('W 1 %d %s %d %d %s %d', $seen, $seen_crc, $ok ? 1 : 0, strlen($e), hash('crc32b', $e), $t));
}
"#;

#[derive(Clone, Copy, Debug)]
pub enum Reply {
    Read {
        ok: bool,
        seen: Seen,
        php_us: u64,
    },
    Write {
        /// `session_start()` succeeded (else nothing below is meaningful).
        started: bool,
        seen: Seen,
        acked: bool,
        len: usize,
        crc: u32,
        php_us: u64,
    },
    Holding,
    /// The process's publisher counters.
    Publisher {
        published: u64,
        drops: u64,
        sent_again: u64,
    },
}

/// The worker died or stopped answering.
#[derive(Debug)]
pub struct Gone(pub String);

pub struct PhpWorker {
    child: Child,
    stdin: ChildStdin,
    lines: Receiver<String>,
}

impl PhpWorker {
    /// Starts a worker on host `i` (from 0); PHP's stderr goes to `log`.
    pub fn spawn(cluster: &Cluster, i: usize, log: &Path) -> Result<PhpWorker, Gone> {
        let code = SCRIPT.replace("HOST", &(i + 1).to_string());
        let stderr = std::fs::File::create(log).map_err(|e| Gone(format!("{e}")))?;
        let mut child = cluster
            .php_command(i, &code)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(stderr)
            .spawn()
            .map_err(|e| Gone(format!("start php: {e}")))?;
        let (tx, lines) = channel();
        let stdout = child.stdout.take().expect("piped stdout");
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take().expect("piped stdin");
        let mut worker = PhpWorker {
            child,
            stdin,
            lines,
        };
        match worker.lines.recv_timeout(Duration::from_secs(30)) {
            Ok(l) if l == "READY" => Ok(worker),
            other => {
                worker.kill();
                Err(Gone(format!(
                    "PHP on host {} did not start: {other:?}",
                    i + 1
                )))
            }
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends one request; its answer, with whatever PHP printed before it.
    pub fn request(&mut self, line: &str, within: Duration) -> Result<(Reply, Vec<String>), Gone> {
        writeln!(self.stdin, "{line}").map_err(|e| Gone(format!("write: {e}")))?;
        let deadline = Instant::now() + within;
        let mut printed = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let line = match self.lines.recv_timeout(left) {
                Ok(l) => l,
                Err(RecvTimeoutError::Timeout) => {
                    return Err(Gone(format!(
                        "no answer to {line:?} in {within:?}; blocked in: {}",
                        blocked_in(self.pid())
                    )))
                }
                Err(RecvTimeoutError::Disconnected) => {
                    return Err(Gone(format!("exited during {line:?}")))
                }
            };
            if let Some(text) = line.strip_prefix("E ") {
                printed.push(text.to_string());
                continue;
            }
            match parse(&line) {
                Some(reply) => return Ok((reply, printed)),
                None => printed.push(format!("stdout: {line}")),
            }
        }
    }

    /// SIGKILL by PID, as the OOM killer or a supervisor would.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PhpWorker {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Where each thread of a process waits (`/proc/PID/task/*/wchan`, and the
/// syscall number), to tell a hung request's cause.
fn blocked_in(pid: u32) -> String {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return "gone".into();
    };
    let mut out: Vec<String> = tasks
        .filter_map(|t| t.ok())
        .map(|t| {
            let p = t.path();
            let read = |f: &str| std::fs::read_to_string(p.join(f)).unwrap_or_default();
            let comm = read("comm");
            let syscall = read("syscall");
            format!(
                "{}:{} (syscall {})",
                comm.trim(),
                read("wchan").trim(),
                syscall.split_whitespace().next().unwrap_or("?")
            )
        })
        .collect();
    out.sort();
    out.join(", ")
}

fn parse(line: &str) -> Option<Reply> {
    let f: Vec<&str> = line.split(' ').collect();
    let num = |k: usize| f.get(k).and_then(|v| v.parse::<u64>().ok());
    let crc = |k: usize| f.get(k).and_then(|v| u32::from_str_radix(v, 16).ok());
    match *f.first()? {
        "H" => Some(Reply::Holding),
        "I" => Some(Reply::Publisher {
            published: num(1)?,
            drops: num(2)?,
            sent_again: num(3)?,
        }),
        "R" => Some(Reply::Read {
            ok: num(1)? == 1,
            seen: Seen {
                gid: num(2)?,
                crc: crc(3)?,
            },
            php_us: num(4)?,
        }),
        "W" => Some(Reply::Write {
            started: num(1)? == 1,
            seen: Seen {
                gid: num(2)?,
                crc: crc(3)?,
            },
            acked: num(4)? == 1,
            len: num(5)? as usize,
            crc: crc(6)?,
            php_us: num(7)?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn answers_are_parsed() {
        assert!(matches!(
            parse("R 1 42 0000abcd 120"),
            Some(Reply::Read {
                ok: true,
                seen: Seen {
                    gid: 42,
                    crc: 0xabcd
                },
                php_us: 120
            })
        ));
        assert!(matches!(
            parse("W 1 3 ffffffff 1 2100 00000001 900"),
            Some(Reply::Write {
                started: true,
                acked: true,
                len: 2100,
                crc: 1,
                ..
            })
        ));
        assert!(matches!(parse("H"), Some(Reply::Holding)));
        assert!(matches!(
            parse("I 10 2 2"),
            Some(Reply::Publisher {
                published: 10,
                drops: 2,
                sent_again: 2
            })
        ));
        assert!(parse("W 1").is_none());
        assert!(parse("Warn: sendto() failed").is_none());
    }
}
