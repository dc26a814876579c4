//! `--plot FILE.svg`: throughput and lag over time, one line per run.

use std::fmt::Write as _;

/// A point of a run's timeline, taken by the load test while it waits.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Sample {
    /// Seconds since the load started.
    pub(crate) t: f64,
    /// Messages the broker has acknowledged.
    pub(crate) produced: u64,
    /// Distinct messages processed.
    pub(crate) unique: u64,
}

const COLORS: [&str; 6] = [
    "#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf",
];
const WIDTH: f64 = 900.0;
const PANEL: f64 = 260.0;
const LEFT: f64 = 80.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 60.0;

/// One line of a panel: (t, value) points.
type Line = Vec<(f64, f64)>;

/// Throughput (msg/s between samples) and lag (produced − processed) of each run.
fn lines(samples: &[Sample]) -> (Line, Line) {
    let throughput = samples
        .windows(2)
        .filter(|w| w[1].t > w[0].t)
        .map(|w| {
            let rate = (w[1].unique - w[0].unique) as f64 / (w[1].t - w[0].t);
            (w[1].t, rate)
        })
        .collect();
    let lag = samples
        .iter()
        .map(|s| (s.t, s.produced.saturating_sub(s.unique) as f64))
        .collect();
    (throughput, lag)
}

/// Renders the runs' timelines as an SVG document.
pub(crate) fn svg(runs: &[(String, Vec<Sample>)]) -> String {
    let per_run: Vec<(&str, Line, Line)> = runs
        .iter()
        .map(|(label, samples)| {
            let (throughput, lag) = lines(samples);
            (label.as_str(), throughput, lag)
        })
        .collect();
    let t_max = per_run
        .iter()
        .flat_map(|(_, a, b)| a.iter().chain(b))
        .map(|p| p.0)
        .fold(0.0, f64::max)
        .max(0.001);
    let height = TOP + 2.0 * PANEL + GAP + 70.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let panels = [
        ("throughput (msg/s)", 1usize, TOP),
        (
            "lag (messages produced, not yet processed)",
            2,
            TOP + PANEL + GAP,
        ),
    ];
    for (title, which, top) in panels {
        let series: Vec<(&str, &Line)> = per_run
            .iter()
            .map(|(label, a, b)| (*label, if which == 1 { a } else { b }))
            .collect();
        panel(&mut out, title, top, t_max, &series);
    }
    // Legend.
    let legend_y = TOP + 2.0 * PANEL + GAP + 45.0;
    for (i, (label, _, _)) in per_run.iter().enumerate() {
        let x = LEFT + 160.0 * i as f64;
        let color = COLORS[i % COLORS.len()];
        let _ = writeln!(
            out,
            r#"<line x1="{x}" y1="{legend_y}" x2="{}" y2="{legend_y}" stroke="{color}" stroke-width="2"/><text x="{}" y="{}">{}</text>"#,
            x + 20.0,
            x + 25.0,
            legend_y + 4.0,
            escape(label)
        );
    }
    out.push_str("</svg>\n");
    out
}

fn panel(out: &mut String, title: &str, top: f64, t_max: f64, series: &[(&str, &Line)]) {
    let plot_w = WIDTH - LEFT - RIGHT;
    let y_max = series
        .iter()
        .flat_map(|(_, line)| line.iter().map(|p| p.1))
        .fold(0.0, f64::max)
        .max(1.0)
        * 1.05;
    let x = |t: f64| LEFT + plot_w * t / t_max;
    let y = |v: f64| top + PANEL - PANEL * v / y_max;
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}" font-weight="bold">{}</text>"#,
        top - 10.0,
        escape(title)
    );
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL}" fill="none" stroke="#888"/>"##
    );
    for i in 0..=4 {
        let v = y_max * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r##"<text x="{}" y="{}" text-anchor="end">{:.0}</text><line x1="{LEFT}" y1="{y}" x2="{}" y2="{y}" stroke="#eee"/>"##,
            LEFT - 6.0,
            y(v) + 4.0,
            v,
            WIDTH - RIGHT,
            y = y(v)
        );
        let t = t_max * i as f64 / 4.0;
        let _ = writeln!(
            out,
            r#"<text x="{}" y="{}" text-anchor="middle">{:.2} s</text>"#,
            x(t),
            top + PANEL + 16.0,
            t
        );
    }
    for (i, (_, line)) in series.iter().enumerate() {
        let points: Vec<String> = line
            .iter()
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        let _ = writeln!(
            out,
            r#"<polyline fill="none" stroke="{}" stroke-width="1.5" points="{}"/>"#,
            COLORS[i % COLORS.len()],
            points.join(" ")
        );
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn svg_has_a_line_per_run_in_each_panel() {
        let samples = |rate: u64| -> Vec<Sample> {
            (0..5)
                .map(|i| Sample {
                    t: i as f64 * 0.1,
                    produced: 1000,
                    unique: i * rate,
                })
                .collect()
        };
        let doc = svg(&[
            ("1 instance".into(), samples(10)),
            ("2 instances".into(), samples(20)),
        ]);
        assert!(doc.starts_with("<svg"));
        assert!(doc.trim_end().ends_with("</svg>"));
        assert_eq!(doc.matches("<polyline").count(), 4);
        assert!(doc.contains("2 instances"));
    }
}
