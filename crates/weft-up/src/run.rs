//! `weft up`, top to bottom: read the documents, plan, start the control plane, start every
//! workload with its sidecar, wait until all are ready (saying what it waits for), print what
//! runs and where, then supervise until told to stop, and stop everything cleanly.

use std::collections::BTreeMap;
use std::future::Future;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use nix::sys::signal::Signal;
use weft_api::finding::Severity;
use weft_control::app::{self as control, ControlOptions};
use weft_control::tokens::{Grant, TOKEN_ENV};

use crate::netns::{self, Network};
use crate::plan::{InstancePlan, Plan};
use crate::rundir::{self, InstanceRecord, RunDir, RunRecord};

/// How `weft up` runs.
#[derive(Debug, Clone)]
pub struct UpOptions {
    /// The mesh documents (watched: edits apply live).
    pub dir: PathBuf,
    /// Where logs, configs and the record of this run go (never inside `dir`).
    pub run_dir: PathBuf,
    /// How long to wait for every workload and sidecar to be ready.
    pub ready_timeout: Duration,
    /// The `weft` executable (for sidecars, and a leading `weft` in commands).
    pub exe: PathBuf,
    /// Each instance in its own network namespace with transparent capture (needs root).
    pub netns: bool,
    /// What a printed command needs to name this run (` --run-dir DIR`), empty for the
    /// default run directory: every hint `weft up` prints works as printed.
    pub run_dir_flag: String,
}

/// One started instance.
struct Started {
    plan: InstancePlan,
    app: Child,
    sidecar: Child,
    /// Exit already reported.
    reported: bool,
}

/// What is up, for the caller (e.g. to start a load generator).
#[derive(Debug, Clone)]
pub struct Entry {
    pub workload: String,
    pub url: String,
}

