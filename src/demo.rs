//! `domnet demo`: a private daemon in a temporary directory, a scripted walk through
//! what domnet does, a table of the checks, and everything torn down afterwards.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use hypervisor::xs_socket::SocketClient;

use crate::cli::format_list;
use crate::control::{self, Request};
use crate::daemon::DomainRow;

struct Demo {
    dir: PathBuf,
    run: PathBuf,
    state: PathBuf,
    daemon: Option<Child>,
    checks: Vec<(String, bool, String)>,
}

impl Demo {
    fn step(&self, what: &str) {
        println!("==> {what}");
    }

    fn check(&mut self, what: &str, ok: bool, detail: impl Into<String>) {
        let detail = detail.into();
        println!(
            "    [{}] {what}{}",
            if ok { " ok " } else { "FAIL" },
            if detail.is_empty() {
                String::new()
            } else {
                format!(": {detail}")
            }
        );
        self.checks.push((what.to_string(), ok, detail));
    }

    fn start_daemon(&mut self) -> Result<Duration, String> {
        let exe = std::env::current_exe().map_err(|e| e.to_string())?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.dir.join("daemon.log"))
            .map_err(|e| e.to_string())?;
        let t0 = Instant::now();
        let child = Command::new(exe)
            .arg("daemon")
            .arg("--run-dir")
            .arg(&self.run)
            .arg("--state-dir")
            .arg(&self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start the daemon: {e}"))?;
        self.daemon = Some(child);
        while t0.elapsed() < Duration::from_secs(20) {
            if control::call(&self.run, &Request::List).is_ok() {
                return Ok(t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Err("the daemon did not come up within 20 s (see daemon.log)".into())
    }

    fn call(&self, req: &Request) -> Result<serde_json::Value, String> {
        match control::call(&self.run, req) {
            Ok(r) if r.ok => Ok(r.data),
            Ok(r) => Err(r.error.unwrap_or_default()),
            Err(e) => Err(e.to_string()),
        }
    }

    fn list(&self) -> Result<Vec<DomainRow>, String> {
        serde_json::from_value(self.call(&Request::List)?).map_err(|e| e.to_string())
    }

    fn kill_daemon(&mut self, signal: i32) {
        if let Some(mut c) = self.daemon.take() {
            // SAFETY: kill(2) on our own child's pid.
            unsafe { libc::kill(c.id() as i32, signal) };
            let _ = c.wait();
        }
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        self.kill_daemon(libc::SIGTERM);
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

const GUEST_CFG: &str = "# embedded demo guest\nname = \"NAME\"\nmemory = 64\nvcpus = 1\n";

fn write_cfg(dir: &Path, name: &str) -> Result<(PathBuf, String), String> {
    let text = GUEST_CFG.replace("NAME", name);
    let path = dir.join(format!("{name}.cfg"));
    std::fs::write(&path, &text).map_err(|e| e.to_string())?;
    Ok((path, text))
}

/// Runs the demo; exit 0 when every check passed.
pub fn run() -> ExitCode {
    let dir = std::env::temp_dir().join(format!("domnet-demo-{}", std::process::id()));
    let mut demo = Demo {
        run: dir.join("run"),
        state: dir.join("state"),
        dir,
        daemon: None,
        checks: Vec::new(),
    };
    if let Err(e) = std::fs::create_dir_all(&demo.run) {
        eprintln!("domnet demo: cannot create {}: {e}", demo.run.display());
        return ExitCode::from(1);
    }
    if let Err(e) = script(&mut demo) {
        demo.check("demo script", false, e);
    }
    println!();
    println!("{:<58} result", "check");
    for (what, ok, _) in &demo.checks {
        println!("{:<58} {}", what, if *ok { "pass" } else { "FAIL" });
    }
    let failed = demo.checks.iter().filter(|c| !c.1).count();
    println!(
        "\n{} checks, {} failed. (Networking — vifs, bridges, routes, NAT — arrives with the next releases of this demo.)",
        demo.checks.len(),
        failed
    );
    if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}

fn script(demo: &mut Demo) -> Result<(), String> {
    demo.step(&format!(
        "starting a private daemon in {}",
        demo.dir.display()
    ));
    let up = demo.start_daemon()?;
    demo.check(
        "daemon up (hypervisor + xenstored)",
        true,
        format!("{:.0} ms", up.as_secs_f64() * 1000.0),
    );

    demo.step("creating two domains from xl.cfg files");
    for name in ["demo-web", "demo-db"] {
        let (path, text) = write_cfg(&demo.dir, name)?;
        let r = demo.call(&Request::Create {
            config: text,
            path: path.display().to_string(),
        });
        demo.check(
            &format!("create {name}"),
            r.is_ok(),
            r.err().unwrap_or_default(),
        );
    }
    let rows = demo.list()?;
    print!("{}", format_list(&rows));
    demo.check("list shows dom0 and both guests", rows.len() == 3, "");

    demo.step("xenstore as Xen's tools see it (XENSTORED_PATH)");
    let dom0_sock: String =
        serde_json::from_value(demo.call(&Request::XenstorePath { domain: None })?)
            .map_err(|e| e.to_string())?;
    println!("    XENSTORED_PATH={dom0_sock}");
    let web = rows
        .iter()
        .find(|r| r.name == "demo-web")
        .ok_or("demo-web missing")?;
    let mut xs = SocketClient::connect(Path::new(&dom0_sock)).map_err(|e| e.to_string())?;
    let home = format!("/local/domain/{}", web.domid);
    let children = xs.directory(&home).map_err(|e| e.to_string())?;
    println!("    {home}: {}", children.join(" "));
    let name = xs
        .read(&format!("{home}/name"))
        .map_err(|e| e.to_string())?;
    demo.check(
        "standard tree written on create",
        name == b"demo-web",
        String::from_utf8_lossy(&name),
    );

    let guest_sock: String = serde_json::from_value(demo.call(&Request::XenstorePath {
        domain: Some("demo-web".into()),
    })?)
    .map_err(|e| e.to_string())?;
    let mut guest = SocketClient::connect(Path::new(&guest_sock)).map_err(|e| e.to_string())?;
    let own = guest.write("data/greeting", b"hello from the guest");
    demo.check(
        "guest writes under its own home (relative path)",
        own.is_ok(),
        "",
    );
    let denied = guest.read("/local/domain/0/name");
    demo.check(
        "guest cannot read dom0's nodes",
        denied.as_ref().err().and_then(|e| e.xs()).map(|e| e.name()) == Some("EACCES"),
        denied.err().map(|e| e.to_string()).unwrap_or_default(),
    );

    demo.step("kill -9 the daemon, start it again");
    demo.kill_daemon(libc::SIGKILL);
    let up = demo.start_daemon()?;
    let after = demo.list()?;
    demo.check(
        "domains survive kill -9",
        after
            .iter()
            .map(|r| (&r.name, r.domid))
            .eq(rows.iter().map(|r| (&r.name, r.domid))),
        format!("back in {:.0} ms", up.as_secs_f64() * 1000.0),
    );
    let mut xs = SocketClient::connect(Path::new(&dom0_sock)).map_err(|e| e.to_string())?;
    let greeting = xs
        .read(&format!("{home}/data/greeting"))
        .map_err(|e| e.to_string())?;
    demo.check(
        "committed xenstore data survives kill -9",
        greeting == b"hello from the guest",
        "",
    );

    demo.step("destroying the guests");
    for name in ["demo-web", "demo-db"] {
        let r = demo.call(&Request::Destroy {
            domain: name.into(),
        });
        demo.check(
            &format!("destroy {name}"),
            r.is_ok(),
            r.err().unwrap_or_default(),
        );
    }
    let gone = xs.read(&home).err().and_then(|e| e.xs()).map(|e| e.name());
    demo.check(
        "destroy removes the domain's nodes",
        gone == Some("ENOENT"),
        "",
    );
    demo.kill_daemon(libc::SIGTERM);
    Ok(())
}
