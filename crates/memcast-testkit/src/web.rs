//! A real web stack for tests: nginx in front of php-fpm (pm = static) on
//! loopback ports, with the memcast extension, all in a temporary directory
//! and stopped by PID when dropped.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use crate::{free_port, wait_for_tcp, Proc, TempDir};

pub struct WebStack {
    pub dir: TempDir,
    pub port: u16,
    /// The address nginx listens on (127.0.0.1 unless a host is given).
    pub addr: String,
    fpm: Proc,
    nginx: Proc,
}

/// A web stack beyond the default: inside a host's namespace, with other
/// PHP extensions (php-memcached, phpredis) or none.
pub struct WebOptions<'a> {
    /// Run nginx and php-fpm inside this host (listening on its address and
    /// loopback) instead of the root namespace.
    pub host: Option<&'a crate::Host>,
    /// `-d` settings for php-fpm's command line (`extension=...`).
    pub php_args: Vec<String>,
    /// Pool settings (`php_admin_value`).
    pub ini: Vec<(String, String)>,
    pub pages: Vec<(String, String)>,
    pub workers: usize,
}

fn find(candidates: &[&str]) -> PathBuf {
    candidates
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .unwrap_or_else(|| {
            panic!("none of {candidates:?} is installed (apt-get install nginx php8.2-fpm)")
        })
}

impl WebStack {
    /// `pages`: file name and PHP source under the document root; `ini`:
    /// settings for every request; `workers`: php-fpm's pm.max_children.
    pub fn start(
        extension: &Path,
        ini: &[(&str, String)],
        pages: &[(&str, &str)],
        workers: usize,
    ) -> WebStack {
        let mut all_ini = vec![("session.save_handler".to_string(), "memcast".to_string())];
        all_ini.extend(ini.iter().map(|(k, v)| (k.to_string(), v.clone())));
        WebStack::start_with(WebOptions {
            host: None,
            php_args: vec![format!("extension={}", extension.display())],
            ini: all_ini,
            pages: pages
                .iter()
                .map(|(n, s)| (n.to_string(), s.to_string()))
                .collect(),
            workers,
        })
    }

    pub fn start_with(opts: WebOptions<'_>) -> WebStack {
        let WebOptions {
            host,
            php_args,
            ini,
            pages,
            workers,
        } = opts;
        let command = |program: &Path| match host {
            Some(h) => h.command(program),
            None => Command::new(program),
        };
        let (listen, addr) = match host {
            Some(h) => ("0.0.0.0".to_string(), h.addr.clone()),
            None => ("127.0.0.1".to_string(), "127.0.0.1".to_string()),
        };
        let dir = TempDir::new("web");
        let www = dir.path.join("www");
        std::fs::create_dir_all(&www).unwrap();
        for (name, source) in &pages {
            std::fs::write(www.join(name), source).unwrap();
        }
        let fpm_port = free_port();
        let fpm_conf = dir.path.join("php-fpm.conf");
        let mut pool = format!(
            "[global]\nerror_log = {dir}/fpm.log\ndaemonize = no\n\n[www]\nuser = root\ngroup = root\nlisten = {listen}:{fpm_port}\npm = static\npm.max_children = {workers}\ncatch_workers_output = yes\n",
            dir = dir.path.display()
        );
        for (k, v) in &ini {
            pool.push_str(&format!("php_admin_value[{k}] = \"{v}\"\n"));
        }
        std::fs::write(&fpm_conf, pool).unwrap();
        let mut fpm = command(&find(&["/usr/sbin/php-fpm8.2", "/usr/sbin/php-fpm"]));
        fpm.arg("-n");
        for a in &php_args {
            fpm.arg("-d").arg(a);
        }
        fpm.args(["-d", "display_errors=1"])
            .arg("-R")
            .arg("-F")
            .arg("-y")
            .arg(&fpm_conf)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let fpm = Proc::spawn("php-fpm", &mut fpm);
        assert!(
            wait_for_tcp(&format!("{addr}:{fpm_port}"), Duration::from_secs(10)),
            "php-fpm did not start: {}",
            std::fs::read_to_string(dir.path.join("fpm.log")).unwrap_or_default()
        );

        let port = free_port();
        let d = dir.path.display();
        let conf = format!(
            "daemon off;\nmaster_process off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/nginx.err;\n\
             events {{ worker_connections 1024; }}\n\
             http {{\n access_log off;\n client_body_temp_path {d}/t1; proxy_temp_path {d}/t2; fastcgi_temp_path {d}/t3; uwsgi_temp_path {d}/t4; scgi_temp_path {d}/t5;\n\
              server {{\n  listen {listen}:{port};\n  root {www};\n\
               location ~ \\.php$ {{\n   fastcgi_pass 127.0.0.1:{fpm_port};\n   fastcgi_read_timeout 120s;\n\
                fastcgi_param SCRIPT_FILENAME $document_root$fastcgi_script_name;\n   fastcgi_param SCRIPT_NAME $fastcgi_script_name;\n\
                fastcgi_param REQUEST_METHOD $request_method;\n   fastcgi_param QUERY_STRING $query_string;\n   fastcgi_param REQUEST_URI $request_uri;\n\
                fastcgi_param CONTENT_TYPE $content_type;\n   fastcgi_param CONTENT_LENGTH $content_length;\n  }}\n }}\n}}\n",
            www = www.display()
        );
        let nginx_conf = dir.path.join("nginx.conf");
        std::fs::write(&nginx_conf, conf).unwrap();
        let mut nginx = command(&find(&["/usr/sbin/nginx"]));
        nginx
            .arg("-c")
            .arg(&nginx_conf)
            .arg("-p")
            .arg(&dir.path)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let nginx = Proc::spawn("nginx", &mut nginx);
        assert!(
            wait_for_tcp(&format!("{addr}:{port}"), Duration::from_secs(10)),
            "nginx did not start"
        );
        WebStack {
            dir,
            port,
            addr,
            fpm,
            nginx,
        }
    }

