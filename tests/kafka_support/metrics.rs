//! A Prometheus scrape read: one series' value, a family's samples with
//! their labels, sums over labels, and the partitions and tasks the
//! per-partition gauges show.

use std::collections::BTreeMap;

/// The value of `series` (exact text before the value) in a Prometheus
/// exposition; 0 when absent.
pub fn metric_value(text: &str, series: &str) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| {
            let (name, v) = l.rsplit_once(' ')?;
            (name == series).then(|| v.parse().ok()).flatten()
        })
        .unwrap_or(0.0)
}

/// Every sample of one metric family in a Prometheus exposition, as
/// (labels, value); the labels in any order.
pub fn metric_samples(text: &str, name: &str) -> Vec<(BTreeMap<String, String>, f64)> {
    let mut out = Vec::new();
    for line in text.lines() {
        if line.starts_with('#') {
            continue;
        }
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let (labels, value) = if let Some(r) = rest.strip_prefix('{') {
            let Some(end) = r.rfind('}') else { continue };
            (&r[..end], &r[end + 1..])
        } else if rest.starts_with(' ') {
            ("", rest)
        } else {
            continue; // another family whose name starts with `name`
        };
        let Some(value) = value
            .split_whitespace()
            .next()
            .and_then(|v| v.parse::<f64>().ok())
        else {
            continue;
        };
        out.push((parse_labels(labels), value));
    }
    out
}

fn parse_labels(text: &str) -> BTreeMap<String, String> {
    let mut labels = BTreeMap::new();
    let mut chars = text.chars().peekable();
    loop {
        while matches!(chars.peek(), Some(',') | Some(' ')) {
            chars.next();
        }
        let mut key = String::new();
        while let Some(&c) = chars.peek() {
            if c == '=' {
                break;
            }
            key.push(c);
            chars.next();
        }
        if key.is_empty() || chars.next() != Some('=') || chars.next() != Some('"') {
            break;
        }
        let mut value = String::new();
        while let Some(c) = chars.next() {
            match c {
                '\\' => match chars.next() {
                    Some('n') => value.push('\n'),
                    Some(x) => value.push(x),
                    None => break,
                },
                '"' => break,
                c => value.push(c),
            }
        }
        labels.insert(key.trim().to_string(), value);
    }
    labels
}

/// The sum of the samples of `name` whose labels include every `(k, v)`
/// of `labels` (0 when there is none).
pub fn metric_sum(text: &str, name: &str, labels: &[(&str, &str)]) -> f64 {
    metric_samples(text, name)
        .iter()
        .filter(|(l, _)| {
            labels
                .iter()
                .all(|(k, v)| l.get(*k).map(String::as_str) == Some(*v))
        })
        .map(|(_, v)| v)
        .sum()
}

/// The input partitions a `{topic, partition}` metric family shows, as
/// partition → topics, counting only the topics in `topics`.
pub fn held_partitions(
    text: &str,
    family: &str,
    topics: &[String],
) -> BTreeMap<i32, std::collections::BTreeSet<String>> {
    let mut held: BTreeMap<i32, std::collections::BTreeSet<String>> = BTreeMap::new();
    for (labels, _) in metric_samples(text, family) {
        let (Some(t), Some(p)) = (labels.get("topic"), labels.get("partition")) else {
            continue;
        };
        if !topics.contains(t) {
            continue;
        }
        let p = p
            .parse::<i32>()
            .unwrap_or_else(|e| panic!("{family}: partition label {p:?}: {e}"));
        held.entry(p).or_default().insert(t.clone());
    }
    held
}

/// The tasks `touchstream_task_watermark_seconds{task}` shows.
pub fn held_tasks(text: &str) -> std::collections::BTreeSet<i32> {
    metric_samples(text, "touchstream_task_watermark_seconds")
        .iter()
        .filter_map(|(l, _)| l.get("task"))
        .map(|t| {
            t.parse::<i32>()
                .unwrap_or_else(|e| panic!("task label {t:?}: {e}"))
        })
        .collect()
}