/// Runs the mesh until `shutdown` resolves. `on_ready` gets the entry URLs once everything is up.
pub async fn up(
    options: UpOptions,
    shutdown: impl Future<Output = ()>,
    on_ready: impl FnOnce(&[Entry]),
) -> anyhow::Result<()> {
    if options.netns {
        // Before anything is read or created: say at once what is missing.
        netns::preflight()?;
    }
    let run = RunDir::new(&options.run_dir);
    let dir = options
        .dir
        .canonicalize()
        .with_context(|| format!("reading {}", options.dir.display()))?;
    std::fs::create_dir_all(&run.root)?;
    let run_root = run.root.canonicalize()?;
    // Absolute from here on: every path printed works from any directory.
    let run = RunDir::new(run_root.clone());
    anyhow::ensure!(
        !run_root.starts_with(&dir),
        "the run directory must not be inside {}",
        dir.display()
    );
    let down_hint = format!("weft down{}", options.run_dir_flag);
    let left = run.prepare(&down_hint)?;
    if left > 0 {
        say(&format!(
            "stopped {left} process(es) a previous run (killed before it could stop them) left running"
        ));
    }
    let mut reaper = crate::orphans::spawn_reaper(&options.exe, &run)?;
    if netns::clean_leftovers(&run.root)? {
        say("removed the network namespaces a previous run left behind");
    }

    say(&format!("reading {}", dir.display()));
    if let Some(variants) = weft_api::resources::variants_dir(&dir) {
        say(&format!(
            "  {} holds routing variants: copy one into {} to apply it",
            variants.display(),
            dir.display()
        ));
    }
    let (translated, findings) = weft_api::validate::analyze_paths(std::slice::from_ref(&dir));
    for f in findings.iter().filter(|f| f.severity == Severity::Error) {
        say(&format!("  config error (left out): {f}"));
    }
    // Dropped (removed) on any error below; removed explicitly after a clean stop.
    let mut network = match options.netns {
        true => Some(Network::create(&run.root)?),
        false => None,
    };
    let plan = match &network {
        Some(net) => Plan::in_netns(&translated.mesh, &options.exe, |n| net.instance(n))?,
        None => Plan::new(&translated.mesh, &options.exe, free_port)?,
    };
    // Sidecars in namespaces reach the host on the bridge's address.
    let control_ip = network
        .as_ref()
        .map_or([127, 0, 0, 1].into(), |net| net.subnet.gateway());

    say("starting the control plane");
    let cp = control::start(ControlOptions {
        listen: SocketAddr::from((control_ip, 0)),
        admin: SocketAddr::from(([127, 0, 0, 1], 0)),
        // Discovery and identity over TLS; each sidecar gets the anchor as a file.
        tls: true,
        ..ControlOptions::new(vec![dir.clone()], run.control_state())
    })
    .await?;

    let mut tokens = BTreeMap::new();
    let mut started: Vec<Started> = Vec::new();
    let result = async {
        if let Some(net) = network.as_mut() {
            say(&format!(
                "creating {} network namespaces with capture on {}",
                plan.instances.len(),
                net.subnet.cidr()
            ));
            let vips = vips(&cp);
            let instances: Vec<_> = plan
                .instances
                .iter()
                .filter_map(|i| Some((i.net.clone()?, hosts_lines(&vips, &i.namespace))))
                .collect();
            net.add_instances(&instances, &options.exe)?;
        }
        for inst in &plan.instances {
            // One token per workload, bound to it: replicas share it, no other workload can
            // use it to claim their labels, endpoints or instance ids.
            let key = (inst.namespace.clone(), inst.workload.clone());
            if !tokens.contains_key(&key) {
                let grant = Grant::new(&inst.workload, &inst.namespace, &inst.service_account);
                tokens.insert(key.clone(), cp.source.tokens().create(&grant)?);
            }
            let token = &tokens[&key];
            started.push(start_instance(&run, inst, &options.exe, cp.listen, token)?);
            // Recorded as each starts: a run killed while starting leaves nothing unrecorded.
            run.write(&RunRecord {
                pid: std::process::id(),
                dir: dir.display().to_string(),
                control_admin: cp.admin.to_string(),
                discovery: Some(cp.listen.to_string()),
                reaper_pid: Some(reaper.id()),
                instances: started
                    .iter()
                    .map(|s| InstanceRecord {
                        id: s.plan.id.clone(),
                        workload: s.plan.workload.clone(),
                        app_pid: s.app.id(),
                        sidecar_pid: s.sidecar.id(),
                        sidecar_admin: Some(s.plan.admin().to_string()),
                    })
                    .collect(),
            })?;
        }
        wait_ready(&run, &mut started, options.ready_timeout, &options.run_dir_flag).await
    }
    .await;

    match result {
        Ok(()) => {
            let entries = print_ready(&started, &cp, &run, &options.run_dir_flag);
            on_ready(&entries);
            // A service added while running gets a VIP: name it in every namespace's hosts.
            let mut known = vips(&cp);
            let refresh_hosts = || {
                if network.is_none() {
                    return;
                }
                let now = vips(&cp);
                if now == known {
                    return;
                }
                for inst in &plan.instances {
                    if let Some(net) = &inst.net {
                        if let Err(e) = netns::write_hosts(net, &hosts_lines(&now, &inst.namespace)) {
                            say(&format!("cannot update the hosts file of {}: {e:#}", inst.id));
                        }
                    }
                }
                say("services changed: updated every namespace's hosts file");
                known = now;
            };
            let mut announced = BTreeMap::new();
            let mut refresh_hosts = refresh_hosts;
            let tick = || {
                refresh_hosts();
                announce_refusals(&cp, &dir, &mut announced);
            };
            supervise(&run, &mut started, shutdown, tick).await;
        }
        Err(e) => {
            stop_all(&mut started).await;
            cp.stop();
            if let Some(net) = network.as_mut() {
                net.teardown();
            }
            std::fs::remove_file(run.record()).ok();
            stop_reaper(&mut reaper);
            return Err(e);
        }
    }
    say("stopping: draining sidecars and stopping every workload");
    stop_all(&mut started).await;
    cp.stop();
    if let Some(net) = network.as_mut() {
        net.teardown();
    }
    std::fs::remove_file(run.record()).ok();
    stop_reaper(&mut reaper);
    say("stopped");
    Ok(())
}