    /// The php-fpm master's PID (its workers are its children).
    pub fn fpm_pid(&self) -> u32 {
        self.fpm.pid()
    }

    /// `GET path` with the session cookie; returns (status, body).
    pub fn get(&self, path: &str, session: &str) -> (u16, String) {
        http_get(&format!("{}:{}", self.addr, self.port), path, session)
    }

    /// Stops a master and its workers: SIGTERM to the master (php-fpm and
    /// nginx then stop their workers themselves), SIGKILL by PID to any
    /// worker still there after that; never by name.
    fn stop(master: &mut Proc) {
        let workers = crate::children_of(master.pid());
        if master.signal("TERM", Duration::from_secs(5)).is_none() {
            master.kill();
        }
        for worker in workers {
            worker.kill();
        }
    }

    pub fn log(&self) -> String {
        let fpm = std::fs::read_to_string(self.dir.path.join("fpm.log")).unwrap_or_default();
        let nginx = std::fs::read_to_string(self.dir.path.join("nginx.err")).unwrap_or_default();
        format!("php-fpm:\n{fpm}\nnginx:\n{nginx}")
    }
}

impl Drop for WebStack {
    /// A SIGKILLed php-fpm or nginx master leaves its workers running
    /// (orphans that hold files and ports): stop them the way they expect.
    fn drop(&mut self) {
        WebStack::stop(&mut self.fpm);
        WebStack::stop(&mut self.nginx);
    }
}

/// `GET path` on `addr` (host:port) with the session cookie, HTTP/1.0;
/// returns (status, body).
pub fn http_get(addr: &str, path: &str, session: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap_or_else(|e| panic!("connect {addr}: {e}"));
    s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    // One write: PHP's built-in server takes a request split over several
    // packets for a malformed one.
    let request =
        format!("GET {path} HTTP/1.0\r\nHost: localhost\r\nCookie: PHPSESSID={session}\r\n\r\n");
    if let Err(e) = s.write_all(request.as_bytes()) {
        return (0, format!("sending the request to {addr}: {e}"));
    }
    let mut raw = String::new();
    let _ = s.read_to_string(&mut raw);
    let status = raw
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = raw
        .split_once("\r\n\r\n")
        .map_or(String::new(), |(_, b)| b.to_owned());
    (status, body)
}
