//! What a job waits for, in words: the reasons behind a [`Waiting`] and
//! what would unblock each.

use idlegrid_market::Waiting;

/// Says what holds a job up and what would move it, `None` when nothing
/// does: `fuel` is the job's task fuel limit, `referee_fuel` the most this
/// requestor re-executes itself, `in_flight` the tasks providers hold.
pub(crate) fn explain(
    waiting: &Waiting,
    fuel: u64,
    referee_fuel: u64,
    in_flight: u64,
) -> Option<String> {
    let mut reasons = Vec::new();
    if waiting.providers_ready == 0 && (waiting.pending > 0 || waiting.second_opinion > 0) {
        reasons.push(
            "no provider can take work: none connected has stake and a live offer \
             (one starts with `idlegrid provide --stake N`)"
                .to_owned(),
        );
    } else if waiting.second_opinion > 0 {
        let mut unblock = vec![
            "another staked provider".to_owned(),
            "a provider whose record on the ledger earns trust".to_owned(),
        ];
        if fuel > referee_fuel {
            unblock.push(format!(
                "re-executing them here (--referee-fuel {fuel}, now {})",
                referee_fuel
            ));
        }
        unblock.push("`policy = \"replicas\"` with `replicas = 1` in the job file".to_owned());
        reasons.push(format!(
            "{} {} for a second opinion that none of the {} connected providers can \
             give; {} would settle them",
            waiting.second_opinion,
            tasks_word(waiting.second_opinion, "waits", "wait"),
            waiting.providers_ready,
            or_list(&unblock)
        ));
    }
    if waiting.refereeing > 0 && in_flight == 0 {
        reasons.push(format!(
            "{} {} for a re-execution's verdict (here, or the ledger's through a dispute)",
            waiting.refereeing,
            tasks_word(waiting.refereeing, "waits", "wait")
        ));
    }
    (!reasons.is_empty()).then(|| reasons.join("; "))
}

/// "1 task waits", "3 tasks wait".
fn tasks_word(count: u64, one: &str, many: &str) -> String {
    if count == 1 {
        format!("task {one}")
    } else {
        format!("tasks {many}")
    }
}

/// "a, b or c".
fn or_list(items: &[String]) -> String {
    match items.split_last() {
        None => String::new(),
        Some((last, [])) => last.clone(),
        Some((last, rest)) => format!("{} or {last}", rest.join(", ")),
    }
}
