//! What `top` draws: a status line, the server table, the agent table and a help line. Sorting
//! lives here too, as the order is a matter of display only.

use std::cmp::Ordering;

use ratatui::{
    Frame,
    layout::{Constraint, Layout},
    style::{Modifier, Style},
    text::Line,
    widgets::{Block, Borders, Cell, Row, Table},
};

use super::model::{AgentRow, ServerRow, View};

const SERVER_COLUMNS: [&str; 10] = [
    "SERVER", "MODEL", "REQS", "REQ/S", "TTFT-P50", "TTFT-P95", "TOK/S", "ACTIVE", "QUEUE",
    "ERRORS",
];
const AGENT_COLUMNS: [&str; 6] = [
    "PROCESS",
    "CALLS",
    "PROMPT-TOK",
    "RESP-TOK",
    "COST-USD",
    "TOOLS",
];

/// The screen's state between frames.
#[derive(Debug, Default)]
pub struct App {
    pub view: View,
    /// The last scrape's outcome ("ok …" or the error), shown on the first line.
    pub status: String,
    pub url: String,
    /// Index into [`SERVER_COLUMNS`] / [`AGENT_COLUMNS`] of the sort column.
    pub server_sort: usize,
    pub agent_sort: usize,
    /// Ascending instead of the default (largest first; names A→Z).
    pub reverse: bool,
}

impl App {
    /// Starts sorted by requests (servers) and calls (agents): the busiest first.
    pub fn new(url: String) -> App {
        App {
            url,
            status: "waiting for the first scrape".into(),
            server_sort: 2,
            agent_sort: 1,
            ..App::default()
        }
    }

    pub fn cycle_server_sort(&mut self) {
        self.server_sort = (self.server_sort + 1) % SERVER_COLUMNS.len();
    }

    pub fn cycle_agent_sort(&mut self) {
        self.agent_sort = (self.agent_sort + 1) % AGENT_COLUMNS.len();
    }
}

/// A sort key: text (names, A→Z) or a number (largest first; absent last).
enum Key<'a> {
    Text(&'a str),
    Num(Option<f64>),
}

fn server_key(r: &ServerRow, col: usize) -> Key<'_> {
    match col {
        0 => Key::Text(&r.server),
        1 => Key::Text(&r.model),
        2 => Key::Num(Some(r.requests)),
        3 => Key::Num(r.req_per_s),
        4 => Key::Num(r.ttft_p50),
        5 => Key::Num(r.ttft_p95),
        6 => Key::Num(r.tokens_per_s),
        7 => Key::Num(Some(r.active)),
        8 => Key::Num(Some(r.queue)),
        _ => Key::Num(Some(r.errors)),
    }
}

fn agent_key(r: &AgentRow, col: usize) -> Key<'_> {
    match col {
        0 => Key::Text(&r.process),
        1 => Key::Num(Some(r.calls)),
        2 => Key::Num(Some(r.prompt_tokens)),
        3 => Key::Num(Some(r.response_tokens)),
        4 => Key::Num(Some(r.cost_usd)),
        _ => Key::Num(Some(r.tool_calls)),
    }
}

fn compare(a: &Key<'_>, b: &Key<'_>, reverse: bool) -> Ordering {
    let natural = match (a, b) {
        (Key::Text(x), Key::Text(y)) => x.cmp(y),
        // Largest first; rows without a value go last either way.
        (Key::Num(Some(x)), Key::Num(Some(y))) => y.total_cmp(x),
        (Key::Num(None), Key::Num(None)) => Ordering::Equal,
        (Key::Num(None), _) => return Ordering::Greater,
        (_, Key::Num(None)) => return Ordering::Less,
        _ => Ordering::Equal,
    };
    if reverse { natural.reverse() } else { natural }
}

/// Orders the view's rows by the app's sort columns (stable, so ties keep the model's order).
pub fn sort(app: &mut App) {
    let (s, a, rev) = (app.server_sort, app.agent_sort, app.reverse);
    app.view
        .servers
        .sort_by(|x, y| compare(&server_key(x, s), &server_key(y, s), rev));
    app.view
        .agents
        .sort_by(|x, y| compare(&agent_key(x, a), &agent_key(y, a), rev));
}

fn num(v: f64) -> String {
    format!("{v:.0}")
}

fn opt(v: Option<f64>, decimals: usize, unit: &str) -> String {
    v.map_or_else(|| "-".into(), |v| format!("{v:.decimals$}{unit}"))
}

fn name(s: &str) -> String {
    if s.is_empty() {
        "-".into()
    } else {
        s.to_owned()
    }
}

fn header<'a>(columns: &[&'a str], sorted: usize) -> Row<'a> {
    Row::new(columns.iter().enumerate().map(|(i, c)| {
        let text = if i == sorted {
            format!("{c}*")
        } else {
            (*c).to_owned()
        };
        Cell::from(text)
    }))
    .style(Style::default().add_modifier(Modifier::BOLD | Modifier::REVERSED))
}

