//! `weft top [DEST]`: the most requested paths by source and destination, live, in a terminal
//! table that refreshes every second (as `linkerd viz top`); `-o json` streams the table as one
//! JSON line per refresh instead. Built on the same per-proxy tap streams as `weft tap`.

use std::io::IsTerminal as _;
use std::process::ExitCode;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use ratatui::crossterm::event::{self, Event, KeyCode, KeyEventKind, KeyModifiers};
use ratatui::layout::Constraint;
use ratatui::style::{Modifier, Style};
use ratatui::widgets::{Block, Row, Table};
use serde_json::json;
use weft_control::telemetry::{Top, TopRow};

use super::mesh::{self, MeshArgs};
use super::scrape::parse_window;
use super::tap::{self, Filters};
use super::Output;

#[derive(Debug, clap::Args)]
pub struct TopArgs {
    /// Only this workload's requests (`deploy/NAME`) or a service's (`svc/NAME`); default: every
    /// request in the mesh, counted where it arrives.
    pub dest: Option<String>,
    /// Only requests whose path starts with this.
    #[arg(long)]
    pub path: Option<String>,
    /// Only requests with this method.
    #[arg(long)]
    pub method: Option<String>,
    /// Only requests from this workload.
    #[arg(long)]
    pub from: Option<String>,
    /// At most this many events per second from each proxy (the rest are counted as dropped).
    #[arg(long, default_value_t = 1000, value_parser = clap::value_parser!(u32).range(1..=10_000))]
    pub max_rps: u32,
    /// How often the table is redrawn (or, with `-o json`, printed).
    #[arg(long, default_value = "1s", value_parser = parse_window)]
    pub refresh: Duration,
    /// Rows shown.
    #[arg(long, default_value_t = 20)]
    pub rows: usize,
    /// Stop after this many seconds (default: until `q`, Esc or Ctrl-C).
    #[arg(long)]
    pub duration: Option<f64>,
    #[command(flatten)]
    pub mesh: MeshArgs,
    /// Output format.
    #[arg(long, short, value_enum, default_value_t = Output::Text)]
    pub output: Output,
}

pub fn run(args: TopArgs) -> anyhow::Result<ExitCode> {
    if args.output == Output::Text && !std::io::stdout().is_terminal() {
        anyhow::bail!("weft top draws in a terminal; `-o json` streams the table instead");
    }
    let found = mesh::locate(&args.mesh)?;
    let filters = Filters {
        path: args.path.clone(),
        method: args.method.clone(),
        from: args.from.clone(),
        max_rps: args.max_rps,
    };
    let events = tap::open(args.dest.as_deref(), &filters, found.sidecars(&args.mesh)?)?;
    let top = Arc::new(Mutex::new(Top::default()));
    let counting = Arc::clone(&top);
    std::thread::spawn(move || {
        while let Some(e) = events.next(None) {
            counting.lock().unwrap_or_else(PoisonError::into_inner).add(&e);
        }
    });
    let deadline = args
        .duration
        .map(|s| Instant::now() + Duration::from_secs_f64(s.max(0.0)));
    match args.output {
        Output::Json => stream_json(&args, &top, deadline)?,
        Output::Text => draw(&args, &top, deadline)?,
    }
    Ok(ExitCode::SUCCESS)
}

/// One `{"events", "dropped", "rows"}` line per refresh.
fn stream_json(args: &TopArgs, top: &Mutex<Top>, deadline: Option<Instant>) -> anyhow::Result<()> {
    loop {
        let wait = deadline.map_or(args.refresh, |d| {
            args.refresh.min(d.saturating_duration_since(Instant::now()))
        });
        std::thread::sleep(wait);
        let line = {
            let t = top.lock().unwrap_or_else(PoisonError::into_inner);
            json!({ "events": t.events, "dropped": t.dropped, "rows": t.rows(args.rows) })
        };
        out!("{line}");
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Ok(());
        }
    }
}

/// The terminal table until a quit key or the deadline; the terminal is restored either way.
fn draw(args: &TopArgs, top: &Mutex<Top>, deadline: Option<Instant>) -> anyhow::Result<()> {
    let mut terminal = ratatui::try_init()?;
    let result = (|| -> anyhow::Result<()> {
        loop {
            let (rows, events, dropped) = {
                let t = top.lock().unwrap_or_else(PoisonError::into_inner);
                (t.rows(args.rows), t.events, t.dropped)
            };
            terminal.draw(|frame| frame.render_widget(table(&rows, events, dropped), frame.area()))?;
            let until = Instant::now() + args.refresh;
            while Instant::now() < until {
                if deadline.is_some_and(|d| Instant::now() >= d) {
                    return Ok(());
                }
                if event::poll(Duration::from_millis(100))? {
                    if let Event::Key(k) = event::read()? {
                        let ctrl_c =
                            k.code == KeyCode::Char('c') && k.modifiers.contains(KeyModifiers::CONTROL);
                        if k.kind == KeyEventKind::Press
                            && (matches!(k.code, KeyCode::Char('q') | KeyCode::Esc) || ctrl_c)
                        {
                            return Ok(());
                        }
                    }
                }
            }
        }
    })();
    ratatui::restore();
    result
}

fn table(rows: &[TopRow], events: u64, dropped: u64) -> Table<'static> {
    let header = Row::new([
        "SOURCE",
        "DESTINATION",
        "METHOD",
        "PATH",
        "COUNT",
        "BEST",
        "WORST",
        "LAST",
        "SUCCESS",
    ])
    .style(Style::default().add_modifier(Modifier::BOLD));
    let body: Vec<Row<'static>> = rows
        .iter()
        .map(|r| {
            Row::new([
                r.source.clone(),
                r.destination.clone(),
                r.method.clone(),
                r.path.clone(),
                r.count.to_string(),
                format!("{:.1}ms", r.best_ms),
                format!("{:.1}ms", r.worst_ms),
                format!("{:.1}ms", r.last_ms),
                format!("{:.2}%", r.success_rate * 100.0),
            ])
        })
        .collect();
    let widths = [
        Constraint::Min(16),
        Constraint::Min(16),
        Constraint::Length(7),
        Constraint::Fill(2),
        Constraint::Length(7),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
    ];
    Table::new(body, widths)
        .header(header)
        .block(Block::bordered().title(format!(
            " weft top: {events} requests seen, {dropped} dropped by the proxies (q quits) "
        )))
}
