//! The soak plot: resident memory, p99 latency and error rate over time, three panels
//! sharing the time axis, as one self-contained SVG.

use std::fmt::Write;

/// One sample of the soak, every few seconds.
#[derive(Clone, Debug)]
pub struct Sample {
    /// Seconds since the soak started.
    pub t_s: f64,
    /// Resident memory of each instance, MiB.
    pub rss_mib: Vec<f64>,
    /// p99 latency of the requests that started in this interval, ms.
    pub p99_ms: f64,
    /// Failed share of the requests that started in this interval, percent.
    pub error_pct: f64,
}

const W: f64 = 900.0;
const PANEL_H: f64 = 170.0;
const LEFT: f64 = 70.0;
const RIGHT: f64 = 20.0;
const TOP: f64 = 40.0;
const GAP: f64 = 40.0;
const COLORS: [&str; 4] = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728"];

/// Render the samples; `title` heads the picture.
pub fn svg(title: &str, samples: &[Sample]) -> String {
    let height = TOP + 3.0 * (PANEL_H + GAP) + 10.0;
    let mut out = String::new();
    let _ = writeln!(
        out,
        r#"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{height}" font-family="sans-serif" font-size="12">"#
    );
    let _ = writeln!(out, r#"<rect width="100%" height="100%" fill="white"/>"#);
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="22" font-size="15">{}</text>"#,
        escape(title)
    );
    let t_max = samples.iter().map(|s| s.t_s).fold(1.0, f64::max);
    let instances = samples.iter().map(|s| s.rss_mib.len()).max().unwrap_or(0);
    let rss: Vec<Vec<(f64, f64)>> = (0..instances)
        .map(|i| {
            samples
                .iter()
                .filter_map(|s| s.rss_mib.get(i).map(|&v| (s.t_s, v)))
                .filter(|(_, v)| v.is_finite())
                .collect()
        })
        .collect();
    let p99: Vec<(f64, f64)> = samples.iter().map(|s| (s.t_s, s.p99_ms)).collect();
    let errors: Vec<(f64, f64)> = samples.iter().map(|s| (s.t_s, s.error_pct)).collect();
    let names: Vec<String> = (0..instances).map(|i| format!("instance {i}")).collect();
    panel(&mut out, 0, "resident memory (MiB)", t_max, &rss, &names);
    panel(
        &mut out,
        1,
        "p99 latency (ms)",
        t_max,
        &[p99],
        &["p99".into()],
    );
    panel(
        &mut out,
        2,
        "failed requests (%)",
        t_max,
        &[errors],
        &["errors".into()],
    );
    let _ = writeln!(out, "</svg>");
    out
}

fn panel(
    out: &mut String,
    index: usize,
    label: &str,
    t_max: f64,
    series: &[Vec<(f64, f64)>],
    names: &[String],
) {
    let top = TOP + index as f64 * (PANEL_H + GAP);
    let plot_w = W - LEFT - RIGHT;
    let y_max = nice_max(
        series
            .iter()
            .flatten()
            .map(|&(_, v)| v)
            .filter(|v| v.is_finite())
            .fold(0.0, f64::max),
    );
    let x = |t: f64| LEFT + t / t_max * plot_w;
    let y = |v: f64| top + PANEL_H - v / y_max * PANEL_H;
    let _ = writeln!(
        out,
        r##"<rect x="{LEFT}" y="{top}" width="{plot_w}" height="{PANEL_H}" fill="none" stroke="#999"/>"##
    );
    let _ = writeln!(
        out,
        r#"<text x="{LEFT}" y="{}">{}</text>"#,
        top - 6.0,
        escape(label)
    );
    for k in 0..=4 {
        let v = y_max * f64::from(k) / 4.0;
        let _ = writeln!(
            out,
            r##"<line x1="{LEFT}" x2="{}" y1="{y0:.1}" y2="{y0:.1}" stroke="#eee"/><text x="{}" y="{:.1}" text-anchor="end">{}</text>"##,
            LEFT + plot_w,
            LEFT - 6.0,
            y(v) + 4.0,
            fmt_num(v),
            y0 = y(v),
        );
    }
    for k in 0..=6 {
        let t = t_max * f64::from(k) / 6.0;
        let _ = writeln!(
            out,
            r#"<text x="{:.1}" y="{:.1}" text-anchor="middle">{}</text>"#,
            x(t),
            top + PANEL_H + 15.0,
            fmt_time(t)
        );
    }
    for (i, points) in series.iter().enumerate() {
        let color = COLORS[i % COLORS.len()];
        let path: Vec<String> = points
            .iter()
            .filter(|(_, v)| v.is_finite())
            .map(|&(t, v)| format!("{:.1},{:.1}", x(t), y(v)))
            .collect();
        if !path.is_empty() {
            let _ = writeln!(
                out,
                r#"<polyline fill="none" stroke="{color}" stroke-width="1.5" points="{}"/>"#,
                path.join(" ")
            );
        }
        if series.len() > 1 {
            let _ = writeln!(
                out,
                r#"<text x="{:.1}" y="{:.1}" fill="{color}" text-anchor="end">{}</text>"#,
                LEFT + plot_w - 6.0,
                top + 16.0 + 14.0 * i as f64,
                escape(&names[i])
            );
        }
    }
}

/// 1, 2 or 5 times a power of ten, at least `v` (and above zero).
fn nice_max(v: f64) -> f64 {
    if v <= 0.0 || !v.is_finite() {
        return 1.0;
    }
    let p = 10f64.powf(v.log10().floor());
    [1.0, 2.0, 5.0, 10.0]
        .into_iter()
        .map(|m| m * p)
        .find(|&c| c >= v)
        .unwrap_or(10.0 * p)
}

fn fmt_num(v: f64) -> String {
    if v >= 10.0 || v == 0.0 {
        format!("{v:.0}")
    } else {
        format!("{v:.2}")
    }
}

fn fmt_time(t: f64) -> String {
    if t >= 120.0 {
        format!("{:.0} min", t / 60.0)
    } else {
        format!("{t:.0} s")
    }
}

fn escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