fn start_instance(
    run: &RunDir,
    inst: &InstancePlan,
    exe: &std::path::Path,
    control: SocketAddr,
    token: &str,
) -> anyhow::Result<Started> {
    let config = run.sidecar_config(&inst.id);
    std::fs::write(&config, serde_json::to_vec_pretty(&inst.bootstrap())?)?;
    let log = |p: PathBuf| -> anyhow::Result<Stdio> {
        Ok(Stdio::from(
            std::fs::File::create(&p).with_context(|| format!("creating {}", p.display()))?,
        ))
    };
    let sidecar = in_net(inst, exe, exe)
        .arg("proxy")
        .arg("--config")
        .arg(&config)
        .args([
            "--control",
            &format!("http://{control}"),
            "--instance-id",
            &inst.id,
        ])
        // The token in the environment, never in the arguments: /proc/PID/cmdline is readable
        // by every local user, /proc/PID/environ only by the process's own user.
        .env(TOKEN_ENV, token)
        // The trust anchor out of band: the control plane's roots, as a file (re-read by the
        // sidecar, so a root rotation reaches it).
        .arg("--trust-anchor")
        .arg(
            run.control_state()
                .join(weft_control::identity::TRUST_BUNDLE_FILE),
        )
        .args(match &inst.net {
            // Peers reach it on the namespace's address; its own connections carry the mark
            // capture lets through.
            Some(net) => vec![
                "--ip".to_string(),
                net.ip.to_string(),
                "--outbound-mark".to_string(),
                netns::PROXY_MARK.to_string(),
            ],
            None => Vec::new(),
        })
        .stdin(Stdio::null())
        .stdout(log(run.sidecar_log(&inst.id))?)
        .stderr(log(run.sidecar_log(&inst.id).with_extension("err.log"))?)
        .spawn()
        .with_context(|| format!("starting the sidecar of {}", inst.id))?;
    let (program, args) = inst.command.split_first().context("empty command")?;
    let app_log = run.app_log(&inst.id);
    let app = in_net(inst, exe, std::path::Path::new(program))
        .args(args)
        .envs(&inst.env)
        .stdin(Stdio::null())
        .stdout(log(app_log.clone())?)
        .stderr(Stdio::from(
            std::fs::OpenOptions::new().append(true).open(&app_log)?,
        ))
        .spawn()
        .with_context(|| format!("starting {} ({})", inst.id, inst.command.join(" ")))?;
    Ok(Started {
        plan: inst.clone(),
        app,
        sidecar,
        reported: false,
    })
}

/// `program`, started so that it dies with `weft up` in a process group of its own
/// ([`crate::orphans`]), in the instance's network namespace when it has one (`ip netns exec`
/// execs it, so the child's pid is the program's).
fn in_net(inst: &InstancePlan, exe: &std::path::Path, program: &std::path::Path) -> Command {
    match &inst.net {
        Some(net) => {
            let mut cmd = crate::orphans::child_command(exe, std::path::Path::new("ip"));
            cmd.args(["netns", "exec", &net.netns]).arg(program);
            cmd
        }
        None => crate::orphans::child_command(exe, program),
    }
}

/// The reaper has nothing to do after a clean stop (the record is gone); it is stopped rather
/// than left to notice.
fn stop_reaper(reaper: &mut Child) {
    let _ = reaper.kill();
    let _ = reaper.wait();
}

/// Every service's VIP, from the control plane's registry (which keeps them): `(name,
/// namespace, vip)`.
fn vips(cp: &control::Running) -> Vec<(String, String, std::net::IpAddr)> {
    use weft_control::push::ConfigSource as _;
    let services = cp
        .source
        .config_for("weft-up")
        .map(|c| c.services)
        .unwrap_or_default();
    services
        .into_iter()
        .filter_map(|s| Some((s.name, s.namespace, s.vip?)))
        .collect()
}

/// `/etc/hosts` lines for an instance in namespace `ns`, naming each VIP as a Kubernetes pod
/// there may (`reviews` for a service of its own namespace, `reviews.default`,
/// `reviews.default.svc.cluster.local`).
fn hosts_lines(vips: &[(String, String, std::net::IpAddr)], ns: &str) -> String {
    let mut out = String::new();
    for (name, service_ns, vip) in vips {
        out.push_str(&format!(
            "{vip} {name}.{service_ns}.svc.cluster.local {name}.{service_ns}.svc {name}.{service_ns}"
        ));
        if service_ns == ns {
            out.push_str(&format!(" {name}"));
        }
        out.push('\n');
    }
    out
}