pub fn draw(frame: &mut Frame<'_>, app: &App) {
    let [status, servers, agents, help] = Layout::vertical([
        Constraint::Length(1),
        Constraint::Fill(3),
        Constraint::Fill(2),
        Constraint::Length(1),
    ])
    .areas(frame.area());
    frame.render_widget(
        Line::from(format!("llm-observer top  {}  {}", app.url, app.status)),
        status,
    );

    let rows = app.view.servers.iter().map(|r| {
        Row::new([
            name(&r.server),
            name(&r.model),
            num(r.requests),
            opt(r.req_per_s, 1, ""),
            opt(r.ttft_p50, 3, "s"),
            opt(r.ttft_p95, 3, "s"),
            opt(r.tokens_per_s, 1, ""),
            num(r.active),
            num(r.queue),
            num(r.errors),
        ])
    });
    let widths = [
        Constraint::Min(14),
        Constraint::Min(24),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(9),
        Constraint::Length(9),
        Constraint::Length(8),
        Constraint::Length(7),
        Constraint::Length(6),
        Constraint::Length(7),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header(&SERVER_COLUMNS, app.server_sort))
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(" servers (llm_*) "),
            ),
        servers,
    );

    let rows = app.view.agents.iter().map(|r| {
        Row::new([
            name(&r.process),
            num(r.calls),
            num(r.prompt_tokens),
            num(r.response_tokens),
            format!("{:.4}", r.cost_usd),
            num(r.tool_calls),
        ])
    });
    let widths = [
        Constraint::Min(24),
        Constraint::Length(9),
        Constraint::Length(11),
        Constraint::Length(11),
        Constraint::Length(10),
        Constraint::Length(7),
    ];
    frame.render_widget(
        Table::new(rows, widths)
            .header(header(&AGENT_COLUMNS, app.agent_sort))
            .block(
                Block::default()
                    .borders(Borders::TOP)
                    .title(" agents (llm_client_*, by process) "),
            ),
        agents,
    );

    let order = if app.reverse {
        "ascending"
    } else {
        "descending"
    };
    frame.render_widget(
        Line::from(format!(
            "q quit  s sort servers ({})  a sort agents ({})  r reverse ({order})",
            SERVER_COLUMNS[app.server_sort], AGENT_COLUMNS[app.agent_sort]
        )),
        help,
    );
}

#[cfg(test)]
mod tests {
    use ratatui::{Terminal, backend::TestBackend};

    use super::*;

    fn server(model: &str, requests: f64, p95: Option<f64>) -> ServerRow {
        ServerRow {
            server: String::new(),
            model: model.into(),
            requests,
            req_per_s: None,
            ttft_p50: None,
            ttft_p95: p95,
            tokens_per_s: None,
            active: 0.0,
            queue: 0.0,
            errors: 0.0,
        }
    }

    fn models(app: &App) -> Vec<&str> {
        app.view.servers.iter().map(|r| r.model.as_str()).collect()
    }

    #[test]
    fn sorts_by_the_chosen_column_absent_values_last() {
        let mut app = App::new("u".into());
        app.view.servers = vec![
            server("b", 1.0, Some(0.5)),
            server("a", 5.0, None),
            server("c", 3.0, Some(0.9)),
        ];
        sort(&mut app);
        assert_eq!(models(&app), ["a", "c", "b"]);
        app.server_sort = 5;
        sort(&mut app);
        assert_eq!(models(&app), ["c", "b", "a"]);
        app.reverse = true;
        sort(&mut app);
        assert_eq!(models(&app), ["b", "c", "a"]);
        app.reverse = false;
        app.server_sort = 1;
        sort(&mut app);
        assert_eq!(models(&app), ["a", "b", "c"]);
        // `s` walks every column and comes back.
        for _ in 0..SERVER_COLUMNS.len() {
            app.cycle_server_sort();
        }
        assert_eq!(app.server_sort, 1);
    }

    #[test]
    fn draws_a_row_per_model_with_its_numbers() {
        let mut app = App::new("http://x/metrics".into());
        app.view.servers = vec![server("m-top", 7.0, Some(0.25))];
        let mut term = Terminal::new(TestBackend::new(140, 12)).expect("terminal");
        term.draw(|f| draw(f, &app)).expect("draw");
        let buf = term.backend().buffer();
        let lines: Vec<String> = (0..buf.area.height)
            .map(|y| (0..buf.area.width).map(|x| buf[(x, y)].symbol()).collect())
            .collect();
        let row = lines
            .iter()
            .find(|l| l.contains("m-top"))
            .expect("model row");
        let fields: Vec<&str> = row.split_whitespace().collect();
        assert_eq!(
            fields,
            ["-", "m-top", "7", "-", "-", "0.250s", "-", "0", "0", "0"]
        );
        assert!(
            lines[0].starts_with("llm-observer top  http://x/metrics  waiting"),
            "{lines:#?}"
        );
        assert!(
            lines[11].starts_with("q quit  s sort servers (REQS)"),
            "{lines:#?}"
        );
    }
}
