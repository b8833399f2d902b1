//! Hand-written SVG bar charts for the report: one chart per case, a bar
//! per target (the median) with a whisker for the min–max over rounds.
//! Pure: values in, a string out. Missing, zero and non-finite values are
//! drawn as an empty slot labelled "–" or "0", never as a broken document.

/// One bar: a target's median and its spread over rounds.
#[derive(Debug, Clone, PartialEq)]
pub struct Bar {
    pub label: String,
    pub value: Option<f64>,
    pub min: Option<f64>,
    pub max: Option<f64>,
}

const WIDTH: f64 = 560.0;
const BAR_HEIGHT: f64 = 28.0;
const GAP: f64 = 12.0;
const LEFT: f64 = 110.0;
const RIGHT: f64 = 110.0;
const TOP: f64 = 44.0;
const COLORS: [&str; 5] = ["#2f6fb0", "#b0562f", "#5a8f3c", "#8a5ab0", "#777777"];

fn finite(x: Option<f64>) -> Option<f64> {
    x.filter(|v| v.is_finite() && *v >= 0.0)
}

/// Escapes text for XML content and attribute values.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c if (c as u32) < 0x20 && c != '\t' && c != '\n' => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

/// A number with about three significant digits and thin-space thousands.
pub fn short_number(x: f64) -> String {
    if x == 0.0 {
        return "0".into();
    }
    let text = if x >= 100.0 {
        format!("{x:.0}")
    } else if x >= 10.0 {
        format!("{x:.1}")
    } else if x >= 1.0 {
        format!("{x:.2}")
    } else {
        format!("{x:.3}")
    };
    // Group the integer part in threes.
    let (int, frac) = text
        .split_once('.')
        .map_or((text.as_str(), None), |(i, f)| (i, Some(f)));
    let mut grouped = String::new();
    for (i, c) in int.chars().enumerate() {
        if i > 0 && (int.len() - i) % 3 == 0 {
            grouped.push('\u{2009}');
        }
        grouped.push(c);
    }
    match frac {
        Some(f) => format!("{grouped}.{f}"),
        None => grouped,
    }
}

