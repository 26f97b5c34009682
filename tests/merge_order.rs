//! The merge of a task's inputs (SPEC 8) as a property: however a backlog's
//! records arrive (random bursts per input, as fetches return them), the
//! records come out in one order with the same task watermarks; and with
//! inputs in event-time order, that order is one input holding all records
//! merged by event time (ties: the input listed first), up to the moment
//! the first input runs out.

use proptest::prelude::*;
use touchstream::time::merge::{Merge, Next};

const OOO: i64 = 5;

/// What the task processes: (input, index in it, event time, watermark).
type Out = Vec<(usize, usize, i64, Option<i64>)>;

/// Runs the merge the way a Kafka task does: an input's next record is
/// handed over when it has been fetched; an input is caught up only once
/// every record of it was fetched (a backlog). `bursts` says, step by step,
/// which input's fetch returns how many more records.
fn run(inputs: &[Vec<i64>], bursts: &[(usize, usize)]) -> Out {
    let n = inputs.len();
    let mut merge: Merge<(usize, i64)> = Merge::new(n, OOO);
    let mut fetched = vec![0usize; n]; // records fetched per input
    let mut handed = vec![0usize; n]; // records handed to the merge
    let mut out = Vec::new();
    let mut pump = |merge: &mut Merge<(usize, i64)>, fetched: &[usize], out: &mut Out| loop {
        for i in 0..n {
            if merge.wants(i) {
                if handed[i] < fetched[i] {
                    let t = inputs[i][handed[i]];
                    merge.push(i, t, (handed[i], t));
                    handed[i] += 1;
                } else if fetched[i] == inputs[i].len() {
                    merge.caught_up(i);
                }
            }
        }
        match merge.pop() {
            Some(Next {
                input,
                item: (k, t),
                to,
            }) => out.push((input, k, t, to)),
            None => return,
        }
    };
    for &(i, k) in bursts {
        let i = i % n;
        fetched[i] = (fetched[i] + k).min(inputs[i].len());
        pump(&mut merge, &fetched, &mut out);
    }
    let all: Vec<usize> = inputs.iter().map(Vec::len).collect();
    pump(&mut merge, &all, &mut out);
    out
}

fn arb_inputs(sorted: bool) -> impl Strategy<Value = Vec<Vec<i64>>> {
    prop::collection::vec(prop::collection::vec(0i64..200, 0..25), 1..4).prop_map(move |mut v| {
        if sorted {
            for input in &mut v {
                input.sort_unstable();
            }
        }
        v
    })
}

fn arb_bursts() -> impl Strategy<Value = Vec<(usize, usize)>> {
    prop::collection::vec((0usize..4, 0usize..6), 0..60)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(400))]

    #[test]
    fn a_backlog_comes_out_in_one_order_whatever_the_fetch_timing(
        inputs in arb_inputs(false),
        a in arb_bursts(),
        b in arb_bursts(),
    ) {
        let everything_at_once = run(&inputs, &[]);
        let total: usize = inputs.iter().map(Vec::len).sum();
        prop_assert_eq!(everything_at_once.len(), total, "every record comes out once");
        prop_assert_eq!(&run(&inputs, &a), &everything_at_once);
        prop_assert_eq!(&run(&inputs, &b), &everything_at_once);
    }

    #[test]
    fn ordered_inputs_equal_one_merged_input_until_the_first_runs_out(
        inputs in arb_inputs(true),
        bursts in arb_bursts(),
    ) {
        let out = run(&inputs, &bursts);
        // One input holding every record merged by event time, ties to the
        // input listed first, then by position.
        let mut merged: Vec<(i64, usize, usize)> = inputs
            .iter()
            .enumerate()
            .flat_map(|(i, v)| v.iter().enumerate().map(move |(k, &t)| (t, i, k)))
            .collect();
        merged.sort_unstable();
        let order: Vec<(usize, usize)> = out.iter().map(|o| (o.0, o.1)).collect();
        let want: Vec<(usize, usize)> = merged.iter().map(|&(_, i, k)| (i, k)).collect();
        prop_assert_eq!(order, want, "the order of one merged input");
        // Until the first input runs out, with every input holding records,
        // the task's watermark is the single input's: its latest event time
        // − OOO. (An input with no record holds it where it is.)
        if inputs.iter().any(Vec::is_empty) {
            return Ok(());
        }
        let cut = inputs
            .iter()
            .enumerate()
            .filter_map(|(i, v)| merged.iter().position(|&(_, j, k)| j == i && k + 1 == v.len()))
            .min()
            .unwrap_or(0);
        let mut max_t = i64::MIN;
        for (pos, &(t, _, _)) in merged.iter().enumerate().take(cut + 1) {
            max_t = max_t.max(t);
            prop_assert_eq!(out[pos].3, Some(max_t - OOO), "watermark at record {}", pos);
        }
    }
}

#[test]
fn an_input_that_may_still_have_records_is_waited_for_and_an_idle_one_is_not() {
    let mut m: Merge<&str> = Merge::new(2, 0);
    m.push(0, 100, "late-web");
    assert!(m.pop().is_none(), "input 1 has not shown its first record");
    assert!(m.set_idle(1, true));
    let n = m.pop().expect("an idle input is not waited for");
    assert_eq!((n.item, n.to), ("late-web", Some(100)));
    m.push(1, 50, "store");
    m.push(0, 120, "web");
    let n = m.pop().expect("both have a record");
    assert_eq!(
        n.item, "store",
        "the idle input rejoined with its next record"
    );
    assert_eq!(n.to, Some(50), "its record counts in the task's watermark");
}