/// Waits until every sidecar reports ready (config pushed) and every app accepts connections,
/// printing what it still waits for.
async fn wait_ready(
    run: &RunDir,
    started: &mut [Started],
    timeout: Duration,
    run_dir_flag: &str,
) -> anyhow::Result<()> {
    let deadline = Instant::now() + timeout;
    let mut last_report = String::new();
    loop {
        let mut waiting = Vec::new();
        for s in started.iter_mut() {
            if let Ok(Some(status)) = s.app.try_wait() {
                anyhow::bail!(failure(
                    run_dir_flag,
                    &s.plan.id,
                    &format!("{} exited ({status}) while starting", s.plan.id),
                    &run.app_log(&s.plan.id)
                ));
            }
            if let Ok(Some(status)) = s.sidecar.try_wait() {
                let log = run.sidecar_log(&s.plan.id).with_extension("err.log");
                anyhow::bail!(failure(
                    run_dir_flag,
                    &s.plan.id,
                    &format!("the sidecar of {} exited ({status})", s.plan.id),
                    &log
                ));
            }
            let admin = match &s.plan.net {
                Some(net) => netns::connect_in(&net.netns, s.plan.admin(), Duration::from_millis(200)),
                None => TcpStream::connect_timeout(&s.plan.admin(), Duration::from_millis(200)),
            };
            if !admin.is_ok_and(|conn| http_ok(conn, "/ready")) {
                waiting.push(format!("{} sidecar", s.plan.id));
            }
            for port in s.plan.app_ports.values() {
                let up = match &s.plan.net {
                    Some(_) => netns::listening(s.app.id(), *port),
                    None => TcpStream::connect_timeout(
                        &SocketAddr::from(([127, 0, 0, 1], *port)),
                        Duration::from_millis(200),
                    )
                    .is_ok(),
                };
                if !up {
                    waiting.push(format!("{} app on :{port}", s.plan.id));
                }
            }
        }
        if waiting.is_empty() {
            return Ok(());
        }
        let report = format!(
            "waiting for {} of {} instances: {}",
            waiting.len(),
            started.len() * 2,
            waiting.join(", ")
        );
        if report != last_report {
            say(&report);
            last_report = report;
        }
        if Instant::now() > deadline {
            let first = waiting.first().map(String::as_str).unwrap_or("");
            let id = first.split(' ').next().unwrap_or("");
            let log = if first.contains("sidecar") {
                run.sidecar_log(id).with_extension("err.log")
            } else {
                run.app_log(id)
            };
            anyhow::bail!(failure(
                run_dir_flag,
                id,
                &format!("{first} not ready after {timeout:?}"),
                &log
            ));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn failure(run_dir_flag: &str, id: &str, what: &str, log: &std::path::Path) -> String {
    format!(
        "{what}; last lines of {}:\n{}\n(`weft logs {id}{run_dir_flag}` shows it all)",
        log.display(),
        rundir::tail(log, 15)
    )
}

fn print_ready(started: &[Started], cp: &control::Running, run: &RunDir, run_dir_flag: &str) -> Vec<Entry> {
    println!(
        "\nWeft is up: {} workload instance(s), each with its own sidecar\n",
        started.len()
    );
    let id_width = started.iter().map(|s| s.plan.identity().len()).max().unwrap_or(8) + 2;
    let inst_width = started.iter().map(|s| s.plan.id.len()).max().unwrap_or(8).max(8) + 2;
    // With --netns each instance is a pod: its namespace is worth showing (`ip netns exec`).
    let netns_column = started.iter().any(|s| s.plan.net.is_some());
    let header = format!(
        "{:<inst_width$} {:<id_width$} {:<10} {:<28} {:<34}{}",
        "INSTANCE",
        "IDENTITY",
        "APP PORT",
        "OPEN (through its sidecar)",
        "METRICS",
        if netns_column { " NETNS" } else { "" }
    );
    println!("{}", header.trim_end());
    let mut entries = Vec::new();
    for s in started {
        let p = &s.plan;
        let app = p
            .app_ports
            .values()
            .map(u16::to_string)
            .collect::<Vec<_>>()
            .join(",");
        let front = p.open_url();
        let netns = p
            .net
            .as_ref()
            .map(|n| format!(" {}", n.netns))
            .unwrap_or_default();
        let line = format!(
            "{:<inst_width$} {:<id_width$} {:<10} {:<28} {:<34}{netns}",
            p.id,
            p.identity(),
            app,
            front.clone().unwrap_or_else(|| "-".into()),
            // On loopback; with --netns in the instance's namespace (see the note below).
            format!("http://{}/metrics", p.admin()),
        );
        println!("{}", line.trim_end());
        if let Some(url) = front {
            entries.push(Entry {
                workload: p.workload.clone(),
                url,
            });
        }
    }
    let main = entries
        .iter()
        .find(|e| e.workload.starts_with("productpage"))
        .or(entries.first());
    if let Some(e) = main {
        let path = if e.workload.starts_with("productpage") {
            "productpage"
        } else {
            ""
        };
        println!("\nOpen the application: {}{path}", e.url);
    }
    if netns_column {
        println!(
            "\nAdmin ports listen on each namespace's loopback: `sudo ip netns exec NETNS curl http://127.0.0.1:{}/metrics`",
            netns::ADMIN_PORT
        );
    }
    let example = started.first().map_or("WORKLOAD", |s| s.plan.workload.as_str());
    println!(
        "\nProxies and config: `weft status{run_dir_flag}`  (control-plane admin: http://{})",
        cp.admin
    );
    println!(
        "Logs: `weft logs {example}{run_dir_flag}` (any workload; files in {})",
        run.logs().display()
    );
    println!(
        "Attach one more proxy: discovery on {} (TLS, trust anchor {}); mint its token with `weft token create --workload NAME{run_dir_flag}`",
        cp.listen,
        run.control_state().join(weft_control::identity::TRUST_BUNDLE_FILE).display(),
    );
    println!(
        "Edit the YAML in the directory to change traffic live. Ctrl-C (or `weft down{run_dir_flag}`) stops everything.\n"
    );
    entries
}

/// Says, plainly and on lines of their own, when the control plane refuses a file's new version
/// (naming each error at its file:line) and when a refused file is accepted again. `announced`:
/// the refusals already said, by file, with when each was first seen.
fn announce_refusals(
    cp: &control::Running,
    dir: &std::path::Path,
    announced: &mut BTreeMap<String, std::time::SystemTime>,
) {
    let (refused, _) = cp.source.refused();
    for r in &refused {
        if announced.get(&r.file) == Some(&r.refused_at) {
            continue;
        }
        say(&format!(
            "refused {}: still serving its last good version (since {}); the new version has {} error(s):",
            r.file,
            weft_api::human::time(r.serving_since),
            r.errors.len()
        ));
        for e in &r.errors {
            println!("  {e}");
        }
        announced.insert(r.file.clone(), r.refused_at);
    }
    announced.retain(|file, _| {
        let still = refused.iter().any(|r| &r.file == file);
        match (still, dir.join(file).exists()) {
            (true, _) => {}
            (false, true) => say(&format!("accepted {file}: the version written now serves")),
            (false, false) => say(&format!("{file} was removed: what it defined is gone")),
        }
        still
    });
}

/// Reports instances that exit until `shutdown`; `tick` runs every half second.
async fn supervise(
    run: &RunDir,
    started: &mut [Started],
    shutdown: impl Future<Output = ()>,
    mut tick: impl FnMut(),
) {
    tokio::pin!(shutdown);
    loop {
        tokio::select! {
            _ = &mut shutdown => return,
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
        tick();
        for s in started.iter_mut().filter(|s| !s.reported) {
            if let Ok(Some(status)) = s.app.try_wait() {
                say(&format!(
                    "{} exited ({status}); last lines:\n{}",
                    s.plan.id,
                    rundir::tail(&run.app_log(&s.plan.id), 10)
                ));
                s.reported = true;
            } else if let Ok(Some(status)) = s.sidecar.try_wait() {
                say(&format!("the sidecar of {} exited ({status})", s.plan.id));
                s.reported = true;
            }
        }
    }
}

/// SIGTERM to every sidecar and app (sidecars drain first), then SIGKILL what is left; then
/// whatever they started (their process groups).
async fn stop_all(started: &mut [Started]) {
    stop_children(started).await;
    let groups: Vec<u32> = started
        .iter()
        .flat_map(|s| [s.app.id(), s.sidecar.id()])
        .collect();
    crate::orphans::stop_groups(&groups, Duration::from_secs(2));
}

async fn stop_children(started: &mut [Started]) {
    for s in started.iter() {
        rundir::signal(s.sidecar.id(), Signal::SIGTERM);
        rundir::signal(s.app.id(), Signal::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(7);
    loop {
        let mut left = 0;
        for s in started.iter_mut() {
            for child in [&mut s.app, &mut s.sidecar] {
                if matches!(child.try_wait(), Ok(None)) {
                    left += 1;
                }
            }
        }
        if left == 0 {
            return;
        }
        if Instant::now() > deadline {
            for s in started.iter_mut() {
                let _ = s.app.kill();
                let _ = s.sidecar.kill();
                let _ = s.app.wait();
                let _ = s.sidecar.wait();
            }
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A port free now, below Linux's ephemeral range (32768 and up) so that no outgoing
/// connection takes it before the process it is meant for binds it; probing starts at a random
/// place so two `weft up`s starting together do not pick the same ports.
fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU16, Ordering};
    static NEXT: AtomicU16 = AtomicU16::new(0);
    const LOW: u16 = 20_000;
    const SPAN: u16 = 12_000;
    let _ = NEXT.compare_exchange(0, fastrand::u16(1..SPAN), Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let port = LOW + NEXT.fetch_add(1, Ordering::Relaxed) % SPAN;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap_or(0)
}

/// A tiny blocking GET on `s` for readiness probes.
fn http_ok(mut s: TcpStream, path: &str) -> bool {
    use std::io::{Read, Write};
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if write!(s, "GET {path} HTTP/1.0\r\n\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 16];
    matches!(s.read(&mut buf), Ok(n) if buf[..n].starts_with(b"HTTP/1.1 200") || buf[..n].starts_with(b"HTTP/1.0 200"))
}

fn say(line: &str) {
    println!("weft up: {line}");
}