/// A horizontal bar chart: `title` on top, one bar per entry, scaled to
/// the largest value or whisker, `unit` after each value.
pub fn bar_chart(title: &str, unit: &str, bars: &[Bar]) -> String {
    let scale_max = bars
        .iter()
        .flat_map(|b| [finite(b.value), finite(b.max)])
        .flatten()
        .fold(0.0f64, f64::max);
    let plot = WIDTH - LEFT - RIGHT;
    let x_of = |v: f64| {
        if scale_max > 0.0 {
            LEFT + plot * (v / scale_max).clamp(0.0, 1.0)
        } else {
            LEFT
        }
    };
    let n = bars.len().max(1) as f64;
    let height = TOP + n * (BAR_HEIGHT + GAP) + 8.0;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{WIDTH}\" height=\"{height}\" viewBox=\"0 0 {WIDTH} {height}\" font-family=\"sans-serif\" font-size=\"13\">\n"
    );
    s.push_str(&format!(
        "<title>{}</title>\n<rect x=\"0\" y=\"0\" width=\"{WIDTH}\" height=\"{height}\" fill=\"#ffffff\"/>\n",
        escape(title)
    ));
    s.push_str(&format!(
        "<text x=\"8\" y=\"20\" font-size=\"15\" font-weight=\"bold\">{}</text>\n<text x=\"8\" y=\"36\" fill=\"#555555\" font-size=\"11\">median over rounds, whisker: min–max ({})</text>\n",
        escape(title),
        escape(unit)
    ));
    s.push_str(&format!(
        "<line x1=\"{LEFT}\" y1=\"{TOP}\" x2=\"{LEFT}\" y2=\"{:.1}\" stroke=\"#333333\"/>\n",
        height - 8.0
    ));
    if bars.is_empty() {
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" fill=\"#555555\">no data</text>\n",
            LEFT + 8.0,
            TOP + BAR_HEIGHT * 0.7
        ));
    }
    for (i, bar) in bars.iter().enumerate() {
        let y = TOP + i as f64 * (BAR_HEIGHT + GAP);
        let mid = y + BAR_HEIGHT / 2.0;
        let color = COLORS[i % COLORS.len()];
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}</text>\n",
            LEFT - 8.0,
            mid + 4.5,
            escape(&bar.label)
        ));
        let value = finite(bar.value);
        let end = match value {
            Some(v) => {
                let x1 = x_of(v);
                s.push_str(&format!(
                    "<rect x=\"{LEFT}\" y=\"{y:.1}\" width=\"{:.1}\" height=\"{BAR_HEIGHT}\" fill=\"{color}\"><title>{}: {} {}</title></rect>\n",
                    (x1 - LEFT).max(0.0),
                    escape(&bar.label),
                    short_number(v),
                    escape(unit)
                ));
                x1
            }
            None => LEFT,
        };
        let mut text_x = end;
        if let (Some(lo), Some(hi)) = (finite(bar.min), finite(bar.max)) {
            let (lo, hi) = (lo.min(hi), lo.max(hi));
            let (xl, xh) = (x_of(lo), x_of(hi));
            s.push_str(&format!(
                "<path d=\"M{xl:.1} {mid:.1}H{xh:.1}M{xl:.1} {:.1}V{:.1}M{xh:.1} {:.1}V{:.1}\" stroke=\"#222222\" stroke-width=\"1.5\" fill=\"none\"/>\n",
                mid - 6.0,
                mid + 6.0,
                mid - 6.0,
                mid + 6.0
            ));
            text_x = text_x.max(xh);
        }
        let label = value.map_or("–".to_string(), short_number);
        s.push_str(&format!(
            "<text x=\"{:.1}\" y=\"{:.1}\">{}</text>\n",
            text_x + 6.0,
            mid + 4.5,
            escape(&label)
        ));
    }
    s.push_str("</svg>\n");
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal well-formedness check: tags balance, attributes are
    /// quoted, no raw `&` or `<` in text.
    fn assert_well_formed(svg: &str) {
        assert!(
            svg.starts_with("<svg xmlns=\"http://www.w3.org/2000/svg\""),
            "{svg}"
        );
        assert!(!svg.contains("NaN") && !svg.contains("inf"), "{svg}");
        let mut stack: Vec<String> = Vec::new();
        let mut rest = svg;
        while let Some(open) = rest.find('<') {
            let text = &rest[..open];
            assert!(!text.contains('>'), "stray > in {text:?}");
            for (i, _) in text.match_indices('&') {
                let ent = &text[i..];
                assert!(
                    ["&amp;", "&lt;", "&gt;", "&quot;", "&apos;"]
                        .iter()
                        .any(|e| ent.starts_with(e)),
                    "raw & in {text:?}"
                );
            }
            let close = rest[open..].find('>').expect("unclosed tag") + open;
            let tag = &rest[open + 1..close];
            assert!(!tag.contains('<'), "< inside tag {tag:?}");
            assert_eq!(
                tag.matches('"').count() % 2,
                0,
                "unbalanced quotes in {tag:?}"
            );
            if let Some(name) = tag.strip_prefix('/') {
                assert_eq!(stack.pop().as_deref(), Some(name), "mismatched </{name}>");
            } else if !tag.ends_with('/') {
                let name = tag.split_whitespace().next().expect("tag name");
                stack.push(name.to_string());
            }
            rest = &rest[close + 1..];
        }
        assert!(stack.is_empty(), "unclosed {stack:?}");
        assert!(rest.trim().is_empty());
    }

    fn bar(label: &str, v: Option<f64>, lo: Option<f64>, hi: Option<f64>) -> Bar {
        Bar {
            label: label.into(),
            value: v,
            min: lo,
            max: hi,
        }
    }

    #[test]
    fn ordinary_chart() {
        let svg = bar_chart(
            "manifest GET <64 conns> & more",
            "ops/s",
            &[
                bar("berth", Some(47084.0), Some(39131.0), Some(47296.0)),
                bar("reference", Some(502.0), Some(361.0), Some(563.0)),
                bar("nginx", Some(33804.0), Some(28336.0), Some(36148.0)),
            ],
        );
        assert_well_formed(&svg);
        assert!(svg.contains("47\u{2009}084"));
        assert!(svg.contains("&lt;64 conns&gt; &amp; more"));
        // The largest whisker spans the plot: berth's max is at the right edge.
        assert!(svg.contains(&format!("H{:.1}", WIDTH - RIGHT)), "{svg}");
    }

    #[test]
    fn zero_missing_and_odd_values() {
        for bars in [
            vec![],
            vec![bar("berth", None, None, None)],
            vec![bar("berth", Some(0.0), Some(0.0), Some(0.0))],
            vec![
                bar("berth", Some(f64::NAN), Some(f64::INFINITY), None),
                bar("reference", Some(-3.0), None, Some(5.0)),
                bar("x\"<&>", Some(1e-9), Some(2.0), Some(1.0)),
            ],
        ] {
            let svg = bar_chart("t", "MB/s", &bars);
            assert_well_formed(&svg);
        }
        let svg = bar_chart("t", "ops/s", &[bar("berth", None, None, None)]);
        assert!(svg.contains(">–</text>"));
        let svg = bar_chart("t", "ops/s", &[bar("berth", Some(0.0), None, None)]);
        assert!(svg.contains(">0</text>"));
    }

    #[test]
    fn numbers() {
        assert_eq!(short_number(0.0), "0");
        assert_eq!(short_number(0.1234), "0.123");
        assert_eq!(short_number(12.34), "12.3");
        assert_eq!(short_number(1234567.0), "1\u{2009}234\u{2009}567");
        assert_eq!(short_number(999.6), "1\u{2009}000");
    }
}
